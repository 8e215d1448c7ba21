"""Checkpoints and --resume: a run stopped anywhere continues to the same result.

The runs go through the real command line in a subprocess, so that SIGKILL and SIGINT hit a
process as they would a user's. The model is timm's tiny test_resnet; a run of 3 epochs
(1 frozen, 2 unfrozen) takes a few seconds.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clearclass.errors import RunError
from clearclass.training import TrainConfig
from clearclass.training.checkpoint import Position, read_checkpoint, write_checkpoint
from tests.conftest import (
    COLOURS,
    make_dataset,
    make_photo,
    run_cli,
    stop_in_epoch,
    tensorboard_events,
)

needs_signals = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _command(data: Path, out: Path, *extra: str, workers: int = 0) -> list[str]:
    return [sys.executable, "-m", "clearclass", "train", str(data), "--out", str(out),
            "--model", "test_resnet", "--no-pretrained", "--item-resize", "32",
            "--batch-size", "8", "--freeze-epochs", "1", "--epochs", "2",
            "--learning-rate", "1e-2", "--workers", str(workers), "--device", "cpu", "--no-onnx",
            "--quiet", *extra]


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _position(run: Path) -> dict | None:
    try:
        return json.loads((run / "checkpoint" / "state.json").read_text())["position"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for(process: subprocess.Popen, run: Path, epochs_done: int, step: int) -> dict:
    """Poll the run's checkpoint until it is at (epochs_done, >= step)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        position = _position(run)
        if position and (position["epochs_done"], position["step"]) >= (epochs_done, step):
            return position
        if process.poll() is not None:
            pytest.fail(f"the run ended before its checkpoint reached epoch {epochs_done}, "
                        f"batch {step}")
        time.sleep(0.005)
    pytest.fail("no checkpoint appeared")


def _same_metrics(resumed: list[dict], whole: list[dict]) -> None:
    assert len(resumed) == len(whole) == 3  # every epoch once
    for a, b in zip(resumed, whole):
        assert a["epoch"] == b["epoch"] and a["stage"] == b["stage"]
        for column in ("train_loss", "valid_loss", "accuracy"):
            assert abs(float(a[column]) - float(b[column])) <= 1e-3, (column, a, b)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """30 photos a class: 72 training photos, 9 steps an epoch in batches of 8."""
    return make_dataset(tmp_path_factory.mktemp("resume") / "colours", per_class=30)


@pytest.fixture(scope="module")
def few_photos(tmp_path_factory) -> Path:
    """For runs in this process: 12 photos a class, 4 steps an epoch in batches of 8."""
    return make_dataset(tmp_path_factory.mktemp("few") / "colours", per_class=12)


