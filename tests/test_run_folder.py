"""RunFolder: the one reader and writer of a run's files (clearclass/run_folder.py).

The runs here are written with RunFolder's own writers (and a model.json from ModelInfo),
without training: each reader on a good run, each way a file can be damaged, and the one
"is this a run" check.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clearclass import fileio
from clearclass.bundle import INFO_FILE, ONNX_FILE, ModelInfo, read_info, record_onnx
from clearclass.data.sources import SPLIT_CHECKSUM, find_photos
from clearclass.errors import ClearclassError, DataError, ModelFileError, RunError
from clearclass.progress import clock
from clearclass.run_folder import (
    METRICS_HEADER,
    EpochRow,
    RunFolder,
    parse_mmss,
)
from clearclass.training.config import TrainConfig
from tests.conftest import make_dataset, make_photo

ROWS = [EpochRow(0, 1.25, 1.0, 0.5, 65.9, "frozen"),
        EpochRow(1, 0.75, 0.5, 2 / 3, 3.2, "unfrozen")]
RECORD = {"run_id": "0123456789ab", "pretrained": "random weights", "device": "CPU"}


@pytest.fixture
def data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data", per_class=3, classes=("red", "blue"))


@pytest.fixture
def run(tmp_path, data) -> RunFolder:
    """A run folder as `clearclass train` leaves it, written by RunFolder's writers."""
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    photos = find_photos(data, 0.34, seed=1)
    folder.write_split(photos)  # first: config.json records its checksum
    folder.write_config(TrainConfig(str(data), model="test_resnet", epochs=1), RECORD)
    folder.write_history(ROWS)
    folder.write_skipped([(data / "red" / "notes.jpg", "not an image")])
    folder.write_summary({"valid_accuracy": ROWS[-1].accuracy,
                          "epochs": [r.__dict__ for r in ROWS], "timings": {}})
    info = ModelInfo("test_resnet", ["blue", "red"], ["Blue", "Red"], 32, "squish",
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), training={"data": str(data)})
    folder.model_dir.mkdir()
    fileio.write_json(folder.model_dir / INFO_FILE, info.to_json("0" * 64, {}))
    (folder.model_dir / "model.safetensors").write_bytes(b"weights")
    return folder


# --- the readers, on a good run --------------------------------------------------------------

def test_every_file_written_reads_back(run, data):
    config = run.config()
    assert (config.data, config.model, config.epochs) == (str(data), "test_resnet", 1)
    record = run.record()
    assert list(record) == ["config", "run_id", "pretrained", "device", SPLIT_CHECKSUM]
    assert {k: record[k] for k in RECORD} == RECORD
    split = run.split()  # the model's classes by default
    assert split.class_ids == ["blue", "red"] and split.notes == []
    assert sorted(p.path for p in split.photos) == sorted(
        p.resolve() for p in data.glob("*/*.jpg"))
    assert {p.class_id for p in split.valid} == {"red", "blue"}
    history = run.history()
    assert [r.epoch for r in history] == [0, 1] and history[0].seconds == 65
    assert history[1].accuracy == pytest.approx(2 / 3, abs=1e-6)
    assert run.skipped() == [(str(data / "red" / "notes.jpg"), "not an image")]
    assert run.model_info().class_names == ["Blue", "Red"]
    assert json.loads(run.summary_file.read_text())["valid_accuracy"] == ROWS[-1].accuracy


