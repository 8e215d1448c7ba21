from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from clearclass import __version__
from clearclass.cli import app, main
from tests.conftest import COLOURS, make_dataset, make_photo, run_cli, tiny_options

runner = CliRunner()
# The tiny settings; SMALL are those lr-find takes too.
SMALL = tiny_options(**dict.fromkeys(("freeze_epochs", "epochs", "learning_rate",
                                      "head_speedup", "onnx")))
TINY = tiny_options(learning_rate=2e-2, epochs=None, onnx=None)


def _commands():
    """(name, click command) for every command, subcommands of groups included."""
    def walk(group, prefix):
        for name, command in sorted(group.commands.items()):
            if hasattr(command, "commands"):  # a group of subcommands
                yield from walk(command, prefix + [name])
            else:
                yield " ".join(prefix + [name]), command

    return list(walk(typer.main.get_command(app), []))


def test_every_command_has_help_with_an_example_and_every_option_is_explained():
    commands = _commands()
    assert {name for name, _ in commands} >= {
        "train", "evaluate", "predict", "explore", "lr-find", "export", "demo", "cache",
        "search", "verify", "download kaggle", "download imagewoof", "download imagenette",
        "download stanford-dogs"}
    for name, command in commands:
        assert command.help and "Example: clearclass" in command.help, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help and len(param.help) > 15, f"{name} {param.name}"
            else:
                assert getattr(param, "help", None), f"{name} {param.name}"
        result = runner.invoke(app, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, name


def test_version_and_top_level_help():
    assert runner.invoke(app, ["--version"]).output.strip() == f"clearclass {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("train", "evaluate", "predict", "explore", "demo", "download", "search",
                 "verify"):
        assert name in result.output


@pytest.mark.slow  # train, evaluate, predict and export one after the other
def test_train_evaluate_predict_export_through_the_cli(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=20)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data), "--out", str(run), "--epochs", "3",
                                 *TINY])
    assert result.exit_code == 0, result.output
    header = "epoch   train_loss   valid_loss   accuracy   time    stage"
    assert header in result.output
    assert (run / "model" / "model.json").is_file()

    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    assert "Accuracy" in result.output and (run / "report" / "index.html").is_file()

    photo = make_photo(tmp_path / "new red.jpg", COLOURS["red"], size=(50, 40), seed=77)
    result = runner.invoke(app, ["predict", str(run / "model"), str(photo), "--json",
                                 "--top-k", "2"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert len(answer) == 1
    assert set(answer[0]) >= {"image", "label", "probability", "top_k"}
    assert answer[0]["image"] == str(photo)
    assert answer[0]["label"] == "red"
    assert [set(t) >= {"label", "probability"} for t in answer[0]["top_k"]] == [True, True]

    result = runner.invoke(app, ["predict", str(run / "model"), str(tmp_path / "d" / "blue")])
    assert result.exit_code == 0 and result.output.count("\n") == 20

    # Training wrote model.onnx; remove it so that this checks what `export` writes.
    onnx_file = run / "model" / "model.onnx"
    onnx_file.unlink()
    result = runner.invoke(app, ["export", str(run / "model")])
    assert result.exit_code == 0, result.output
    assert onnx_file.is_file() and "checked against PyTorch" in result.output
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file))
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]


