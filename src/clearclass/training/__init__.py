"""Fine-tuning: the loop (`loop.py`), its settings (`config.py`) and the learning-rate finder.

The loop and the finder are imported on first use, so that reading the settings (as the
command line does to build its options) does not wait for PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from clearclass.training.config import TrainConfig

__all__ = ["LearningRateSuggestion", "TrainConfig", "TrainingRun", "lr_find", "resume",
           "train"]
_LAZY = {"TrainingRun": "loop", "train": "loop", "resume": "loop",
         "lr_find": "learning_rate_finder",
         "LearningRateSuggestion": "learning_rate_finder"}

if TYPE_CHECKING:
    from clearclass.training.learning_rate_finder import LearningRateSuggestion, lr_find
    from clearclass.training.loop import TrainingRun, resume, train


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"clearclass.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'clearclass.training' has no attribute {name!r}")