@pytest.fixture(scope="module")
def uninterrupted(photos: Path, tmp_path_factory) -> Path:
    """The run the interrupted ones must end as: the same command, in this process (the
    figures depend on the settings and the seed, not on the process; the runs that are
    killed and resumed are real processes)."""
    out = tmp_path_factory.mktemp("whole") / "run"
    done = run_cli(*_command(photos, out)[3:])
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow  # real processes, trained and killed
@needs_signals
def test_sigkill_in_epoch_2_of_3_then_resume_ends_as_the_uninterrupted_run(photos, uninterrupted,
                                                                            tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(_command(photos, out, "--checkpoint-minutes", "0.0001",
                                        "--track", "tensorboard"))
    killed_at = _wait_for(process, out, epochs_done=1, step=4)  # inside the 2nd epoch (of 9)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed_at["epochs_done"] == 1 and killed_at["step"] > 0
    assert len(_metrics(out)) == 1  # RUN holds epoch 0 and a checkpoint inside epoch 1

    done = subprocess.run([sys.executable, "-m", "clearclass", "train", "--resume", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Resuming" in done.stdout and "at epoch 1, batch" in done.stdout
    _same_metrics(_metrics(out), _metrics(uninterrupted))
    assert not (out / "checkpoint").exists()  # a finished run keeps its model only
    assert (out / "model" / "model.safetensors").is_file()
    # --track tensorboard: the killed process's events up to its last save, then the
    # resumed one's: every step once, every epoch equal to metrics.csv
    events = tensorboard_events(out / "tensorboard")
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(3 * 9))  # 3 epochs of 72 training photos in batches of 8
    assert [e.value for e in events.Scalars("valid/accuracy")] == pytest.approx(
        [float(r["accuracy"]) for r in _metrics(out)], abs=1e-6)


@pytest.mark.slow  # real processes, trained and killed
@needs_signals
def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_the_run_resumes(
        photos, uninterrupted, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: here photos are decoded each
    epoch by 2 DataLoader workers started with `spawn` (as on macOS and Windows), which
    must leave the interruption to the main process. The batches are those of the
    uninterrupted run (cache memory), so the metrics must be too."""
    out = tmp_path / "run"
    command = _command(photos, out, "--cache", "off", workers=2)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               env={**os.environ, "CLEARCLASS_START_METHOD": "spawn"})
    _wait_for(process, out, epochs_done=1, step=0)  # the first epoch is saved
    time.sleep(0.5)  # into the second epoch
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"clearclass train --resume {out}" in stderr
    position = _position(out)
    assert position is not None and position["epochs_done"] >= 1
    done = subprocess.run([sys.executable, "-m", "clearclass", "train", "--resume", str(out),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _same_metrics(_metrics(out), _metrics(uninterrupted))


@pytest.mark.slow  # real processes, trained and killed
def test_resuming_a_finished_run_changes_nothing(uninterrupted, capsys):
    from clearclass.training import resume

    before = (uninterrupted / "model" / "model.safetensors").stat().st_mtime_ns
    run = resume(uninterrupted)
    assert len(run.history) == 3
    assert "nothing to resume" in capsys.readouterr().out
    assert (uninterrupted / "model" / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow  # real processes, trained and killed
def test_a_resumed_run_keeps_its_settings(uninterrupted):
    from clearclass.training import resume

    with pytest.raises(RunError, match="learning_rate cannot change"):
        resume(uninterrupted, learning_rate=0.1)


def test_an_unfinished_run_is_not_replaced_by_accident(few_photos, tiny_train_settings,
                                                       tmp_path):
    from clearclass.training import train

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "checkpoint").mkdir()
    with pytest.raises(RunError, match="--resume"):
        train(few_photos, out=str(out), **tiny_train_settings)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(few_photos, tiny_train_settings,
                                                               tmp_path, monkeypatch):
    """ENOSPC while saving: inside an epoch, a warning and training goes on; at the end of
    an epoch, an error that says what RUN still holds, and RUN holds it."""
    from clearclass.training import checkpoint as checkpoints
    from clearclass.training import loop, saving, train

    real = checkpoints.write_checkpoint
    calls = {"n": 0}

    def fail_after_first(folder, **kw):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device", str(folder))
        real(folder, **kw)

    monkeypatch.setattr(saving, "write_checkpoint", fail_after_first)
    out = tmp_path / "run"
    settings = {**tiny_train_settings, "epochs": 2, "checkpoint_minutes": 0.0}
    with pytest.raises(RunError, match="Could not save epoch 1") as failure:
        train(few_photos, out=str(out), **settings)
    assert "holds the model as of epoch 0 and its checkpoint" in str(failure.value)
    assert "--resume" in str(failure.value)
    assert len(_metrics(out)) == 1 and _position(out)["epochs_done"] == 1
    assert read_checkpoint(out).position == Position(1)

    monkeypatch.setattr(saving, "write_checkpoint", real)
    resumed = loop.resume(out)
    assert len(resumed.history) == 3


def test_checkpoint_round_trip_restores_model_optimizer_and_schedule(tmp_path):
    from clearclass.bundle import ModelInfo

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=10)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    info = ModelInfo("test", ["a", "b", "c"], ["a", "b", "c"], 32, "crop", (0.5,) * 3,
                     (0.25,) * 3)
    position = Position(2, 7, 1.25, 56, 3.5)
    write_checkpoint(tmp_path / "run" / "checkpoint", model=model, info=info, run_id="r1",
                     position=position, stage="unfrozen", optimizer=optimizer,
                     scheduler=scheduler)
    assert not list((tmp_path / "run" / "checkpoint").glob("*.pkl"))
    saved = read_checkpoint(tmp_path / "run")
    assert saved.position == position and saved.stage == "unfrozen"
    assert saved.info.class_ids == ["a", "b", "c"]

    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    scheduler2 = torch.optim.lr_scheduler.OneCycleLR(optimizer2, max_lr=1e-2, total_steps=10)
    saved.load_model(model2)
    saved.load_optimizer(optimizer2)
    saved.load_scheduler(scheduler2)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for p, p2 in zip(model.parameters(), model2.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[p][key], optimizer2.state[p2][key])
    assert scheduler2.last_epoch == scheduler.last_epoch == 3
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert optimizer2.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]


def test_checkpoint_minutes_is_a_setting_checked_like_the_others():
    from clearclass.errors import SettingError

    assert TrainConfig("x").checkpoint_minutes == 10.0
    with pytest.raises(SettingError, match="checkpoint_minutes"):
        TrainConfig("x", checkpoint_minutes=-1)


def test_resume_needs_a_run(tmp_path):
    from clearclass.training import resume

    with pytest.raises(RunError, match="not a training run"):
        resume(tmp_path)
    with pytest.raises(RunError, match="nothing to resume"):
        resume(tmp_path / "stopped before its first checkpoint")
    assert os.listdir(tmp_path) == []


def test_a_run_stopped_inside_its_first_epoch_resumes_and_says_so_until_then(
        few_photos, tiny_train_settings, tmp_path, monkeypatch):
    """Stopped after a checkpoint inside epoch 0: RUN has no model yet; evaluate says how
    to go on, and --resume finishes the run."""
    import clearclass
    from clearclass.training import loop

    real = stop_in_epoch(monkeypatch)  # as Ctrl-C does: stop at the next step, after saving
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        loop.train(few_photos, out=str(out), **tiny_train_settings)
    assert read_checkpoint(out).position.step == 1 and not (out / "model").exists()
    with pytest.raises(RunError, match="--resume"):
        clearclass.evaluate(out)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    run = loop.resume(out)
    assert [row.epoch for row in run.history] == [0, 1]


@pytest.mark.slow  # three short trainings
@pytest.mark.parametrize("balance", ["sampler", "weights"])
def test_a_balanced_run_stopped_inside_an_epoch_resumes_to_the_uninterrupted_figures(
        tmp_path_factory, tiny_train_settings, tmp_path, monkeypatch, balance):
    """--balance sampler draws each epoch from (seed, epoch), and the class weights come from
    split.csv's photos, so a run stopped midway ends where the uninterrupted one does."""
    from clearclass.training import loop

    photos = tmp_path_factory.mktemp("imbalanced") / "colours"
    for c, (name, count) in enumerate((("red", 30), ("green", 10), ("blue", 5))):
        for i in range(count):
            make_photo(photos / name / f"{i:03d}.jpg", COLOURS[name], seed=100 * c + i)
    settings = {**tiny_train_settings, "epochs": 2, "balance": balance}
    whole = loop.train(photos, out=str(tmp_path / "whole"), **settings)

    real = stop_in_epoch(monkeypatch, 1)  # as Ctrl-C does: saved after the next step
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        loop.train(photos, out=str(out), **settings)
    assert read_checkpoint(out).position.epochs_done == 1
    assert read_checkpoint(out).position.step == 1
    monkeypatch.setattr(loop, "train_one_epoch", real)
    with pytest.raises(RunError, match="balance cannot change"):
        loop.resume(out, balance="none")
    resumed = loop.resume(out)
    assert resumed.config.balance == balance
    _same_metrics(_metrics(out), _metrics(whole.run_dir))
