"""`clearclass push` and `hf-hub:` models, all offline: the folder a push uploads (checked
as the Hub and timm will read it), the Hugging Face cache read with HF_HUB_OFFLINE=1, and the
upload itself against a local server that records the requests huggingface_hub makes."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clearclass
from clearclass import hub
from tests.conftest import COLOURS, failed, make_photo, run_cli
from tests.hub_helpers import FakeHub, fill_cache

huggingface_hub = pytest.importorskip("huggingface_hub")

UPLOADED = {"model.safetensors", "model.json", "model.onnx", "config.json", "README.md"}


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory) -> Path:
    """A copy of the trained run, evaluated with TTA (so RUN/report has what the card shows)."""
    from clearclass import progress

    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("hub") / "run")
    with progress.quiet():
        clearclass.evaluate(run, tta=True, device="cpu")
    return run


@pytest.fixture(scope="module")
def dry(evaluated_run) -> Path:
    """What `push RUN owner/colours` uploads, written by --dry-run."""
    return Path(hub.push(evaluated_run, "owner/colours", dry_run=True,
                         out=evaluated_run.parent / "dry"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return make_photo(tmp_path_factory.mktemp("photo") / "red.jpg", COLOURS["red"],
                      size=(61, 45), seed=7)


def _private_texts(run: Path) -> list[str]:
    """What must appear in no uploaded file: the temporary folder, the run's and the data's
    paths, the home folder."""
    texts = [str(run.parent.parent), str(run), str(run.resolve())]
    data = json.loads((run / "config.json").read_text())["config"]["data"]
    texts.append(data)
    home = str(Path.home())
    if len(home) > 1:
        texts.append(home)
    return texts


def test_a_dry_run_writes_the_bundle_config_and_card_without_private_paths(dry, evaluated_run):
    assert {p.name for p in dry.iterdir()} == UPLOADED
    for file in dry.iterdir():
        content = file.read_bytes()
        for text in _private_texts(evaluated_run):
            assert text.encode() not in content, (file.name, text)
    info = json.loads((dry / "model.json").read_text())
    assert info["training"]["data"] == "colours"
    # The weights and model.onnx are the bundle's, byte for byte, and model.json still
    # vouches for both: clearclass loads the folder, ONNX Runtime included.
    for name in ("model.safetensors", "model.onnx"):
        assert (dry / name).read_bytes() == (evaluated_run / "model" / name).read_bytes()
    uploaded = clearclass.load(dry, backend="onnx")
    assert uploaded.classes == ["blue", "green", "red"]


def test_the_card_parses_as_the_hub_reads_it_and_says_what_the_run_did(dry):
    card = huggingface_hub.ModelCard.load(dry / "README.md")
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.library_name == "timm"
    assert "clearclass" in card.data.tags
    assert card.data.metrics == ["accuracy"]
    assert [r.metric_type for r in card.data.eval_results] == ["accuracy", "accuracy"]
    assert [r.metric_name for r in card.data.eval_results] == [
        "Validation accuracy", "Validation accuracy with test-time augmentation"]
    assert [r.metric_config for r in card.data.eval_results] == [None, None]
    assert card.data.eval_results[0].dataset_name == "colours"
    text = card.text
    for line in ("| 0 | blue | blue |", "| Training photos | 48 |", "| Validation photos | 12 |",
                 "Accuracy with test-time augmentation", "| data | colours |",
                 "clearclass predict hf-hub:owner/colours photo.jpg",
                 'clearclass.load("hf-hub:owner/colours")',
                 'timm.create_model("hf-hub:owner/colours", pretrained=True)'):
        assert line in text, line
    assert "| out |" not in text and "| device |" not in text  # how this machine ran


def test_timm_loads_the_folder_as_the_fine_tuned_network_with_its_class_names(dry):
    import timm
    import torch

    model = timm.create_model("local-dir:" + str(dry), pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == ["blue", "green", "red"]
    assert tuple(model.pretrained_cfg["input_size"]) == (3, 32, 32)
    reference = clearclass.load(dry, backend="torch").network.model
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-6)


def _run_onnx_snippet(folder: Path, photo: Path, repo: str) -> tuple[dict, str]:
    """The card's ONNX Runtime snippet, run as written (the download replaced by the
    folder): its variables, and what it printed."""
    text = (folder / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
                if "onnxruntime" in b)
    download = f'snapshot_download("{repo}", allow_patterns=["model.onnx", "model.json"])'
    assert download in code
    code = code.replace(download, repr(str(folder))).replace('"photo.jpg"', repr(str(photo)))
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace, printed.getvalue()


def test_the_cards_onnx_runtime_snippet_predicts_as_clearclass_does(dry, photo):
    namespace, printed = _run_onnx_snippet(dry, photo, "owner/colours")
    assert 'session.run(["probabilities"]' in (dry / "README.md").read_text()
    classifier = clearclass.load(dry, backend="onnx")
    np.testing.assert_allclose(namespace["p"], classifier.predict_proba([photo])[0], atol=1e-5)
    assert printed.split()[0] == classifier.predict(photo).class_name


@pytest.fixture(scope="module")
def multi_label_dry(multi_label_run, tmp_path_factory) -> Path:
    """What `push` uploads for the multi-label model, its thresholds such that the red photo
    gets red (over 0) and not blue (at 1)."""
    from tests.conftest import with_thresholds

    folder = shutil.copytree(multi_label_run / "model", tmp_path_factory.mktemp("ml") / "model")
    with_thresholds(folder, [1.0, 0.5, 0.0])
    return Path(hub.push(folder, "owner/stripes", dry_run=True, out=folder.parent / "dry"))


def test_a_multi_label_card_gives_the_set_over_the_thresholds_of_model_json(multi_label_dry,
                                                                           photo):
    text = (multi_label_dry / "README.md").read_text()
    for line in ("A multi-label image classifier of 3 labels", "| 0 | blue | blue | 1.000 |",
                 "| 2 | red | red | 0.000 |", "outputs `logits` and `probabilities` (each "
                 "label's sigmoid)", "p = model(x).sigmoid()[0]"):
        assert line in text, line
    assert "softmax" not in text
    # The snippet reads the thresholds from model.onnx's metadata, where the uploaded copy
    # holds model.json's: tuned here after the export, so written into the copy (the
    # bundle's own file untouched), which the uploaded model.json vouches for.
    from clearclass.bundle import read_info, sha256
    from clearclass.onnx_runtime import read_metadata

    assert 'thresholds = json.loads(metadata["thresholds"])' in text
    assert read_metadata(multi_label_dry / "model.onnx").thresholds == [1.0, 0.5, 0.0]
    bundle = multi_label_dry.parent / "model"
    assert read_metadata(bundle / "model.onnx").thresholds != [1.0, 0.5, 0.0]
    assert read_info(multi_label_dry).checksums["model.onnx"] == sha256(
        multi_label_dry / "model.onnx") != sha256(bundle / "model.onnx")
    namespace, printed = _run_onnx_snippet(multi_label_dry, photo, "owner/stripes")
    classifier = clearclass.load(multi_label_dry, backend="onnx")
    np.testing.assert_allclose(namespace["p"], classifier.predict_proba([photo])[0], atol=1e-5)
    expected = [t["label"] for t in classifier.predict(photo).labels]
    assert "red" in expected and "blue" not in expected
    assert sorted(ast.literal_eval(printed)) == sorted(expected)  # the list it printed


@pytest.fixture(scope="module")
def multi_label_card(multi_label_run, tmp_path_factory) -> tuple:
    """The card `push` writes for a copy of the multi-label run, evaluated with TTA, and
    the run."""
    from clearclass import progress

    run = shutil.copytree(multi_label_run, tmp_path_factory.mktemp("ml-run") / "run")
    with progress.quiet():
        clearclass.evaluate(run, tta=True, device="cpu")
    dry = Path(hub.push(run, "owner/stripes", dry_run=True, out=run.parent / "dry"))
    return huggingface_hub.ModelCard.load(dry / "README.md"), run


def test_a_multi_label_card_names_accuracy_multi_and_gives_f1_and_map(multi_label_card):
    """The model-index calls accuracy_multi what it is (an accuracy of every photo-label
    decision, not of photos), and gives the F1 and mAP the run measured as their own
    metrics: training's last epoch (metrics.csv), and with TTA (RUN/report/results.json)."""
    from clearclass.evaluation.results import read_results
    from clearclass.run_folder import RunFolder

    card, run = multi_label_card
    last = RunFolder(run).history()[-1]
    report = read_results(run / "report")
    measured = {"accuracy": last.accuracy, **last.scores}
    expected = [(f"Validation {words}", kind, config, round(measured[key], 4))
                for key, kind, config, words in hub.MULTI_LABEL_METRICS]
    expected += [(f"Validation {words} with test-time augmentation", kind, config,
                  round(report[f"tta_{key}"], 4))
                 for key, kind, config, words in hub.MULTI_LABEL_METRICS]
    assert [(r.metric_name, r.metric_type, r.metric_config, r.metric_value)
            for r in card.data.eval_results] == expected
    assert expected[0][:2] == ("Validation accuracy per label (accuracy_multi)", "accuracy")
    assert expected[1][1:3] == ("f1", "micro") and expected[2][1:3] == ("f1", "macro")
    assert card.data.metrics == ["accuracy", "f1"]
    names = [r.metric_name for r in card.data.eval_results]
    assert "Validation accuracy" not in names
    assert not any(n.startswith("Validation accuracy with") for n in names)
    text = card.text
    for line in (f"| Validation F1 micro (over every photo-label pair), end of training | "
                 f"{last.scores['f1_micro']:.3f} |",
                 f"| Validation mean average precision (mAP), end of training | "
                 f"{last.scores['mean_ap']:.3f} |",
                 f"| Accuracy per label (accuracy_multi; `clearclass evaluate`, "
                 f"{report['photos']} photos) | {100 * report['accuracy']:.2f}% |",
                 f"| F1 macro (the mean of the labels' F1) with test-time augmentation | "
                 f"{report['tta_f1_macro']:.3f} |"):
        assert line in text, line
    assert "| Accuracy (`clearclass evaluate`" not in text


