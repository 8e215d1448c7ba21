"""`--track` under hostile conditions: files edited or deleted between a stop and a resume,
hostile class names in what TensorBoard shows, bad names for trackers and experiments."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from clearclass.errors import SettingError
from clearclass.training import TrainConfig, loop
from tests.conftest import COLOURS, make_photo, stop_in_epoch, tensorboard_events, tiny

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


@pytest.fixture
def hostile_photos(tmp_path) -> Path:
    """Classes whose names are markup, a Markdown table's bar and a formula."""
    root = tmp_path / "photos"
    for c, (name, colour) in enumerate(zip(("<i>red", "gr|een", "=blue"),
                                           COLOURS.values())):
        for i in range(8):
            make_photo(root / name / f"{i}.jpg", colour, seed=10 * c + i)
    return root


@pytest.mark.slow  # a run stopped, damaged and resumed, tracked by both trackers
def test_tensorboard_folder_deleted_and_tracking_json_damaged_between_stop_and_resume(
        hostile_photos, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs" / "run"
    stop_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        loop.train(hostile_photos, out=str(out), **tiny(epochs=2, batch_size=4),
                   track=["tensorboard", "mlflow"])
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = json.loads((out / "tracking.json").read_text())["mlflow"]["run_id"]
    for child in (out / "tensorboard").iterdir():
        child.unlink()
    (out / "tensorboard").rmdir()
    (out / "tracking.json").write_text('{"mlflow": "=cmd|x"', encoding="utf-8")

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clearclass"):
        run = loop.resume(out)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and "training step(s)" not in r.getMessage()]
    assert len(said) == 1 and "tracking.json" in said[0] and "new MLflow run" in said[0]
    assert len(run.history) == 3
    # the resumed process wrote its own events; the new MLflow run got every epoch
    events = tensorboard_events(out / "tensorboard")
    assert [e.step for e in events.Scalars("valid/accuracy")] == [1, 2]
    again = json.loads((out / "tracking.json").read_text())["mlflow"]
    assert again["run_id"] != first
    from mlflow import MlflowClient

    history = MlflowClient(again["tracking_uri"]).get_metric_history(again["run_id"],
                                                                   "valid_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2]


@pytest.mark.slow  # trains and evaluates, read back with TensorBoard's own reader
def test_hostile_class_names_stay_text_in_tensorboards_per_class_table(
        hostile_photos, tmp_path):
    import clearclass

    run = loop.train(hostile_photos, out=str(tmp_path / "run"), **tiny(batch_size=4),
                     track=["tensorboard"])
    clearclass.evaluate(run.run_dir)
    events = tensorboard_events(run.run_dir / "tensorboard")
    (table,) = events.Tensors("evaluation/per_class/text_summary")
    text = table.tensor_proto.string_val[0].decode()
    assert "&lt;i&gt;red" in text and "<i>" not in text
    assert "gr\\|een" in text
    assert len(text.splitlines()) == 2 + 3  # header, rule, a row per class: no bar split one


@pytest.mark.parametrize(("settings", "words"), [
    ({"track": ["wandb"]}, "tensorboard or mlflow"),
    ({"track": ["mlflow", 3]}, "list of names"),
    ({"track": "tensorbaord"}, "Did you mean tensorboard"),
    ({"experiment": "  "}, "experiment must be a name"),
])
def test_bad_trackers_and_experiments_are_refused_with_the_setting_named(settings, words):
    with pytest.raises(SettingError, match=words):
        TrainConfig("photos", **settings)


def test_an_older_runs_config_without_track_reads_as_no_tracking(tmp_path):
    config = TrainConfig.from_dict({"data": "photos", "epochs": 2})
    assert config.track == () and config.experiment is None


def test_a_run_stopped_and_resumed_within_a_second_in_one_process_keeps_both_files(tmp_path):
    """A notebook's Ctrl-C then resume can start two sessions in the same second and
    process: the second writes a file of its own, which sorts after the first."""
    from clearclass.tracking import RunFacts, _TensorBoard

    facts = RunFacts(tmp_path, {}, "photos", ["a"], 1, 1, "CPU")
    first, second = _TensorBoard(facts), _TensorBoard(facts)
    assert first.file != second.file and sorted([second.file, first.file])[0] == first.file


def test_a_local_store_that_cannot_be_opened_is_one_warning(hostile_photos, tmp_path,
                                                            monkeypatch, caplog):
    """runs/mlflow.db is a folder (or any store MLflow cannot open): a warning, and the
    run trains and saves as without --track."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "runs" / "mlflow.db").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="clearclass"):
        run = loop.train(hostile_photos, out=str(tmp_path / "runs" / "run"),
                         **tiny(batch_size=4), track=["mlflow"])
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and r.name == "clearclass" and "training step(s)" not in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("MLflow failed"), said
    assert len(run.history) == 2 and not (run.run_dir / "tracking.json").exists()


@pytest.mark.slow  # trains with both trackers, read back with their own readers
def test_a_data_folder_named_in_latin1_reaches_both_trackers_escaped(tmp_path, monkeypatch,
                                                                     caplog):
    """Protobuf (TensorBoard) and JSON (MLflow) take UTF-8 only: a name that is not is sent
    as \\xe9, as every file clearclass writes shows it, not a tracker turned off."""
    import os

    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    photos = tmp_path / os.fsdecode(b"caf\xe9")
    for c, (name, colour) in enumerate(zip((os.fsdecode(b"r\xe9d"), "green"),
                                           list(COLOURS.values())[:2])):
        for i in range(8):
            make_photo(photos / name / f"{i}.jpg", colour, seed=10 * c + i)
    with caplog.at_level(logging.WARNING, logger="clearclass"):
        run = loop.train(photos, out=str(tmp_path / "runs" / "run"), **tiny(batch_size=4),
                         track=["tensorboard", "mlflow"])
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and "training step(s)" not in r.getMessage()]
    assert not said, said
    saved = json.loads((run.run_dir / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(saved["tracking_uri"])
    mlflow_run = client.get_run(saved["run_id"])
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "caf\\xe9"
    assert mlflow_run.data.tags["class_names"] == "green, r\\xe9d"
    events = tensorboard_events(run.run_dir / "tensorboard")
    assert [e.step for e in events.Scalars("valid/accuracy")] == [0, 1]


@pytest.mark.slow  # a run stopped and resumed in MLflow's store
def test_a_run_stopped_in_its_first_epoch_goes_on_in_the_same_mlflow_run(
        hostile_photos, tmp_path, monkeypatch):
    """Stopped before any epoch ended (nothing in metrics.csv yet): the checkpoint's
    tracking.json still names the MLflow run, and the resumed run goes on in it."""
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stop_in_epoch(monkeypatch, 0)
    out = tmp_path / "runs" / "run"
    with pytest.raises(KeyboardInterrupt):
        loop.train(hostile_photos, out=str(out), **tiny(batch_size=4),
                   track=["tensorboard", "mlflow"])
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = json.loads((out / "tracking.json").read_text())["mlflow"]
    loop.resume(out)
    saved = json.loads((out / "tracking.json").read_text())["mlflow"]
    assert saved == first
    client = MlflowClient(saved["tracking_uri"])
    assert len(client.search_runs([saved["experiment_id"]])) == 1
    history = client.get_metric_history(saved["run_id"], "valid_accuracy")
    assert sorted(m.step for m in history) == [0, 1]
    steps = [m.step for m in client.get_metric_history(saved["run_id"], "train_loss_step")]
    assert sorted(steps) == list(range(len(steps)))  # each step once, across the stop
    # the settings went to TensorBoard once, by the first process
    files = sorted((out / "tensorboard").iterdir())
    assert len(files) == 2
    with_settings = []
    for file in files:
        events = tensorboard_events(file)
        try:
            with_settings.append(bool(events.PluginTagToContent("hparams")))
        except KeyError:  # no event of that plugin in the file
            with_settings.append(False)
    assert with_settings == [True, False]
