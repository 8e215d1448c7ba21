"""Share a model on the Hugging Face Hub: `clearclass push RUN/model OWNER/NAME`.

The folder uploaded is prepared here first (`prepare`), the same for a real push and for
`--dry-run --out DIR`, which writes it and stops:

    model.safetensors  the bundle's weights, byte for byte. clearclass saves timm's own
                       state dict (no folded BatchNorm, no wrapped head), so this one file
                       is what both `clearclass.load` and timm load: no second copy.
    model.json         the bundle's description with every absolute path reduced to its
                       last name (training.data is the data folder's path). Only the
                       `training` record changes: the SHA-256 it keeps are those of the
                       weights and of model.onnx, which are copied unchanged, so the
                       uploaded model.json still loads with `clearclass.load`.
    model.onnx         when the bundle has one that matches the checksum model.json records
                       (outputs "logits" and "probabilities"; "logits" alone in a file
                       exported before the probabilities were added), byte for byte, unless
                       model.json's thresholds were changed since the export: then the copy's
                       metadata gets them (and model.json its new SHA-256), so that the file
                       alone decides as clearclass does.
    config.json        timm's configuration, written by timm's own `save_config_for_hf`
                       (architecture, num_classes, label_names, pretrained_cfg with the
                       bundle's input size, mean, std and resize), so that
                       `timm.create_model("hf-hub:OWNER/NAME", pretrained=True)` builds the
                       fine-tuned network with its class names.
    README.md          the model card (templates/model_card.md): the Hub's YAML metadata
                       (huggingface_hub's ModelCardData), the classes, data, split,
                       accuracies and most confused pairs of the run, its settings, and how
                       to predict with clearclass, timm and ONNX Runtime.

Nothing private leaves the machine: no file carries an absolute path (the data folder is
named by its name), and the prepared text is checked for the home folder and the run's
paths before anything is uploaded.

huggingface_hub finds the token (HF_TOKEN, or `hf auth login`) and the endpoint
(HF_ENDPOINT); it is imported only here and in `hub_download`, so the `hub` extra is needed
only to share or fetch models.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import clearclass
from clearclass import fileio, pages, progress
from clearclass.bundle import (
    INFO_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    ModelInfo,
    bundle_folder,
    load_bundle,
    sha256,
)
from clearclass.data.sources import data_name
from clearclass.errors import ClearclassError, HubError, SettingError, check_path
from clearclass.hub_download import HUB_PREFIX, check_repo_id, hub_library, is_hub_reference
from clearclass.onnx_runtime import output_names, read_metadata, write_metadata

if TYPE_CHECKING:
    from clearclass.run_folder import RunFolder

CARD_FILE = "README.md"
TIMM_CONFIG_FILE = "config.json"
UPLOADED_FILES = (WEIGHTS_FILE, INFO_FILE, ONNX_FILE, TIMM_CONFIG_FILE, CARD_FILE)
# clearclass's resize methods as timm's crop modes (timm.data.transforms_factory).
TIMM_CROP_MODES = {"crop": "center", "squish": "squash", "pad": "border"}
RESIZE_WORDS = {
    "crop": "the short side resized to the input size (bilinear), then the centre square",
    "squish": "resized to the square (bilinear), aspect not kept",
    "pad": "the long side resized to the input size (bilinear), black borders to a square",
}
CONFUSED_SHOWN = 10
# What a multi-label model's card reports, as key (metrics.csv's column, results.json's key),
# the Hub's metric type (an id of https://hf.co/metrics where there is one), its config, and
# the name shown: accuracy_multi is an accuracy, but of every (photo, label) decision, not of
# photos, so its name says which.
MULTI_LABEL_METRICS = (
    ("accuracy", "accuracy", None, "accuracy per label (accuracy_multi)"),
    ("f1_micro", "f1", "micro", "F1 micro (over every photo-label pair)"),
    ("f1_macro", "f1", "macro", "F1 macro (the mean of the labels' F1)"),
    ("mean_ap", "mean_average_precision", None, "mean average precision (mAP)"),
)
# Settings of RUN/config.json that say how this machine ran, not how the model was trained.
MACHINE_SETTINGS = {"workers", "cache", "cache_limit", "device", "out", "overwrite",
                    "checkpoint_minutes", "onnx"}
# An absolute path inside a text (`file: /home/me/w.safetensors`, C:\\Users\\me, ~/x,
# file:///...): replaced by its last name. A URL's path (https://host/a) is not one.
_ABSOLUTE_PATH = re.compile(r"file://\S+|(?<![\w.:/\\~])(?:~|[A-Za-z]:)?[/\\][^\s'\"(),;<>]*")


def push(model_dir: str | Path, repo_id: str, private: bool = False, dry_run: bool = False,
         out: str | Path | None = None) -> str:
    """Upload a model bundle to the Hugging Face Hub as OWNER/NAME, with a model card and
    timm's config.json; returns the model's URL (with `dry_run`, the folder written).

    `model_dir`: a bundle folder (RUN/model) or a run folder. `private`: a new repository
    is created private (an existing one keeps its visibility). `dry_run`: write exactly the
    folder that would be uploaded into `out` (a new or empty folder) and send nothing. The
    token is huggingface_hub's: HF_TOKEN, or `hf auth login`.

    Example:
        folder = push("runs/dogs/model", "you/dog-breeds", dry_run=True, out="dogs-hub-preview")
        print(sorted(p.name for p in Path(folder).iterdir()))
    """
    check_path("model_dir", model_dir, "a model folder (RUN/model) or a run folder")
    if not isinstance(repo_id, str):
        raise SettingError("repo_id", f"must be OWNER/NAME (a str); got {repo_id!r}.")
    check_repo_id(repo_id)  # before any work: a typo costs nothing
    if dry_run and out is None:
        raise SettingError("out", "is needed with dry_run: the folder to write what would be "
                                  "uploaded into (a new or empty folder).")
    if out is not None and not dry_run:
        raise SettingError("out", "is only for dry_run (a real push writes into a temporary "
                                  "folder); give dry_run too, or leave out out.")
    if out is not None:
        check_path("out", out, "a folder")
    folder = bundle_folder(model_dir)
    if dry_run:
        target = _empty_folder(Path(out).expanduser())
        # Written beside and swapped in whole: an interrupted dry run leaves no half folder.
        with fileio.changing(target, start_empty=True) as new:
            prepare(folder, repo_id, new)
        return str(target)
    hub = hub_library()
    if hub.get_token() is None:
        raise HubError("No Hugging Face token: log in with `hf auth login` (a token with write "
                       "access, from https://huggingface.co/settings/tokens), or set HF_TOKEN.")
    with tempfile.TemporaryDirectory(prefix="clearclass-push-") as tmp:
        staged = Path(tmp) / "upload"
        staged.mkdir()
        prepare(folder, repo_id, staged)
        api = hub.HfApi(library_name="clearclass", library_version=clearclass.__version__)
        with _hub_errors(repo_id, hub):
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            progress.say(f"Uploading {', '.join(sorted(p.name for p in staged.iterdir()))} to "
                         f"{repo_id}")
            api.upload_folder(repo_id=repo_id, folder_path=staged, repo_type="model",
                              commit_message=f"Upload {Path(folder).name} with clearclass "
                                             f"{clearclass.__version__}")
    return str(url)


def _empty_folder(folder: Path) -> Path:
    """`folder` when it is new or empty: a dry run never deletes a user's files."""
    if folder.exists() and not folder.is_dir():
        raise SettingError("out", f"names a file, {folder}; give a new or empty folder.")
    if folder.is_dir() and any(folder.iterdir()):
        raise SettingError("out", f"{folder} is not empty; give a new or empty folder (nothing "
                                  "in it is deleted).")
    return folder


