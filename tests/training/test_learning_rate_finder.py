"""lr_find on a multi-label CSV (issue 25): the same task as training, its loss binary
cross-entropy per label; its split and settings recorded as a run's."""

from __future__ import annotations

import json
import math

import pytest

import clearclass
from clearclass.errors import SettingError
from clearclass.run_folder import RunFolder
from tests.conftest import TINY, failed, make_multi_label_dataset, run_cli

FINDER = {k: v for k, v in TINY.items()
          if k not in ("learning_rate", "head_speedup", "onnx", "freeze_epochs", "epochs")}


def test_lr_find_on_a_multi_label_csv_sweeps_the_binary_cross_entropy(multi_label_photos,
                                                                        tmp_path):
    found = clearclass.lr_find(multi_label_photos, out=tmp_path / "lr", steps=8, **FINDER)
    assert 1e-7 <= found.suggestion <= 10 and found.plot_path.is_file()
    # At the lowest rates the loss is that of the untrained head: per label, binary
    # cross-entropy near log 2 (0.69) for outputs near 0, where the softmax over 3 classes
    # that single-label training would use starts near log 3 (1.10).
    assert abs(found.losses[0] - math.log(2)) < 0.15, found.losses[:3]
    split = RunFolder(tmp_path / "lr").split(["blue", "green", "red"], "multi")
    assert split.task == "multi"
    assert {p.labels for p in split.photos} == {
        (), ("red",), ("green",), ("blue",), ("green", "red"), ("blue", "red"),
        ("blue", "green"), ("blue", "green", "red")}
    config = json.loads((tmp_path / "lr" / "config.json").read_text())["config"]
    assert config["task"] == "auto" and config["label_delimiter"] is None


def test_lr_find_takes_the_task_and_the_delimiter_and_refuses_balance(tmp_path):
    spaced = make_multi_label_dataset(tmp_path / "spaced", per_set=3, delimiter=" ")
    out = tmp_path / "lr"
    result = run_cli("lr-find", spaced, "--out", out, "--steps", "5", "--task", "multi",
                     "--label-delimiter", " ", "--model", "test_resnet", "--no-pretrained",
                     "--item-resize", "32", "--batch-size", "8", "--workers", "0",
                     "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    assert 1e-7 <= float(result.stdout.strip()) <= 10
    labels = {c for p in RunFolder(out).split(["blue", "green", "red"], "multi").photos
              for c in p.label_set}
    assert labels == {"blue", "green", "red"}  # split on the spaces given
    with pytest.raises(SettingError, match="balance"):
        clearclass.lr_find(spaced, out=tmp_path / "lr2", steps=5, label_delimiter=" ",
                           balance="weights", **FINDER)
    failed(run_cli("lr-find", spaced, "--out", tmp_path / "lr3", "--steps", "5",
                   "--label-delimiter", " ", "--balance", "sampler", "--workers", "0"),
           "--balance", "several labels")
