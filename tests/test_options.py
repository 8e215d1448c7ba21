"""One list of training options: TrainConfig, the command line and the README agree."""

from __future__ import annotations

import dataclasses
import re
import warnings

import pytest
import typer
from typer.testing import CliRunner

from clearclass.cli import app
from clearclass.errors import SettingError
from clearclass.training.config import (
    EXPLORE_SETTINGS,
    LR_FIND_SETTINGS,
    NAMES,
    RENAMED,
    TrainConfig,
    default_text,
    make_config,
)
from tests.conftest import REPO

runner = CliRunner()
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options(command: str) -> dict:
    """The options of a command, by their first flag (hidden ones included)."""
    cmd = typer.main.get_command(app).commands[command]
    return {p.opts[0]: p for p in cmd.params if p.param_type_name == "option"}


def _readme_table() -> dict[str, str]:
    """The README's table of training options: flag -> default, as written."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("| option | default | meaning |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


@pytest.mark.parametrize(("command", "names"), [
    ("train", [n for n in NAMES if n != "data"]),
    ("lr-find", [n for n in LR_FIND_SETTINGS if n not in ("data", "out")]),
    ("explore", list(EXPLORE_SETTINGS)),
])
def test_each_command_has_exactly_its_settings_with_their_help(command, names):
    options = _options(command)
    shown = {flag for flag, o in options.items() if not o.hidden}
    own = {"train": {"--quiet", "--resume", "--processes"},
           "lr-find": {"--quiet", "--out", "--steps"}, "explore": {"--quiet", "--out"}}[command]
    assert shown == {_flag(n) for n in names} | own
    for name in names:
        option = options[_flag(name)]
        assert option.help == FIELDS[name].metadata["help"], name
        if FIELDS[name].default is not None:
            assert option.default == FIELDS[name].default, name


def test_renamed_options_are_hidden_aliases_of_the_new_ones():
    options = _options("train")
    for old, new in RENAMED.items():
        assert options[_flag(old)].hidden, old
        assert new in NAMES
    help_text = runner.invoke(app, ["train", "--help"]).output
    for old in RENAMED:
        assert _flag(old) not in help_text


def test_the_readme_table_lists_every_option_with_its_default():
    table = _readme_table()
    assert list(table) == [_flag(n) for n in NAMES if n != "data"]
    for name in NAMES:
        if name != "data":
            assert table[_flag(name)] == default_text(name), name


def test_no_public_name_is_an_abbreviation():
    """Names say what they do: no lr, pct, mult, bn, probs in a setting or an option."""
    abbreviations = re.compile(r"(^|_)(lr|lrs|pct|mult|bn|probs|cfg|num)(_|$)")
    for name in NAMES:
        assert not abbreviations.search(name), name
    for command in ("train", "lr-find", "explore", "predict", "evaluate"):
        for flag, option in _options(command).items():
            if not option.hidden:
                assert not abbreviations.search(flag[2:].replace("-", "_")), (command, flag)


def test_settings_are_checked_by_name_type_and_value():
    with pytest.raises(SettingError, match="epoch is not a setting. Did you mean epochs"):
        make_config("photos", {"epoch": 3})
    with pytest.raises(SettingError, match="epochs must be int; got '3'"):
        make_config("photos", {"epochs": "3"})
    with pytest.raises(SettingError, match="item_resize must be between 16 and 2048"):
        make_config("photos", {"item_resize": 8})
    with pytest.raises(SettingError, match="model is not a setting here"):
        make_config("photos", {"model": "resnet34"}, allowed=EXPLORE_SETTINGS)
    config = make_config("photos", {"learning_rate": 1, "validation_fraction": 0.25})
    assert config.learning_rate == 1 and config.validation_fraction == 0.25


def test_old_names_still_work_in_python_with_a_warning():
    with pytest.warns(DeprecationWarning) as caught:
        config = make_config("photos", {"base_lr": 0.01, "train_bn": True})
    assert [str(w.message) for w in caught] == [
        "The setting base_lr is now called learning_rate.",
        "The setting train_bn is now called adapt_batchnorm."]
    assert config.learning_rate == 0.01 and config.adapt_batchnorm is True
    with pytest.raises(SettingError, match="old name of learning_rate"):
        make_config("photos", {"base_lr": 0.01, "learning_rate": 0.02})
    # config.json of a run written before the renames still loads, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = TrainConfig.from_dict({"data": "photos", "lr_mult": 50.0, "valid_pct": 0.3})
    assert old.body_slowdown == 50.0 and old.validation_fraction == 0.3


def test_settings_beside_a_config_override_it():
    config = TrainConfig("photos", epochs=5, seed=1)
    again = make_config(config, {"epochs": 2})
    assert (again.epochs, again.seed, config.epochs) == (2, 1, 5)


def test_the_old_cache_switch_still_works(monkeypatch):
    with pytest.warns(DeprecationWarning, match="cache=False is now cache='memory'"):
        assert make_config("photos", {"cache": False}).cache == "memory"
    with pytest.warns(DeprecationWarning):
        assert TrainConfig("photos", cache=True).cache == "disk"
    with pytest.raises(SettingError, match=r"cache must be str; got 1 \(int\)"):  # not True
        TrainConfig("photos", cache=1)
    # config.json of a run written when cache was a switch still loads, without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TrainConfig.from_dict({"data": "photos", "cache": False}).cache == "memory"
        assert TrainConfig.from_dict({"data": "photos", "cache": True}).cache == "disk"
    # On the command line, --no-cache is a hidden flag for --cache memory.
    import clearclass.training

    given = {}
    monkeypatch.setattr(clearclass.training, "train",
                        lambda data, **settings: given.update(settings))
    assert runner.invoke(app, ["train", "photos", "--no-cache", "--quiet"]).exit_code == 0
    assert given["cache"] == "memory"
    assert _options("train")["--no-cache"].hidden
    assert "--no-cache" not in runner.invoke(app, ["train", "--help"]).output
    result = runner.invoke(app, ["train", "photos", "--no-cache", "--cache", "off"])
    assert isinstance(result.exception, SettingError)
    assert result.exception.as_option() == ("--cache was given twice: --no-cache is the old "
                                            "form of --cache memory; give only --cache.")


def test_a_cache_limit_is_a_size_with_a_unit():
    assert TrainConfig("photos", cache_limit="1.5 GiB").cache_limit == "1.5 GiB"
    with pytest.raises(SettingError, match="cache_limit is not a size: '20'. Write a number "
                                           "and a unit"):
        TrainConfig("photos", cache_limit="20")