@contextlib.contextmanager
def _hub_errors(repo_id: str, hub: Any) -> Iterator[None]:
    """huggingface_hub's errors as one line that says what to do."""
    import httpx

    errors = hub.errors
    endpoint = hub.constants.ENDPOINT
    try:
        yield
    except errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise HubError(f"{endpoint} refused the token (401 Unauthorized): log in again with "
                           "`hf auth login`, or set HF_TOKEN to a valid token.") from None
        if status == 403:
            raise HubError(f"The token may not write to {repo_id} (403 Forbidden): use a token "
                           "with write access (https://huggingface.co/settings/tokens) of an "
                           f"account that may create models under {repo_id.split('/')[0]}.") \
                from None
        raise HubError(f"The Hugging Face Hub refused the upload of {repo_id} "
                       f"({_first_line(e)}).") from None
    except ValueError as e:  # upload_folder's check of README.md's metadata by the Hub
        raise HubError(f"The Hugging Face Hub refused the upload of {repo_id} "
                       f"({_first_line(e)}); please report this.") from None
    except errors.LocalTokenNotFoundError:
        raise HubError("No Hugging Face token: log in with `hf auth login`, or set HF_TOKEN.") \
            from None
    except (httpx.HTTPError, OSError) as e:
        raise HubError(f"Could not reach {endpoint} ({type(e).__name__}: {_first_line(e)}); "
                       "check the network and retry.") from None