def test_the_files_are_written_as_clearclass_train_always_wrote_them(run, data):
    assert run.metrics_file.read_text() == (
        "epoch,train_loss,valid_loss,accuracy,time,stage\n"
        "0,1.250000,1.000000,0.500000,01:05,frozen\n"
        "1,0.750000,0.500000,0.666667,00:03,unfrozen\n")
    assert run.skipped_file.read_text() == f"path,reason\n{data}/red/notes.jpg,not an image\n"
    lines = run.split_file.read_text().splitlines()
    assert lines[0] == "path,label,is_valid" and len(lines) == 7
    assert all(line.startswith(str(data.resolve())) for line in lines[1:])
    text = run.config_file.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "config": {\n    "data": ')
    assert json.loads(text)[SPLIT_CHECKSUM] == fileio_sha256(run.split_file)
    assert run.summary_file.read_text().startswith('{\n  "valid_accuracy": 0.666')


def fileio_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_absent_history_and_skipped_list_are_empty(run):
    run.metrics_file.unlink()
    run.skipped_file.unlink()
    assert run.history() == [] and run.skipped() == []


def test_mm_ss_both_ways():
    assert [clock(s) for s in (0, 59.9, 60, 3725)] == ["00:00", "00:59", "01:00", "62:05"]
    assert [parse_mmss(t) for t in ("00:00", "01:05", "62:05", "7")] == [0, 65, 3725, 420]
    assert METRICS_HEADER == ("epoch", "train_loss", "valid_loss", "accuracy", "time", "stage")


def test_a_run_half_swapped_by_a_killed_process_is_read_whole(run, tmp_path):
    # Killed between the two renames of a swap: RUN is missing, its next state beside it.
    run.path.rename(tmp_path / ".run.next")
    opened = RunFolder.open(tmp_path / "run", needs_model=True)
    assert opened.path == tmp_path / ".run.next"
    assert [r.epoch for r in RunFolder(tmp_path / "run").history()] == [0, 1]
    assert RunFolder(tmp_path / "run").config().model == "test_resnet"


# --- "is this a run?" ------------------------------------------------------------------------

def test_open_gives_the_run_a_path_or_a_training_run_names(run):
    assert RunFolder.open(str(run.path)).path == run.path

    class Trained:  # what clearclass.train returns: its run_dir
        run_dir = run.path

    assert RunFolder.open(Trained(), needs_model=True).path == run.path


@pytest.mark.parametrize("what", ["missing", "file", "empty folder", "photos", "no config"])
def test_open_refuses_what_is_not_a_run_naming_it(run, data, tmp_path, what):
    given = {"missing": tmp_path / "missing", "file": tmp_path / "file.txt",
             "empty folder": tmp_path / "empty", "photos": data, "no config": run.path}[what]
    if what == "file":
        given.write_text("x")
    if what == "empty folder":
        given.mkdir()
    if what == "no config":
        run.config_file.unlink()
    with pytest.raises(RunError, match="is not a training run") as caught:
        RunFolder.open(given)
    message = str(caught.value)
    assert str(given) in message and "`clearclass train --out` wrote" in message
    assert ("config.json" if what == "no config" else "split.csv") in message


def test_open_for_a_model_says_how_to_finish_a_run_without_one(run):
    import shutil

    shutil.rmtree(run.model_dir)
    assert RunFolder.open(run.path).path == run.path  # reading its split needs no model
    with pytest.raises(ModelFileError, match="not a clearclass model"):
        RunFolder.open(run.path, needs_model=True)
    run.checkpoint_dir.mkdir()  # stopped inside its first epoch
    with pytest.raises(RunError, match=f"--resume {run.path}`"):
        RunFolder.open(run.path, needs_model=True)


# --- each way a file can be damaged: an error that names the file ----------------------------

CONFIG_DAMAGE = {
    "not JSON": "{not json",
    "not UTF-8": b'{"config": "\xff"}',
    "a list": "[1, 2]",
    "no config": '{"run_id": "x"}',
    "config not an object": '{"config": 5}',
    "no data": '{"config": {"seed": 1}}',
    "a value of the wrong kind": '{"config": {"data": "x", "batch_size": "8"}}',
}


@pytest.mark.parametrize("damage", CONFIG_DAMAGE)
def test_a_damaged_config_is_named(run, damage):
    content = CONFIG_DAMAGE[damage]
    if isinstance(content, bytes):
        run.config_file.write_bytes(content)
    else:
        run.config_file.write_text(content)
    with pytest.raises(RunError) as caught:
        run.config()
    assert str(caught.value).startswith(f"{run.config_file} is damaged (")
    assert str(caught.value).endswith("; the run cannot be resumed.")
    if damage == "a value of the wrong kind":
        assert "batch_size" in str(caught.value)
    with pytest.raises(RunError, match="; restore it, or"):
        run.config(cannot="restore it, or train the run again")


def test_a_missing_or_damaged_record_is_named(run):
    run.config_file.write_text("[]")
    with pytest.raises(RunError, match="not an object") as caught:
        run.record()
    assert str(run.config_file) in str(caught.value)
    run.config_file.write_text("{")
    with pytest.raises(RunError, match="is damaged") as caught:
        run.record()
    assert str(run.config_file) in str(caught.value)
    run.config_file.unlink()
    with pytest.raises(RunError, match="is missing") as caught:
        run.record()
    assert str(run.config_file) in str(caught.value)


METRICS_DAMAGE = {
    "wrong columns": "epoch,loss\n0,1.0\n",
    "truncated": "epoch,train_loss,valid_loss,accuracy,time,stage\n0,1.2,1.0,0.5,00:0",
    "not a number": "epoch,train_loss,valid_loss,accuracy,time,stage\n0,x,1.0,0.5,00:01,frozen\n",
    "bad time": "epoch,train_loss,valid_loss,accuracy,time,stage\n0,1,1.0,0.5,soon,frozen\n",
    "a cell too many": "epoch,train_loss,valid_loss,accuracy,time,stage\n0,1,1,1,00:01,frozen,x\n",
    "not UTF-8": b"epoch,train_loss,valid_loss,accuracy,time,stage\n\xff\n",
}


@pytest.mark.parametrize("damage", METRICS_DAMAGE)
def test_a_damaged_history_is_named(run, damage):
    content = METRICS_DAMAGE[damage]
    if isinstance(content, bytes):
        run.metrics_file.write_bytes(content)
    else:
        run.metrics_file.write_text(content)
    with pytest.raises(RunError) as caught:
        run.history()
    assert str(caught.value).startswith(f"{run.metrics_file} is damaged (")


@pytest.mark.parametrize("content", ["file,why\nx,y\n", "path,reason\nx\n", "path,reason\nx,y,z\n"])
def test_a_damaged_skipped_list_is_named(run, content):
    run.skipped_file.write_text(content)
    with pytest.raises(RunError) as caught:
        run.skipped()
    assert str(caught.value).startswith(f"{run.skipped_file} is damaged (")


@pytest.mark.parametrize("content", ["path,label\n", "path,label,is_valid\nx,red,maybe\n", ""])
def test_a_damaged_split_is_named(run, content):
    run.split_file.write_text(content)
    config = json.loads(run.config_file.read_text())
    config[SPLIT_CHECKSUM] = fileio_sha256(run.split_file)  # damaged when it was written
    run.config_file.write_text(json.dumps(config))
    with pytest.raises(DataError) as caught:
        run.split()
    assert str(run.split_file) in str(caught.value)


def test_an_edited_split_and_a_bad_checksum_record_are_named(run):
    run.split_file.write_text(run.split_file.read_text().replace(",red,", ",blue,"))
    with pytest.raises(RunError, match="was changed after training") as caught:
        run.split()
    assert str(run.split_file) in str(caught.value) and str(run.config_file) in str(caught.value)
    config = json.loads(run.config_file.read_text())
    config[SPLIT_CHECKSUM] = "abc"
    run.config_file.write_text(json.dumps(config))
    with pytest.raises(RunError, match="records no valid checksum") as caught:
        run.split()
    assert str(run.config_file) in str(caught.value)
    run.config_file.write_text("{")
    with pytest.raises(RunError, match="cannot be read") as caught:
        run.split()
    assert str(run.config_file) in str(caught.value)


def test_a_damaged_model_json_is_named(run):
    (run.model_dir / INFO_FILE).write_text("{")
    with pytest.raises(ClearclassError, match="is not valid JSON") as caught:
        run.model_info()
    assert str(run.model_dir / INFO_FILE) in str(caught.value)


# --- model.json's one writer -----------------------------------------------------------------

def test_recording_the_onnx_checksum_keeps_every_other_field(run):
    info_file = run.model_dir / INFO_FILE
    before = json.loads(info_file.read_text())
    (run.model_dir / ONNX_FILE).write_bytes(b"onnx")
    record_onnx(run.model_dir)
    after = json.loads(info_file.read_text())
    assert after == {**before, "onnx": {"file": ONNX_FILE, "sha256": fileio_sha256(
        run.model_dir / ONNX_FILE)}}
    assert read_info(run.model_dir).checksums[ONNX_FILE] == after["onnx"]["sha256"]
    info_file.write_text("[]")
    with pytest.raises(ModelFileError, match=str(info_file)):
        record_onnx(run.model_dir)
    assert info_file.read_text() == "[]"  # a damaged description is not written over


# --- layers ----------------------------------------------------------------------------------

def test_reading_a_run_imports_no_pytorch(run):
    """The command line reads a run's record before PyTorch loads (the launcher's look at
    config.json); checking the settings (`config()`) checks the augmentation, which does."""
    code = ("import sys; from clearclass.run_folder import RunFolder; "
            f"r = RunFolder.open({str(run.path)!r}); r.record(); r.history(); r.split(); "
            "r.skipped(); r.model_info(); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_an_unreadable_photo_path_in_skipped_reads_back_as_written(run, tmp_path):
    odd = make_photo(tmp_path / "=cmd.jpg")  # a cell a spreadsheet would run: written quoted
    run.write_skipped([(odd, "cannot be decoded")])
    assert run.skipped() == [(str(odd), "cannot be decoded")]


# --- the commands that read a run, through RunFolder -----------------------------------------

def test_apply_refuses_a_run_whose_config_is_damaged_naming_it(run, tmp_path):
    """clean and apply used to fall back to the default split settings in silence."""
    from clearclass.cleaning import apply_actions

    actions = tmp_path / "actions.csv"
    actions.write_text("path,action\n")
    run.config_file.write_text('{"config": {"data": 5}}')
    with pytest.raises(RunError, match="is damaged") as caught:
        apply_actions(run.path, actions)
    assert str(caught.value).startswith(str(run.config_file))


def test_serve_shows_the_runs_accuracy_and_none_from_a_damaged_history(run):
    from types import SimpleNamespace

    from clearclass.serve import _about

    classifier = SimpleNamespace(info=run.model_info(), backend="pytorch", path=run.model_dir)
    assert _about(classifier)["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    run.metrics_file.write_text("epoch\n0\n")
    assert _about(classifier)["accuracy"] is None  # the page works without it
    run.metrics_file.unlink()
    assert _about(classifier)["accuracy"] is None


def test_the_launcher_reads_a_resumed_runs_device_and_batch_size(run):
    from clearclass.training.launch import saved_settings

    assert saved_settings(run.path) == {"device": "auto", "batch_size": 64}
    run.config_file.write_text('{"config": [1]}')
    assert saved_settings(run.path) == {}  # resuming then says what is wrong, in one line
    run.config_file.unlink()
    assert saved_settings(run.path) == {}
