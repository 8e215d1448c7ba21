"""onnx_runtime: the one way clearclass writes ONNX, starts ONNX Runtime and compares outputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from clearclass import onnx_runtime
from clearclass.onnx_runtime import EXPORT_TOLERANCE, export_module, outputs_match, session


def test_outputs_match_within_the_tolerance_of_the_largest_value():
    expected = np.array([[10.0, -2.0, 0.5]], dtype=np.float32)
    assert outputs_match(expected + 0.9 * EXPORT_TOLERANCE * 10, expected)
    assert not outputs_match(expected + 1.1 * EXPORT_TOLERANCE * 10, expected)
    assert not outputs_match(expected[:, :2], expected), "another shape"
    assert not outputs_match(np.full_like(expected, np.nan), expected)
    assert outputs_match(np.zeros((0, 3)), np.zeros((0, 3)))
    tensor = torch.from_numpy(expected)  # tensors too, as model.fold_batchnorm compares them
    assert outputs_match(tensor + 1e-4, tensor) and not outputs_match(tensor + 1, tensor)


def test_a_module_written_to_memory_runs_in_a_session_with_the_options_asked_for():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    buffer = io.BytesIO()
    export_module(module, x, buffer, fallback=False)
    runner = session(buffer.getvalue(), 2, inter_op_threads=1, spinning=False, log_level=3)
    options = runner.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.log_severity_level == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    got = runner.run(None, {"image": x[:1].numpy()})[0]  # any batch size
    with torch.no_grad():
        assert outputs_match(got, module(x[:1]).numpy())


def test_a_file_session_takes_onnx_runtimes_defaults(tmp_path):
    module = torch.nn.Flatten().eval()
    export_module(module, torch.zeros(1, 3, 2, 2), tmp_path / "m.onnx")
    options = session(tmp_path / "m.onnx").get_session_options()
    assert options.intra_op_num_threads == 0 and options.inter_op_num_threads == 0
    with pytest.raises(ValueError, match="optimization must be one of"):
        session(tmp_path / "m.onnx", optimization="most")


def test_the_export_command_module_keeps_its_names():
    from clearclass import export

    assert export.export_module is onnx_runtime.export_module
    assert export.check_onnx is onnx_runtime.check_onnx


def test_a_module_with_several_outputs_names_each_and_takes_any_batch(tmp_path):
    class Two(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.amax((2, 3))

    export_module(Two().eval(), torch.zeros(2, 3, 4, 4), tmp_path / "two.onnx",
                  outputs=("mean", "max"))
    assert onnx_runtime.output_names(tmp_path / "two.onnx") == ["mean", "max"]
    x = torch.randn(5, 3, 4, 4)
    mean, largest = session(tmp_path / "two.onnx").run(None, {"image": x.numpy()})
    assert outputs_match(mean, x.mean((2, 3)).numpy())
    assert outputs_match(largest, x.amax((2, 3)).numpy())


def _info(task: str, thresholds=None, class_ids=("blue", "green", "red")):
    from clearclass.bundle import ModelInfo

    return ModelInfo(architecture="test_resnet", class_ids=list(class_ids),
                     class_names=list(class_ids), item_resize=4, resize_method="crop",
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), task=task,
                     thresholds=thresholds)


def test_the_metadata_says_the_task_classes_and_thresholds_and_reads_back(tmp_path):
    """What model.onnx says of itself, read with ONNX Runtime alone as a user of the file
    does (`custom_metadata_map`), and by read_metadata; the file's other metadata kept."""
    import json

    import onnx

    path = tmp_path / "m.onnx"
    export_module(torch.nn.Flatten().eval(), torch.zeros(1, 3, 2, 2), path)
    assert onnx_runtime.read_metadata(path) is None  # exported before: no task
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"author": "me", "thresholds": "stale"})
    onnx.save(model, str(path))
    ids = ["blue", "gr\udce9en", "<b>red</b>"]  # a name that is not UTF-8, one of markup
    onnx_runtime.write_metadata(path, _info("multi", [0.25, 0.5, 1.0], ids))
    values = session(path).get_modelmeta().custom_metadata_map
    assert values["task"] == "multi" and values["author"] == "me"
    assert json.loads(values["class_ids"]) == ids
    assert json.loads(values["thresholds"]) == [0.25, 0.5, 1.0]
    assert onnx_runtime.read_metadata(path) == onnx_runtime.OnnxMetadata(
        "multi", ids, [0.25, 0.5, 1.0])
    # A single-label model has no thresholds: the multi-label ones written before go.
    onnx_runtime.write_metadata(path, _info("single"))
    values = session(path).get_modelmeta().custom_metadata_map
    assert "thresholds" not in values and values["task"] == "single"
    assert onnx_runtime.read_metadata(path) == onnx_runtime.OnnxMetadata(
        "single", ["blue", "green", "red"], None)
