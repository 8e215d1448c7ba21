"""Fine-tuning: the loop (`loop.py`), its settings (`config.py`) and the LR finder."""

from clearclass.training.config import TrainConfig
from clearclass.training.loop import TrainingRun, train
from clearclass.training.lr_find import lr_find

__all__ = ["TrainConfig", "TrainingRun", "lr_find", "train"]
