"""`train --track tensorboard|mlflow`: what each tracker holds, read back with its own tools.

TensorBoard's event files are read with TensorBoard's EventAccumulator; MLflow's run from a
real `mlflow server` (SQLite store, a free port of loopback) through MlflowClient, as a user's
MLflow would show them. The trainings are timm's tiny test_resnet on generated photos.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clearclass.training import loop
from clearclass.training.checkpoint import read_checkpoint
from tests.conftest import (
    _free_port,
    failed,
    make_dataset,
    run_cli,
    stop_in_epoch,
    tensorboard_events,
    tiny,
    tiny_options,
)

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tracked") / "colours", per_class=12)


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- TensorBoard ---------------------------------------------------------------------------

def test_tensorboard_holds_each_epoch_as_metrics_csv_and_a_resumed_run_adds_to_them(
        photos, tmp_path, monkeypatch):
    out = tmp_path / "run"
    stop_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        loop.train(photos, out=str(out), **tiny(epochs=2), track=["tensorboard"])
    assert read_checkpoint(out).position.step == 1
    before = tensorboard_events(out / "tensorboard")
    assert [e.step for e in before.Scalars("valid/accuracy")] == [0]
    steps_per_epoch = len([e for e in before.Scalars("train/loss") if e.step < 100]) - 1
    (first,) = (out / "tensorboard").iterdir()
    first_bytes = first.read_bytes()
    monkeypatch.undo()

    loop.resume(out)
    events = tensorboard_events(out / "tensorboard")
    rows = _metrics(out)
    assert len(list((out / "tensorboard").iterdir())) == 2  # the resumed run's own file
    # ...written beside the first, never through the hard links a save shares with RUN
    assert first.read_bytes() == first_bytes
    accuracy = events.Scalars("valid/accuracy")
    assert [e.step for e in accuracy] == [0, 1, 2]
    for event, row in zip(accuracy, rows, strict=True):
        assert event.value == pytest.approx(float(row["accuracy"]), abs=1e-6)
    for event, row in zip(events.Scalars("valid/loss"), rows, strict=True):
        assert event.value == pytest.approx(float(row["valid_loss"]), abs=1e-5)
    # Every training step once: the stopped run's up to its checkpoint, then the resumed one's.
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(3 * steps_per_epoch))
    assert len(events.Scalars("train/learning_rate")) == len(steps)
    assert events.Tags()["images"] == ["augmented photos"]
    # the settings, as TensorBoard's hparams plugin reads them
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["learning_rate"].number_value == pytest.approx(0.01)
    assert start.hparams["track"].string_value == "tensorboard"

    # evaluate adds the report's figures and per-class table; again, it replaces them
    import clearclass

    clearclass.evaluate(out)
    clearclass.evaluate(out)
    files = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert len(files) == 3 and files[-1].endswith(".evaluation.clearclass"), files
    events = tensorboard_events(out / "tensorboard")
    assert {"evaluation/confusion", "evaluation/top_losses"} <= set(events.Tags()["images"])
    assert events.Scalars("evaluation/accuracy")[0].value == pytest.approx(
        float(rows[-1]["accuracy"]), abs=1e-6)


def test_tracking_changes_nothing_the_run_computes(photos, tmp_path):
    plain = loop.train(photos, out=str(tmp_path / "plain"), **tiny())
    tracked = loop.train(photos, out=str(tmp_path / "tracked"), **tiny(),
                         track=["tensorboard"])
    assert (plain.model_dir / "model.safetensors").read_bytes() == \
        (tracked.model_dir / "model.safetensors").read_bytes()
    assert json.loads((tracked.run_dir / "config.json").read_text())["config"]["track"] == [
        "tensorboard"]


def test_the_command_line_takes_track_once_for_each_and_refuses_an_unknown_one(
        photos, tmp_path):
    result = run_cli("train", photos, "--out", tmp_path / "run", *tiny_options(),
                     "--track", "tensorboard", "--track", "tensorboard", "--quiet")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["track"] == ["tensorboard"]
    failed(run_cli("train", photos, "--out", tmp_path / "other", *tiny_options(),
                   "--track", "tensorbord"), "track", "Did you mean tensorboard?")
    assert not (tmp_path / "other").exists()


# --- MLflow, against a real server ---------------------------------------------------------

class MlflowServer:
    """`mlflow server` with a SQLite store and its own artifact folder, on a free port."""

    def __init__(self, folder: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "mlflow-server.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{(folder / 'mlflow.db').as_posix()}",
             "--artifacts-destination", str(folder / "artifacts")],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=folder,
            start_new_session=True)  # its workers are processes of their own: stop them all
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server ended: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"mlflow server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.mark.slow
def test_mlflow_run_holds_settings_metrics_by_epoch_the_bundle_and_a_servable_onnx_model(
        photos, tmp_path, monkeypatch, mlflow_server, caplog, capsys):
    import mlflow.onnx
    import onnxruntime
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    out = tmp_path / "dogs"
    stop_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        loop.train(photos, out=str(out), **tiny(epochs=2, onnx=True), track=["mlflow"],
                   experiment="colour trials")
    saved = json.loads((out / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(mlflow_server.url)
    assert client.get_run(saved["run_id"]).info.status == "KILLED"
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    with caplog.at_level(logging.INFO, logger="clearclass"):
        loop.resume(out)
    # MLflow's own links at the end are said as clearclass's messages (none under --quiet)
    assert "View run" not in capsys.readouterr().out
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"MLflow: view run dogs at: {mlflow_server.url}") for m in said)

    run = client.get_run(saved["run_id"])  # the same MLflow run went on
    assert run.info.status == "FINISHED" and run.info.run_name == "dogs"
    assert client.get_experiment(run.info.experiment_id).name == "colour trials"
    assert run.data.params["learning_rate"] == "0.01" and run.data.params["epochs"] == "2"
    assert run.data.tags["classes"] == "3" and run.data.tags["train_photos"] == "30"
    assert run.data.tags["device"].startswith("CPU")
    rows = _metrics(out)
    history = sorted(client.get_metric_history(run.info.run_id, "valid_accuracy"),
                     key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    for metric, row in zip(history, rows, strict=True):
        assert metric.value == pytest.approx(float(row["accuracy"]), abs=1e-6)
    losses = sorted(client.get_metric_history(run.info.run_id, "valid_loss"), key=lambda m: m.step)
    assert [m.value for m in losses] == pytest.approx([float(r["valid_loss"]) for r in rows],
                                                      abs=1e-5)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss_step")]
    assert len(steps) == len(set(steps))  # no step sent twice across the stop

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.safetensors", "model/model.json", "model/model.onnx"} <= artifacts
    onnx_model = mlflow.onnx.load_model(f"runs:/{run.info.run_id}/onnx_model")
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString())
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    ours = onnxruntime.InferenceSession(str(out / "model" / "model.onnx"))
    for got, expected in zip(session.run(None, {"image": x}), ours.run(None, {"image": x}),
                             strict=True):  # logits, then probabilities
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # the pyfunc flavour that `mlflow models serve` loads predicts too, as its signature says
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/onnx_model")
    assert model.metadata.get_output_schema().input_names() == ["logits", "probabilities"]
    predicted = model.predict({"image": x})
    assert np.asarray(predicted["logits"]).shape == (2, 3)
    np.testing.assert_allclose(np.asarray(predicted["probabilities"]).sum(1), 1.0, atol=1e-5)

    import clearclass

    clearclass.evaluate(out, tta=True)
    run = client.get_run(saved["run_id"])
    assert run.data.metrics["evaluation/accuracy"] == pytest.approx(float(rows[-1]["accuracy"]),
                                                                     abs=1e-6)
    assert "evaluation/tta_accuracy" in run.data.metrics
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/index.html" in report


def test_a_server_that_cannot_be_reached_at_the_start_is_one_warning(
        photos, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    with caplog.at_level(logging.WARNING, logger="clearclass"):
        run = loop.train(photos, out=str(tmp_path / "run"), **tiny(), track=["mlflow"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and "training step(s) per epoch" not in r.getMessage()]
    assert len(warnings) == 1 and "MLflow failed" in warnings[0], warnings
    assert len(_metrics(run.run_dir)) == 2 and not (run.run_dir / "tracking.json").exists()


def test_without_a_tracking_uri_the_store_is_beside_the_runs_and_said(
        photos, tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with caplog.at_level(logging.INFO, logger="clearclass"):
        loop.train(photos, out=str(tmp_path / "runs" / "a"), **tiny(), track=["mlflow"])
    store = tmp_path / "runs" / "mlflow.db"
    assert store.is_file()
    said = [r.getMessage() for r in caplog.records if "MLflow: run" in r.getMessage()]
    assert said and f"sqlite:///{store.as_posix()}" in said[0] and "mlflow ui" in said[0]
    client = MlflowClient(f"sqlite:///{store.as_posix()}")
    experiment = client.get_experiment_by_name("colours")  # the data folder's name
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "runs" / "mlartifacts")
    assert (artifacts / "model" / "model.json").is_file()
    # the artifacts hold copies of the run's files; `clearclass runs` lists the run once
    import clearclass

    assert [row.run for row in clearclass.runs(tmp_path / "runs").rows] == ["a"]
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        assert key not in os.environ  # set only around clearclass's own requests


@pytest.mark.slow
def test_a_server_that_dies_mid_run_is_one_warning_and_the_run_finishes(
        photos, tmp_path, monkeypatch, caplog, mlflow_server):
    """Last in this file: it stops the module's server (one server start less)."""
    server = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    real = loop.train_one_epoch

    def kill_in_epoch_1(run, setup, stage, epoch, start, saver, stop):
        if epoch == 1:
            server.stop()
        return real(run, setup, stage, epoch, start, saver, stop)

    monkeypatch.setattr(loop, "train_one_epoch", kill_in_epoch_1)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="clearclass"):
        run = loop.train(photos, out=str(tmp_path / "run"), **tiny(epochs=2, onnx=True),
                         track=["mlflow"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and "training step(s) per epoch" not in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("MLflow failed"), warnings
    assert "the run goes on without it" in warnings[0]
    assert len(run.history) == 3 and len(_metrics(run.run_dir)) == 3
    assert (run.model_dir / "model.onnx").is_file()
    assert time.perf_counter() - t0 < 90  # a few retries, not MLflow's minutes of them


def test_a_multi_label_run_sends_its_f1_and_mean_average_precision(multi_label_photos,
                                                                   tmp_path):
    out = tmp_path / "run"
    loop.train(multi_label_photos, out=str(out), **tiny(epochs=1), track=["tensorboard"])
    events = tensorboard_events(out / "tensorboard")
    rows = _metrics(out)
    for name in ("accuracy", "f1_micro", "f1_macro", "mean_ap"):
        values = [e.value for e in events.Scalars(f"valid/{name}")]
        assert values == pytest.approx([float(r[name]) for r in rows], abs=1e-6), name