def test_the_card_of_a_model_onnx_with_only_logits_computes_the_probabilities(
        multi_label_run, trained_run, photo, tmp_path):
    """A bundle exported before model.onnx had probabilities: its card's snippet reads the
    logits and applies the task's softmax or sigmoids itself."""
    import torch

    from clearclass.bundle import load_bundle, record_onnx
    from clearclass.onnx_runtime import export_module

    for task, run in (("single", trained_run), ("multi", multi_label_run)):
        folder = shutil.copytree(run / "model", tmp_path / task / "model")
        model, _ = load_bundle(folder)
        export_module(model, torch.randn(2, 3, 32, 32), folder / "model.onnx")
        record_onnx(folder)
        dry = Path(hub.push(folder, "owner/old", dry_run=True, out=tmp_path / task / "dry"))
        text = (dry / "README.md").read_text()
        assert 'session.run(["logits"]' in text and "output `logits`" in text
        # Nor metadata: a multi-label card's snippet reads the thresholds from model.json.
        assert "custom_metadata_map" not in text and "metadata: `task`" not in text
        if task == "multi":
            assert 'q >= c["threshold"]' in text
        namespace, _ = _run_onnx_snippet(dry, photo, "owner/old")
        expected = clearclass.load(dry, backend="torch").predict_proba([photo])[0]
        np.testing.assert_allclose(namespace["p"], expected, atol=1e-5)


