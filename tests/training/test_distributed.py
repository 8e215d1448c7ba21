"""Training in two processes on the CPU (gloo), started by `clearclass train --processes 2`,
which runs torchrun: one epoch table, one run folder, metrics summed over both processes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from clearclass.errors import SettingError
from tests.conftest import real_photo_root, tensorboard_events


def _subset(root: Path, out: Path, classes: int = 3, per_class: int = 16) -> Path:
    """A CSV of real photos: the first `per_class` of `classes` breeds, 1 in 4 held out."""
    rows = []
    folders = sorted(d for d in root.rglob("*") if d.is_dir() and any(
        f.suffix.lower() in (".jpg", ".jpeg") for f in d.iterdir()))[:classes]
    for folder in folders:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg"))
        rows += [(str(f), folder.name, i % 4 == 0) for i, f in enumerate(files[:per_class])]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "is_valid"), *rows])
    return out


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # two training processes under torchrun
def test_two_processes_train_one_model_with_metrics_over_all_photos(tmp_path):
    data = _subset(real_photo_root(), tmp_path / "photos.csv")
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "clearclass", "train", str(data), "--processes", "2",
         "--out", str(out), "--model", "test_resnet", "--no-pretrained", "--item-resize", "48",
         "--batch-size", "8", "--freeze-epochs", "1", "--epochs", "1", "--learning-rate",
         "1e-2", "--device", "cpu", "--workers", "0", "--no-onnx", "--track", "tensorboard"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "torchrun" in done.stderr + done.stdout  # says what it started
    assert done.stdout.count("train_loss") == 1  # one epoch table: process 0 alone prints
    assert "training on 2 processes" in done.stdout
    rows = _metrics(out)
    assert [r["stage"] for r in rows] == ["frozen", "unfrozen"]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "metrics.csv", "model", "skipped.csv", "split.csv", "summary.json",
        "tensorboard"]
    # --track went through torchrun to both processes; process 0 alone wrote events
    (events,) = (out / "tensorboard").iterdir()
    accumulator = tensorboard_events(events.parent)
    assert [e.value for e in accumulator.Scalars("valid/accuracy")] == pytest.approx(
        [float(r["accuracy"]) for r in rows], abs=1e-6)

    # The validation loss and accuracy of the last epoch were summed over both processes'
    # shares: the saved model, evaluated in one process, gives the same figures.
    import clearclass

    evaluation = clearclass.evaluate(out, device="cpu")
    assert evaluation.accuracy == pytest.approx(float(rows[-1]["accuracy"]), abs=1e-6)
    assert float(evaluation.losses.mean()) == pytest.approx(float(rows[-1]["valid_loss"]),
                                                            abs=1e-3)


def test_the_batch_size_must_divide_among_the_processes(monkeypatch, tmp_path,
                                                        tiny_train_settings):
    from clearclass.training import loop

    monkeypatch.setattr(loop.distributed, "from_environment",
                        lambda: loop.Processes(rank=1, world_size=3))
    with pytest.raises(SettingError, match="divide among them"):
        loop.train(tmp_path, out=str(tmp_path / "run"), **tiny_train_settings)
