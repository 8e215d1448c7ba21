"""The exceptions clearclass raises on bad input.

The library raises; the CLI catches `ClearclassError`, prints its message as one line and
exits 1. Every message says what happened, what was expected and what to do next.
"""

from __future__ import annotations


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


class AcquireError(ClearclassError):
    """Photos or a dataset could not be fetched, or what arrived is not what was expected."""


class CredentialsError(AcquireError):
    """An API key or Kaggle credentials are missing or were refused."""