def test_push_uploads_that_folder_to_the_hub_as_huggingface_hub_does(evaluated_run, tmp_path):
    """The whole push, as a user runs it, against a local server standing in for the Hub."""
    with FakeHub() as server:
        result = run_cli("push", evaluated_run / "model", "owner/colours", "--private",
                         in_process=False, env=_hub_env(tmp_path, server.url))
    assert result.returncode == 0, result.stderr
    assert f"{server.url}/owner/colours" in result.stdout
    calls = [(method, path.split("?")[0]) for method, path, _, _ in server.requests]
    assert calls == [("POST", "/api/repos/create"),
                     ("POST", "/api/validate-yaml"),
                     ("POST", "/api/models/owner/colours/preupload/main"),
                     ("POST", "/api/models/owner/colours/commit/main")], calls
    created = json.loads(server.requests[0][3])
    assert created == {"name": "colours", "organization": "owner", "visibility": "private",
                       "type": "model"}
    for _, _, headers, _ in server.requests:
        assert headers.get("authorization") == "Bearer hf_test"
        assert "clearclass/" in headers.get("user-agent", "")
    validated = json.loads(server.requests[1][3])
    assert validated["repoType"] == "model" and validated["content"].startswith("---\n")
    files = server.committed_files()
    assert files["README.md"].decode() == validated["content"]
    assert set(files) == UPLOADED
    for text in _private_texts(evaluated_run):
        assert all(text.encode() not in content for content in files.values()), text
    assert json.loads(files["model.json"])["training"]["data"] == "colours"
    assert files["model.safetensors"] == (evaluated_run / "model" / "model.safetensors"
                                          ).read_bytes()


