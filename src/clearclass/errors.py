"""The exceptions clearclass raises on bad input.

The library raises; the CLI catches `ClearclassError`, prints its message as one line and
exits 1. Every message says what happened, what was expected and what to do next.
"""

from __future__ import annotations


class ClearclassError(Exception):
    """Base class of every error clearclass reports to the user."""


class DataError(ClearclassError, ValueError):
    """The photos or their labels cannot be used as given."""


class WeightsError(ClearclassError):
    """Pretrained weights could not be found or do not fit the model."""


class ModelFileError(ClearclassError, ValueError):
    """A model bundle is missing, incomplete, or of a kind clearclass refuses to load."""


class RunError(ClearclassError):
    """A run folder is missing what a command needs, or would be overwritten."""


class AcquireError(ClearclassError):
    """Photos or a dataset could not be fetched, or what arrived is not what was expected."""


class CredentialsError(AcquireError):
    """An API key or Kaggle credentials are missing or were refused."""
