"""The Python API as the README and the docstrings use it: data first, settings by name."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import clearclass
from clearclass import progress
from clearclass.errors import ClearclassError, SettingError
from tests.conftest import COLOURS, make_dataset, make_photo, tiny

# The tiny settings, but for the number of epochs, which the tests choose.
TINY = {k: v for k, v in tiny(learning_rate=2e-2).items() if k != "epochs"}


def test_train_takes_the_data_first_and_settings_by_name(tmp_path):
    data = make_dataset(tmp_path / "photos", per_class=8)
    run = clearclass.train(data, out=tmp_path / "run", epochs=2, **TINY)
    assert run.config.data == str(data) and run.config.epochs == 2
    assert [r.stage for r in run.history] == ["frozen", "unfrozen", "unfrozen"]
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    assert "3 epoch(s)" in repr(run) and "train_loss" in run._repr_html_()


def test_settings_beside_a_config_override_it_instead_of_being_ignored(tmp_path):
    data = make_dataset(tmp_path / "photos", per_class=8)
    config = clearclass.TrainConfig(str(data), out=str(tmp_path / "run"), epochs=1, **TINY)
    run = clearclass.train(config, epochs=2, overwrite=True)
    assert len(run.history) == 3 and config.epochs == 1


def test_a_misspelt_or_mistyped_setting_fails_before_anything_is_written(tmp_path):
    data = make_dataset(tmp_path / "photos", per_class=4)
    with pytest.raises(SettingError, match="Did you mean epochs"):
        clearclass.train(data, out=tmp_path / "run", epoch=3)
    with pytest.raises(SettingError, match="batch_size must be int"):
        clearclass.train(data, out=tmp_path / "run", batch_size=8.5)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a learning-rate search, figures, a batch
def test_lr_find_explore_and_show_batch_take_the_data_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = make_dataset(tmp_path / "photos", per_class=8)
    found = clearclass.lr_find(data, out=tmp_path / "lr", steps=20,
                               **{k: v for k, v in TINY.items()
                                  if k not in ("learning_rate", "head_speedup", "onnx",
                                               "freeze_epochs")})
    assert 1e-7 <= found.suggestion <= 10 and found.plot_path.is_file()
    assert found._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(SettingError, match="epochs is not a setting here"):
        clearclass.lr_find(data, epochs=3)

    explored = clearclass.explore(data, item_resize=32, workers=0)
    assert explored.counts() == {"blue": (6, 2), "green": (6, 2), "red": (6, 2)}
    assert not Path("runs").exists()  # without `out`, nothing is written
    assert "<table>" in explored._repr_html_() and "data:image/png" in explored._repr_html_()
    written = clearclass.explore(data, out=tmp_path / "x", item_resize=32, workers=0).figures
    assert [p.name for p in written] == ["samples.png", "augmented.png", "batch.png"]

    figure = clearclass.show_batch(data, n=4, item_resize=32)
    assert isinstance(figure, Figure)
    titles = [ax.get_title() for ax in figure.axes if ax.get_images()]
    assert len(titles) == 4 and set(titles) <= set(COLOURS)


def test_evaluation_and_prediction_show_themselves(trained_run, tmp_path):
    report = clearclass.evaluate(trained_run)
    assert report.accuracy == pytest.approx(1.0)
    assert repr(report).startswith("Accuracy 100.00% on 12 validation photos")
    assert "Accuracy" in report._repr_html_()
    for figure in (report.plot_confusion_matrix(), report.plot_most_confused(pairs=5),
                   report.plot_top_losses(9)):
        assert isinstance(figure, Figure)
    assert len([ax for ax in report.plot_top_losses(4).axes if ax.get_images()]) == 4

    classifier = clearclass.load(trained_run / "model", device="auto")
    assert "test_resnet, 3 classes" in repr(classifier)
    photo = make_photo(tmp_path / "red.jpg", COLOURS["red"], seed=5)
    prediction = classifier.predict(photo, top_k=2)
    assert prediction.class_name == "red"
    assert "<img" in prediction._repr_html_() and "red" in prediction._repr_html_()
    assert prediction._repr_png_().startswith(b"\x89PNG")
    assert set(prediction.to_dict()) == {"image", "label", "class_id", "probability", "top_k"}


def test_a_device_that_is_not_there_is_named_with_those_that_are(trained_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ClearclassError, match="available: cpu"):
            clearclass.load(trained_run / "model", device=device)
    with pytest.raises(ClearclassError, match="Unknown device 'gpu'"):
        clearclass.load(trained_run / "model", device="gpu")


def test_auto_device_needs_no_pytorch_where_no_gpu_can_be():
    code = ("import sys; from clearclass.device import device_name, _gpu_possible; "
            "print(device_name('auto'), _gpu_possible(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    if out[1] == "True":
        pytest.skip("a GPU driver is present here")
    assert out == ["cpu", "False", "False"]


@pytest.mark.slow  # several trainings
def test_messages_go_through_the_clearclass_logger(tmp_path, capsys):
    data = make_dataset(tmp_path / "photos", per_class=8)
    with progress.quiet():
        clearclass.train(data, out=tmp_path / "quiet", **TINY)
    assert capsys.readouterr().out == ""
    logger = logging.getLogger("clearclass")
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        clearclass.train(data, out=tmp_path / "warn", **TINY)
    finally:
        logger.setLevel(before)
    assert capsys.readouterr().out == ""
    clearclass.train(data, out=tmp_path / "loud", **TINY)
    out = capsys.readouterr().out
    assert "epoch   train_loss   valid_loss   accuracy   time    stage" in out
    assert "Validation accuracy" in out


def test_public_names_are_never_shadowed_by_a_module_of_the_same_name():
    """`import clearclass.x` sets clearclass.x to the module: no public name may be one."""
    import importlib
    import pkgutil
    import types

    for info in pkgutil.walk_packages(clearclass.__path__, prefix="clearclass."):
        importlib.import_module(info.name)
    for name in clearclass.__all__:
        assert not isinstance(getattr(clearclass, name), types.ModuleType), name
