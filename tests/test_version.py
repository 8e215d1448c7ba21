"""The version is written once, in pyproject.toml; everything else reads it from there."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import clearclass

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def test_the_version_is_the_installed_metadata_and_pyproject_toml():
    assert clearclass.__version__ == importlib.metadata.version("clearclass")
    # tomllib is Python 3.11's; the [project] table's version line is the one at the start.
    written = re.search(r'^version = "([^"]+)"$', PYPROJECT.read_text(encoding="utf-8"), re.M)
    assert written and clearclass.__version__ == written.group(1)


def test_model_json_records_the_version():
    from clearclass.bundle import ModelInfo

    info = ModelInfo(architecture="test_resnet", class_ids=["a", "b"], class_names=["a", "b"],
                     item_resize=32, resize_method="squish", mean=(0.5,) * 3, std=(0.5,) * 3)
    data = info.to_json("0" * 64, {"torch": "2"})
    assert data["versions"] == {"clearclass": clearclass.__version__, "torch": "2"}