def test_explore_writes_figures_and_counts_unreadable(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=5)
    (data / "red" / "broken.jpg").write_bytes(b"")
    result = runner.invoke(app, ["explore", str(data), "--out", str(tmp_path / "x"),
                                 "--item-resize", "32", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "samples.png").is_file()
    assert (tmp_path / "x" / "augmented.png").is_file()
    assert "broken.jpg" in result.output and "unreadable" in result.output
    assert "short side 40 / 40 / 40" in result.output


@pytest.mark.slow  # 100 steps of the learning-rate search
def test_lr_find_suggests_a_rate_and_plots(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=6)
    result = runner.invoke(app, ["lr-find", str(data), "--out", str(tmp_path / "lr"), "-q",
                                 *SMALL])
    assert result.exit_code == 0, result.output
    assert 1e-7 <= float(result.output.strip()) <= 10
    assert (tmp_path / "lr" / "lr_find.png").is_file()


def _run_main(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["clearclass", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr()


def test_errors_are_one_line_without_a_traceback(tmp_path, monkeypatch, capsys):
    make_dataset(tmp_path / "one", per_class=3, classes=("pug",))
    code, out = _run_main(["train", str(tmp_path / "one"), *TINY], monkeypatch, capsys)
    assert code == 1
    assert "Traceback" not in out.err
    assert out.err.strip().startswith("error:") and "at least 2" in out.err
    code, out = _run_main(["predict", str(tmp_path / "export.pkl"), "x.jpg"], monkeypatch,
                          capsys)
    assert code == 1 and "not a clearclass model" in out.err


def test_acquire_commands_without_their_extra_say_how_to_install_it(tmp_path):
    # A fresh process in which imagehash (of the `acquire` extra) cannot be imported.
    code = ("import sys; sys.modules['imagehash'] = None; "
            f"sys.argv = ['clearclass', 'verify', {str(tmp_path)!r}]; "
            "from clearclass.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "'imagehash'" in result.stderr and "pip install 'clearclass[acquire]'" in \
        result.stderr


def test_a_usage_error_exits_2_as_the_shell_sees_it(tmp_path):
    """A real process for the exit status of a mistyped command line (click's, before
    anything is imported)."""
    result = run_cli("train", tmp_path, "--no-such-option", in_process=False)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "No such option" in result.stderr and "--no-such-option" in result.stderr


def test_the_installed_command_runs():
    command = Path(sys.executable).parent / "clearclass"
    result = subprocess.run([str(command), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def test_cache_command_reports_and_clears(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARCLASS_CACHE_DIR", str(tmp_path / "cache"))
    data = make_dataset(tmp_path / "d", per_class=3)
    from clearclass.data.loader import decode_photos

    decode_photos(sorted(data.rglob("*.jpg")), 32, "crop", workers=0,
                  cache_dir=tmp_path / "cache")
    result = runner.invoke(app, ["cache"])
    assert result.exit_code == 0 and "9 decoded photo(s)" in result.output
    result = runner.invoke(app, ["cache", "--clear"])
    assert result.exit_code == 0 and "Deleted 9" in result.output


def test_renamed_options_still_work_on_the_command_line(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=8)
    old = ["--model", "test_resnet", "--no-pretrained", "--item-resize", "32", "--batch-size",
           "8", "--workers", "0", "--device", "cpu", "--no-onnx", "--base-lr", "0.02",
           "--lr-mult", "10", "--head-lr-mult", "1", "--train-bn", "--valid-pct", "0.25"]
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *old])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (config["learning_rate"], config["body_slowdown"], config["head_speedup"],
            config["adapt_batchnorm"], config["validation_fraction"]) == (0.02, 10, 1, True, 0.25)


def test_a_bad_setting_is_named_as_typed(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "d", per_class=3)
    code, out = _run_main(["train", str(data), "--item-resize", "8"], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out.err
    assert "--item-resize must be between 16 and 2048 pixels; got 8" in out.err


@pytest.mark.parametrize("command", ["train", "lr-find", "evaluate", "predict"])
def test_a_missing_device_is_one_line_that_names_what_there_is(command, trained_run, tmp_path,
                                                              monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = make_dataset(tmp_path / "d", per_class=3)
    assert SMALL[-2:] == ["--device", "cpu"]
    args = {"train": ["train", str(data), "--out", str(tmp_path / "run"), *SMALL[:-2]],
            "lr-find": ["lr-find", str(data), "--out", str(tmp_path / "lr"), *SMALL[:-2]],
            "evaluate": ["evaluate", str(trained_run)],
            "predict": ["predict", str(trained_run / "model"), str(data / "red")]}[command]
    code, out = _run_main([*args, "--device", "cuda"], monkeypatch, capsys)
    assert code == 1 and "Traceback" not in out.err
    assert out.err.count("\n") == 1 and "PyTorch sees no CUDA GPU" in out.err
    assert "available: cpu" in out.err