# --- the folder uploaded ------------------------------------------------------------------------

def prepare(model_dir: str | Path, repo_id: str, target: str | Path) -> Path:
    """Write into `target` (an existing, empty folder) the files `push` uploads for the
    bundle `model_dir` as `repo_id`; returns `target`."""
    folder = bundle_folder(model_dir)
    target = Path(target)
    model, info = load_bundle(folder)  # the weights checked against their SHA-256
    shutil.copyfile(folder / WEIGHTS_FILE, target / WEIGHTS_FILE)
    data = json.loads((folder / INFO_FILE).read_bytes().decode("utf-8-sig"))
    data["training"] = without_paths(data.get("training", {}))
    onnx = folder / ONNX_FILE
    if onnx.is_file() and info.checksums.get(ONNX_FILE) == sha256(onnx):
        shutil.copyfile(onnx, target / ONNX_FILE)
        described = read_metadata(target / ONNX_FILE)
        # model.json's thresholds decide, and may have been tuned after the export; the card
        # tells an ONNX Runtime user to read them from the file, which must then hold them.
        if described is not None and described.thresholds != info.thresholds:
            write_metadata(target / ONNX_FILE, info)
            data["onnx"]["sha256"] = sha256(target / ONNX_FILE)
    else:
        if onnx.is_file():
            progress.warn(f"{onnx} is left out: it does not match the checksum {INFO_FILE} "
                          f"records (`clearclass export {folder}` writes it again).")
        data.pop("onnx", None)  # model.json vouches only for files that travel with it
    ModelInfo.from_json(data, target / INFO_FILE)  # what clearclass.load will read
    fileio.write_json(target / INFO_FILE, data)
    _write_timm_config(model, info, target / TIMM_CONFIG_FILE)
    facts = run_facts(folder, info)
    has_onnx = (target / ONNX_FILE).is_file()
    fileio.write_text(target / CARD_FILE, model_card(
        info, repo_id, facts, has_onnx=has_onnx,
        onnx_probabilities=has_onnx and "probabilities" in output_names(target / ONNX_FILE),
        onnx_metadata=has_onnx and read_metadata(target / ONNX_FILE) is not None))
    _check_nothing_private(target, folder, info)
    return target


def _write_timm_config(model: Any, info: ModelInfo, path: Path) -> None:
    """config.json as timm's `push_to_hf_hub` writes it, with the bundle's preprocessing."""
    from timm.models._hub import save_config_for_hf

    size = info.item_resize
    save_config_for_hf(model, str(path), model_config={"label_names": list(info.class_names)},
                       data_config={"input_size": (3, size, size), "mean": list(info.mean),
                                    "std": list(info.std), "interpolation": "bilinear",
                                    "crop_pct": 1.0,
                                    "crop_mode": TIMM_CROP_MODES[info.resize_method]})
    config = json.loads(path.read_text(encoding="utf-8"))
    # The tag names the ImageNet weights timm would download for the architecture, which
    # these are not; a timm loader would show it as this model's.
    config["pretrained_cfg"].pop("tag", None)
    # Not passed through without_paths: label_names are class names, which may hold a "/"
    # ("</script>"); timm's filter_pretrained_cfg already leaves out the weights' source
    # (file, url), and _check_nothing_private checks the result.
    fileio.write_json(path, config)


def _check_nothing_private(target: Path, folder: Path, info: ModelInfo) -> None:
    """The last guard: no prepared file holds the home folder or the run's own paths."""
    private = {str(folder.resolve().parent), str(folder.resolve())}
    home = str(Path.home())
    if len(home) > 1:
        private.add(home)
    data = info.training.get("data")
    if isinstance(data, str) and Path(data).is_absolute():
        private.add(data)
    for path in target.iterdir():
        content = path.read_bytes()
        for text in private:
            if text.encode("utf-8") in content:
                raise HubError(f"{path.name} would carry the private path {text}, so nothing "
                               "was uploaded; please report this.")


