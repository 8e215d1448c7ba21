"""clearclass: turn folders of photos into an image classifier you understand and can ship.

    import clearclass
    run = clearclass.train("photos/", model="efficientnet_lite0", epochs=3)
    report = run.evaluate()
    cleaning = clearclass.clean(run.run_dir)    # likely mislabelled, duplicated, unreadable
    clearclass.runs("runs")                     # every run so far, newest first
    clearclass.load(run.model_dir).predict("new_photo.jpg")
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import TYPE_CHECKING

# Operators MPS lacks must fall back to the CPU; PyTorch reads this once, at import.
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


@functools.cache
def _installed_version() -> str:
    """pyproject.toml is the one place the version is written; the installed package's
    metadata carries it here (and to model.json, `clearclass --version`, the downloader's
    User-Agent). Read when first asked for: finding it takes 0.1 s, which every command's
    start would otherwise pay."""
    import importlib.metadata

    try:
        return importlib.metadata.version("clearclass")
    except importlib.metadata.PackageNotFoundError:
        # Imported from a source tree that was never installed (PYTHONPATH=src): there is
        # no metadata, and pyproject.toml is not shipped with the package to read instead.
        # A local version (PEP 440) says so, and still parses and sorts as a version.
        return "0+unknown"

# Imported on first use, so that `clearclass --help` does not wait for torch.
_PUBLIC = {
    "ClearclassError": "clearclass.errors",
    "Classifier": "clearclass.predict",
    "Prediction": "clearclass.predict",
    "load": "clearclass.predict",
    "TrainConfig": "clearclass.training",
    "TrainingRun": "clearclass.training",
    "train": "clearclass.training",
    "resume": "clearclass.training",
    "lr_find": "clearclass.training",
    "Evaluation": "clearclass.evaluation",
    "MultiLabelEvaluation": "clearclass.evaluation",
    "evaluate": "clearclass.evaluation",
    "Advice": "clearclass.advice",
    "advise": "clearclass.advice",
    "Cleaning": "clearclass.cleaning",
    "clean": "clearclass.cleaning",
    "Exploration": "clearclass.exploration",
    "explore": "clearclass.exploration",
    "push": "clearclass.hub",
    "show_batch": "clearclass.exploration",
    "Runs": "clearclass.runs_table",
    "runs": "clearclass.runs_table",
    "SAMPLE_PHOTOS": "clearclass.demo",
}

__all__ = [
    "SAMPLE_PHOTOS",
    "Advice",
    "Classifier",
    "Cleaning",
    "ClearclassError",
    "Evaluation",
    "Exploration",
    "MultiLabelEvaluation",
    "Prediction",
    "Runs",
    "TrainConfig",
    "TrainingRun",
    "advise",
    "clean",
    "evaluate",
    "explore",
    "load",
    "lr_find",
    "push",
    "resume",
    "runs",
    "show_batch",
    "train",
    "__version__",
]

if TYPE_CHECKING:
    from clearclass.advice import Advice, advise
    from clearclass.cleaning import Cleaning, clean
    from clearclass.demo import SAMPLE_PHOTOS
    from clearclass.errors import ClearclassError
    from clearclass.evaluation import Evaluation, MultiLabelEvaluation, evaluate
    from clearclass.exploration import Exploration, explore, show_batch
    from clearclass.hub import push
    from clearclass.predict import Classifier, Prediction, load
    from clearclass.runs_table import Runs, runs
    from clearclass.training import TrainConfig, TrainingRun, lr_find, resume, train


def __getattr__(name: str):
    if name == "__version__":
        return _installed_version()
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        return getattr(module, name)
    raise AttributeError(f"module 'clearclass' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
