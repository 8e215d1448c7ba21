"""The model.json reader fed arbitrary bytes and arbitrary JSON (Hypothesis).

Whatever model.json holds, `read_info` returns a ModelInfo that prediction can use, or raises
ModelFileError naming the file; never another exception (KeyError, TypeError, IndexError,
AttributeError, UnicodeDecodeError...), which the command line would show as a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearclass.bundle import ModelInfo, read_info
from clearclass.data.decode import RESIZE_METHODS
from clearclass.errors import ModelFileError

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=20,
)


def valid_model_json() -> dict:
    info = ModelInfo("test_resnet", ["a", "b"], ["Alpha", "Beta"], 32, "crop",
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), training={"epochs_done": 2})
    data = info.to_json("0" * 64, {"timm": "1", "torch": "2"})
    data["onnx"] = {"file": "model.onnx", "sha256": "f" * 64}
    return data


def _paths(value, prefix=()):
    """Every path (a tuple of keys and indexes) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*prefix, index))


VALID_PATHS = list(_paths(valid_model_json()))[1:]


def read(folder: Path, content: bytes) -> ModelInfo | None:
    """read_info on `content`: the ModelInfo, or None after a ModelFileError naming the file."""
    (folder / "model.json").write_bytes(content)
    try:
        info = read_info(folder)
    except ModelFileError as e:
        assert str(folder / "model.json") in str(e)
        assert "\n" not in str(e)
        return None
    # What was accepted is what prediction needs.
    assert len(info.class_ids) == len(info.class_names) == len(set(info.class_ids)) >= 1
    assert all(isinstance(i, str) and i for i in info.class_ids)
    assert isinstance(info.item_resize, int) and info.item_resize >= 1
    assert info.resize_method in RESIZE_METHODS
    assert len(info.mean) == len(info.std) == 3
    assert all(math.isfinite(v) for v in info.mean) and all(v > 0 for v in info.std)
    return info


def test_the_valid_description_is_read(tmp_path):
    info = read(tmp_path, json.dumps(valid_model_json()).encode())
    assert info is not None and info.class_names == ["Alpha", "Beta"]
    assert info.checksums == {"model.safetensors": "0" * 64, "model.onnx": "f" * 64}


@SETTINGS
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes(tmp_path, content):
    read(tmp_path, content)


@pytest.mark.slow  # hundreds of generated examples
@SETTINGS
@given(value=JSON)
def test_arbitrary_json(tmp_path, value):
    assert read(tmp_path, json.dumps(value).encode()) is None


@SETTINGS
@given(path=st.sampled_from(VALID_PATHS), value=JSON | st.just(KeyError))
def test_a_valid_description_with_one_value_replaced_or_removed(tmp_path, path, value):
    data = valid_model_json()
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if value is KeyError:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    read(tmp_path, json.dumps(data).encode())


@pytest.mark.parametrize("text", ["[]", "null", "3", '"model"', "{}", "[{}]", "{" * 100_000,
                                  '{"format": "clearclass-model", "format_version": 1e999}',
                                  "\ufeff" + json.dumps(valid_model_json())])
def test_odd_json_texts(tmp_path, text):
    read(tmp_path, text.encode("utf-8"))