def without_paths(value: Any) -> Any:
    """`value` (JSON: dicts, lists, strings) with every absolute path in a string replaced by
    its last name: `/home/me/photos` becomes `photos`.

    Example:
        print(without_paths({"data": "/home/me/photos", "pretrained": "file: C:\\\\w.pth"}))
    """
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda m: _last_name(m.group()), value)
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    return value


def _last_name(path: str) -> str:
    path = path.removeprefix("file://")
    return (PureWindowsPath(path) if "\\" in path else PurePosixPath(path)).name or "folder"


# --- the model card --------------------------------------------------------------------------

@dataclass
class RunFacts:
    """What the card says of the run the model came from; None where it is not known."""

    data_name: str | None = None
    train_photos: int | None = None
    valid_photos: int | None = None
    valid_accuracy: float | None = None
    pretrained: str | None = None
    # A multi-label run's f1_micro, f1_macro and mean_ap at the end of training (metrics.csv's
    # last row); empty for a single-label run, or a bundle outside its run folder.
    valid_scores: dict[str, float | None] = field(default_factory=dict)
    # accuracy, photos, tta_accuracy; a multi-label run's also f1_micro, f1_macro, mean_ap and
    # their tta_ twins
    evaluation: dict[str, Any] | None = None
    confused: list[dict[str, Any]] = field(default_factory=list)
    settings: list[tuple[str, str]] = field(default_factory=list)


def run_facts(folder: Path, info: ModelInfo) -> RunFacts:
    """The facts of the run: model.json's training record, and when the bundle is RUN/model,
    RUN/config.json's settings and the evaluation in RUN/report/ (`clearclass evaluate`)."""
    training = info.training
    facts = RunFacts(
        data_name=data_name(training.get("data")),
        train_photos=_count(training.get("train_photos")),
        valid_photos=_count(training.get("valid_photos")),
        valid_accuracy=_fraction(training.get("valid_accuracy")),
        pretrained=without_paths(training["pretrained"])
        if isinstance(training.get("pretrained"), str) else None)
    run = Path(folder).resolve().parent
    if not (run / "config.json").is_file():
        return facts  # a bundle on its own: model.json is all there is
    from clearclass.run_folder import RunFolder

    try:
        settings = RunFolder(run).record().get("config", {})
    except ClearclassError:
        settings = {}  # a damaged config.json costs the card its settings, not the push
    if isinstance(settings, dict):
        facts.data_name = facts.data_name or data_name(settings.get("data"))
        facts.settings = [(name, _setting_text(name, value)) for name, value in settings.items()
                          if name not in MACHINE_SETTINGS]
    if info.task == "multi":
        facts.valid_scores = _last_scores(RunFolder(run), training.get("epochs_done"))
    facts.evaluation, facts.confused = _evaluation(run / "report", training.get("run_id"))
    return facts


def _last_scores(run: RunFolder, epochs_done: object) -> dict[str, float | None]:
    """A multi-label run's F1 and mAP of its last epoch (metrics.csv), when that epoch is the
    bundle's (model.json's epochs_done); {} otherwise, or when metrics.csv is damaged."""
    try:
        history = run.history()
    except ClearclassError:
        return {}
    if not history or len(history) != epochs_done:
        return {}
    return {key: _fraction(history[-1].scores.get(key)) for key, *_ in MULTI_LABEL_METRICS[1:]}


def _setting_text(name: str, value: Any) -> str:
    if name in ("data", "weights") and isinstance(value, str):
        return data_name(value) or "" if name == "data" else _last_name(value)
    if value is None:
        return "default"
    return str(without_paths(value)) if not isinstance(value, (dict, list)) else \
        json.dumps(without_paths(value), ensure_ascii=False)