def test_a_refused_token_is_one_line_and_exit_status_1(evaluated_run, tmp_path):
    with FakeHub(refuse=401) as server:
        result = run_cli("push", evaluated_run, "owner/colours", in_process=False,
                         env=_hub_env(tmp_path, server.url))
    failed(result, "401", "hf auth login")
    # create_repo with exist_ok asks whether the repository exists after a 401; nothing is
    # uploaded.
    assert [(m, p.split("?")[0]) for m, p, _, _ in server.requests] == [
        ("POST", "/api/repos/create"), ("GET", "/api/models/owner/colours")]


def test_no_token_is_one_line_before_anything_is_prepared(evaluated_run, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(hub, "prepare", _never)
    failed(run_cli("push", evaluated_run, "owner/colours"), "hf auth login", "HF_TOKEN")


def _never(*args, **kwargs):
    raise AssertionError("called")


def _hub_env(tmp_path: Path, endpoint: str) -> dict:
    """A Hub at `endpoint` (read by huggingface_hub when imported: a new process), the token
    hf_test, and a Hugging Face home of the test's own (no stored token)."""
    return {"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_test", "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


# --- hf-hub:OWNER/NAME: fetched once into the cache, offline afterwards --------------------


def test_predict_reads_a_hub_model_from_the_cache_offline(dry, photo, tmp_path):
    """`clearclass predict hf-hub:OWNER/NAME` as a user runs it, HF_HUB_OFFLINE=1."""
    cache = tmp_path / "hub-cache"
    fill_cache(cache, "owner/colours", dry)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_cli("predict", "hf-hub:owner/colours", photo, "--json", in_process=False,
                     env=env)
    assert result.returncode == 0, result.stderr
    expected = clearclass.load(dry).predict(photo)
    assert json.loads(result.stdout)[0]["label"] == expected.class_name
    missing = run_cli("predict", "hf-hub:owner/other", photo, in_process=False, env=env)
    failed(missing, "hf-hub:owner/other", "HF_HUB_OFFLINE", "connect")


def test_load_takes_a_hub_model_from_the_cache(dry, photo, tmp_path, monkeypatch):
    """In this process: huggingface_hub's constants, read at its import, set as the
    environment would have set them."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    snapshot = fill_cache(cache, "owner/colours", dry)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    classifier = clearclass.load("hf-hub:owner/colours")
    assert classifier.path == snapshot
    assert classifier.classes == ["blue", "green", "red"]
    assert classifier.predict(photo).class_name == clearclass.load(dry).predict(photo).class_name


@pytest.mark.slow  # a server in a real process
def test_serve_serves_a_hub_model_from_the_cache_offline(dry, photo, tmp_path, monkeypatch):
    """`clearclass serve hf-hub:OWNER/NAME` as a user starts it, HF_HUB_OFFLINE=1."""
    import httpx

    from tests.conftest import Server

    cache = tmp_path / "hub-cache"
    fill_cache(cache, "owner/colours", dry)
    for name, value in {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                        "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(name, value)
    server = Server("hf-hub:owner/colours", tmp_path)
    try:
        with open(photo, "rb") as f:
            answer = httpx.post(server.url + "/predict", files={"file": ("red.jpg", f)},
                                timeout=60)
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == clearclass.load(dry).predict(photo).class_name


def test_timm_loads_the_hub_name_from_the_cache_offline(dry, tmp_path):
    """timm.create_model("hf-hub:OWNER/NAME", pretrained=True), as the card says, from the
    cache that clearclass fills (a fresh process: huggingface_hub reads its cache's place at
    import)."""
    cache = tmp_path / "hub-cache"
    fill_cache(cache, "owner/colours", dry)
    code = ("import timm, torch\n"
            "m = timm.create_model('hf-hub:owner/colours', pretrained=True).eval()\n"
            "print(m.pretrained_cfg['label_names'])\n"
            "torch.save(m(torch.ones(1, 3, 32, 32)).detach(), 'logits.pt')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300,
                          env={**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                               "HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['blue', 'green', 'red']"
    import torch

    reference = clearclass.load(dry, backend="torch").network.model.eval()
    with torch.no_grad():
        expected = reference(torch.ones(1, 3, 32, 32))
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), expected, atol=1e-6)
