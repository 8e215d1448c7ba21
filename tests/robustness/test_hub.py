"""`clearclass push` and `hf-hub:` given what breaks things: bad repository names, damaged
bundles, folders that must not be overwritten, a push stopped midway, and class or data names
that read as YAML, Markdown, HTML or Jinja."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import clearclass
from clearclass import hub
from clearclass.errors import HubError, ModelFileError, SettingError
from tests.conftest import failed, run_cli

huggingface_hub = pytest.importorskip("huggingface_hub")


@pytest.fixture
def bundle(trained_run, tmp_path) -> Path:
    """A copy of the trained run's model folder alone (no run around it)."""
    return Path(shutil.copytree(trained_run / "model", tmp_path / "model"))


@pytest.mark.parametrize("name", ["a/b/c", "../x", "", "name-only", "a/", "/b", "a b/c",
                                  "a/b--c"])
def test_a_bad_repository_name_is_one_line_before_any_work(name, tmp_path):
    # The model does not exist: the name is refused before the model is looked at.
    result = run_cli("push", tmp_path / "missing", name, "--dry-run", "--out", tmp_path / "o")
    failed(result, "OWNER/NAME")
    assert not (tmp_path / "o").exists()


def test_a_bad_hub_reference_is_one_line(tmp_path):
    failed(run_cli("predict", "hf-hub:a/b/c", tmp_path / "x.jpg"), "OWNER/NAME")


def test_a_damaged_model_json_is_the_bundles_own_error(bundle, tmp_path):
    (bundle / "model.json").write_text("{not json")
    failed(run_cli("push", bundle, "owner/name", "--dry-run", "--out", tmp_path / "o"),
           "is not valid JSON")
    assert not (tmp_path / "o").exists()


def test_dry_run_needs_out_and_out_needs_dry_run(bundle):
    failed(run_cli("push", bundle, "owner/name", "--dry-run"), "--out", "dry")
    failed(run_cli("push", bundle, "owner/name", "--out", "somewhere"), "--out", "dry")


def test_a_non_empty_out_is_refused_and_left_as_it_was(bundle, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    failed(run_cli("push", bundle, "owner/name", "--dry-run", "--out", out), "not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    failed(run_cli("push", bundle, "owner/name", "--dry-run", "--out", tmp_path / "file"),
           "file")


def test_an_empty_out_is_filled(bundle, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    hub.push(bundle, "owner/name", dry_run=True, out=out)
    assert (out / "README.md").is_file()


def test_a_dry_run_stopped_midway_leaves_no_half_folder(bundle, tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "model_card", stop)  # after the weights and config are written
    with pytest.raises(KeyboardInterrupt):
        hub.push(bundle, "owner/name", dry_run=True, out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == [bundle]


HOSTILE = [
    ["<script>alert(1)</script>", "</script><!--", 'say "hi" & \'bye\''],
    ["a | b", "key: value # not a comment", "{{ 7*7 }} {% raw %}"],
    ["---", "Ærø — 狗 ✓", "*bold* _it_ `code` [link](x) \\"],
]


@pytest.mark.parametrize("names", HOSTILE, ids=["html", "yaml-table-jinja", "markdown"])
def test_hostile_class_names_stay_text_in_the_card(names, bundle, tmp_path):
    info = json.loads((bundle / "model.json").read_text())
    for entry, name in zip(info["classes"], names):
        entry["name"] = name
    # A data folder whose name reads as YAML: the card's metadata quotes it.
    info["training"]["data"] = str(tmp_path / "photos: #1 'x' \"y\" [z]")
    (bundle / "model.json").write_text(json.dumps(info))
    out = Path(hub.push(bundle, "owner/name", dry_run=True, out=tmp_path / "out"))
    card = huggingface_hub.ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.eval_results[0].dataset_name == "photos: #1 'x' \"y\" [z]"
    text = card.text
    assert "<script" not in text and "</script" not in text
    assert "49" not in text  # {{ 7*7 }} is text, never evaluated
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | " in line]
    class_rows = [r for r in rows if r.split(" | ")[0].lstrip("| ").isdigit()]
    assert len(class_rows) == 3
    for row in class_rows:  # three cells: no `|` of a name splits one
        assert len(row.replace("\\|", "").split("|")) == 5, row
    if "Ærø — 狗 ✓" in names:
        assert "Ærø — 狗 ✓" in text
    # clearclass and timm read the names back exactly.
    assert clearclass.load(out).classes == names
    assert json.loads((out / "config.json").read_text())["label_names"] == names
    assert str(tmp_path) not in (out / "README.md").read_text()


def test_a_missing_hub_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(HubError, match=r"pip install 'clearclass\[hub\]'"):
        clearclass.load("hf-hub:owner/name")


def test_push_checks_its_arguments():
    with pytest.raises(SettingError, match="repo_id"):
        hub.push("runs/x", 42)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="model_dir"):
        hub.push(None, "owner/name")  # type: ignore[arg-type]
    with pytest.raises(ModelFileError):
        hub.push("no-such-folder", "owner/name", dry_run=True, out="never-written")
    assert not Path("never-written").exists()


def test_a_multi_label_runs_damaged_figures_are_left_out_of_the_card(multi_label_run,
                                                                     tmp_path):
    """The card of a multi-label run whose report holds figures that are not fractions (text
    that reads as YAML, NaN, 7, true) and whose metrics.csv is cut short: those figures are
    left out, the rest is said, and the card parses as the Hub parses it."""
    run = Path(shutil.copytree(multi_label_run, tmp_path / "run"))
    report = run / "report"
    report.mkdir(exist_ok=True)  # another test may have evaluated the shared run
    (report / "results.json").write_text(json.dumps({
        "task": "multi", "photos": 8, "accuracy": 0.75, "tta_accuracy": True,
        "f1_micro": "0.9\nmetrics: [hacked]", "tta_f1_micro": float("nan"), "f1_macro": 7,
        "tta_f1_macro": 0.5, "mean_ap": None, "tta_mean_ap": -0.1}))
    metrics = run / "metrics.csv"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n1,0.5\n")
    out = Path(hub.push(run, "owner/stripes", dry_run=True, out=tmp_path / "out"))
    card = huggingface_hub.ModelCard.load(out / "README.md")
    figures = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert figures == {
        "Validation accuracy per label (accuracy_multi)": pytest.approx(
            clearclass.load(out).info.training["valid_accuracy"], abs=1e-4),
        "Validation F1 macro (the mean of the labels' F1) with test-time augmentation": 0.5}
    text = card.text
    assert "hacked" not in text and "| nan |" not in text
    assert "| Accuracy per label (accuracy_multi; `clearclass evaluate`, 8 photos) | 75.00% |" \
        in text
    assert "| Validation accuracy per label (accuracy_multi)" in text
    assert "F1 micro (over every photo-label pair)" not in text  # neither figure is one