def _evaluation(report: Path, run_id: object = None
                ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The accuracy, TTA accuracy and most confused pairs `clearclass evaluate` wrote into
    RUN/report/ (results.json, most_confused.csv); (None, []) without one, or when the
    report is of another model than the bundle's (another run_id)."""
    from clearclass.evaluation.results import read_results

    try:
        results = read_results(report)
    except ClearclassError:
        results = {}
    if run_id is not None and results.get("run_id") not in (None, run_id):
        return None, []  # a report of an earlier model: its figures are not this one's
    evaluation = None
    if _fraction(results.get("accuracy")) is not None:
        evaluation = {"accuracy": results["accuracy"], "photos": _count(results.get("photos")),
                      "tta_accuracy": _fraction(results.get("tta_accuracy"))}
        if results.get("task") == "multi":  # its F1 and mAP, with TTA too
            for key, *_ in MULTI_LABEL_METRICS[1:]:
                evaluation[key] = _fraction(results.get(key))
                evaluation[f"tta_{key}"] = _fraction(results.get(f"tta_{key}"))
    confused = []
    for r in _csv_rows(report / "most_confused.csv")[:CONFUSED_SHOWN]:
        try:
            confused.append({"actual": r["actual"], "predicted": r["predicted"],
                             "count": int(r["count"]), "rate": f"{float(r['rate']):.0%}"})
        except (KeyError, ValueError):
            break
    return evaluation, confused


def _csv_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return [{k: fileio.read_cell(v or "") for k, v in row.items() if k is not None}
                    for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fraction(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    return float(value) if ok else None


def model_card(info: ModelInfo, repo_id: str, facts: RunFacts, has_onnx: bool,
               onnx_probabilities: bool = True, onnx_metadata: bool = True) -> str:
    """README.md: the Hub's YAML metadata, then the card (templates/model_card.md).
    `onnx_probabilities`: the model.onnx uploaded has the "probabilities" output (one
    exported before it was added has only "logits", and the card's snippet computes them).
    `onnx_metadata`: it says its task, classes and thresholds (`onnx_runtime.read_metadata`;
    the snippet of one exported before reads the thresholds from model.json)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData
    from markupsafe import Markup

    name = repo_id.split("/")[1]
    results = []
    # (name, metric type, config, value) of each figure the model-index gives.
    if info.task == "multi":
        measured = {"accuracy": facts.valid_accuracy, **facts.valid_scores}
        tta = facts.evaluation or {}
        figures = [(f"Validation {words}", kind, config, measured.get(key))
                   for key, kind, config, words in MULTI_LABEL_METRICS]
        figures += [(f"Validation {words} with test-time augmentation", kind, config,
                     tta.get(f"tta_{key}")) for key, kind, config, words in MULTI_LABEL_METRICS]
        metric_ids = ["accuracy", "f1"]  # mAP has no id on https://hf.co/metrics
    else:
        figures = [("Validation accuracy", "accuracy", None, facts.valid_accuracy)]
        if facts.evaluation:
            figures += [("Validation accuracy with test-time augmentation", "accuracy", None,
                         facts.evaluation["tta_accuracy"])]
        metric_ids = ["accuracy"]
    for metric_name, kind, config, value in figures:
        if value is not None:
            results.append(EvalResult(
                task_type="image-classification", dataset_type="imagefolder",
                dataset_name=facts.data_name or "photos", dataset_split="validation",
                metric_type=kind, metric_name=metric_name, metric_config=config,
                metric_value=round(value, 4)))
    # library_name timm: config.json is timm's, so the Hub shows timm's loading snippet, as it
    # does for what timm's own push_to_hf_hub uploads; the clearclass tag finds its models.
    data = ModelCardData(library_name="timm", pipeline_tag="image-classification",
                         tags=["image-classification", "timm", "clearclass"],
                         metrics=metric_ids, model_name=name if results else None,
                         eval_results=results or None)
    text = pages.render_markdown(
        "model_card.md", card_yaml=Markup(data.to_yaml()), repo_id=Markup(repo_id), title=name,
        architecture=Markup(info.architecture),
        classes=[{"id": i, "name": n, "threshold": t} for i, n, t in zip(
            info.class_ids, info.class_names, info.thresholds or [None] * len(info.class_ids))],
        multi_label=info.task == "multi", onnx_probabilities=onnx_probabilities,
        onnx_metadata=onnx_metadata,
        data_name=facts.data_name, train_photos=facts.train_photos,
        valid_photos=facts.valid_photos, valid_accuracy=facts.valid_accuracy,
        valid_scores=facts.valid_scores, evaluation=facts.evaluation,
        score_words=[(key, Markup(words)) for key, _, _, words in MULTI_LABEL_METRICS[1:]],
        confused=facts.confused, settings=facts.settings,
        pretrained=facts.pretrained, size=info.item_resize,
        resize_method=info.resize_method, resize_words=RESIZE_WORDS[info.resize_method],
        mean=Markup(json.dumps(list(info.mean))), std=Markup(json.dumps(list(info.std))),
        has_onnx=has_onnx)
    ModelCard(text)  # the front matter parses as the Hub will parse it (a ValueError if not)
    return text


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."


__all__ = ["HUB_PREFIX", "is_hub_reference", "model_card", "prepare", "push",
           "without_paths"]
