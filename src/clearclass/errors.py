"""The exceptions clearclass raises on bad input.

The library raises; the CLI catches `ClearclassError`, prints its message as one line and
exits 1. Every message says what happened, what was expected and what to do next.
"""

from __future__ import annotations

import numbers
import os


class ClearclassError(Exception):
    """Base class of every error clearclass reports to the user."""


class SettingError(ClearclassError, ValueError):
    """A setting (a keyword of the API, an option of the command line) has a bad value.

    The message names the setting as Python spells it (`item_resize`); the command line
    shows it as the user typed it (`--item-resize`). A setting read from the environment
    is named as the variable (`CLEARCLASS_START_METHOD`).
    """

    def __init__(self, setting: str, problem: str):
        self.setting, self.problem = setting, problem
        super().__init__(f"{setting} {problem}")

    def as_option(self) -> str:
        """The message with the setting written as a command-line option (an environment
        variable, such as CLEARCLASS_START_METHOD, keeps its name)."""
        if self.setting.isupper():
            return str(self)
        return f"--{self.setting.replace('_', '-')} {self.problem}"


class DataError(ClearclassError, ValueError):
    """The photos or their labels cannot be used as given."""


class WeightsError(ClearclassError):
    """Pretrained weights could not be found or do not fit the model."""


class ModelFileError(ClearclassError, ValueError):
    """A model bundle is missing, incomplete, or of a kind clearclass refuses to load."""


class RunError(ClearclassError):
    """A run folder is missing what a command needs, or would be overwritten."""

    @classmethod
    def edited(cls, path: object, record: object, run_dir: object) -> RunError:
        """A file of the run that differs from the checksum `record` keeps of it."""
        return cls(f"{path} was changed after training: its checksum differs from the one "
                   f"{record} records. A run keeps the settings, photos and labels it was "
                   "trained with: put back the file training wrote, or train the run again "
                   f"(clearclass train DATA --out {run_dir} --overwrite). To train with other "
                   "settings or labels, start a new run.")


class HubError(ClearclassError):
    """The Hugging Face Hub refused or could not be reached, or a model is not in its cache."""


class AcquireError(ClearclassError):
    """Photos or a dataset could not be fetched, or what arrived is not what was expected."""


class CredentialsError(AcquireError):
    """An API key or Kaggle credentials are missing or were refused."""


# --- arguments of the Python API of the wrong kind: one SettingError naming the argument,
# not a TypeError from deep inside (scikit-learn's check_scalar, in two functions) ---------

def described(value: object) -> str:
    """A value as an error message shows it: its repr, cut to 60 characters, and its type."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if isinstance(value, str) else f"{text} ({type(value).__name__})"


def check_count(setting: str, value: object, least: int = 1) -> int:
    """`value` when it is a whole number of at least `least` (not True, "9" or 9.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingError(setting, f"must be a whole number of at least {least}; got "
                                    f"{described(value)}.")
    if value < least:
        raise SettingError(setting, f"must be at least {least}; got {value}.")
    return int(value)


def check_path(setting: str, value: object, what: str = "a path") -> None:
    """SettingError unless `value` is a str or an os.PathLike (pathlib.Path)."""
    if not isinstance(value, (str, os.PathLike)):
        raise SettingError(setting, f"must be {what} (a str or pathlib.Path); got "
                                    f"{described(value)}.")
