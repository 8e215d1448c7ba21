"""clearclass against fastai's multi-label recipe, on the same collages, weights and settings.

Issue 25's comparison. The data are `multilabel_collages.py`'s collages of 1-4 dog photos
(3,000 training and 1,000 validation by default, made here once if the folder has no
labels.csv). fastai runs its book's multi-label recipe (chapter 6):

    DataBlock(blocks=(ImageBlock, MultiCategoryBlock), get_x=ColReader('path', pref=...),
              get_y=ColReader('label', label_delim=';'), splitter=ColSplitter('is_valid'),
              item_tfms=Resize(SIZE), batch_tfms=aug_transforms())
    learn = vision_learner(dls, 'efficientnet_lite0', metrics=partial(accuracy_multi, thresh=0.5))
    learn.fine_tune(EPOCHS)

with the offline ImageNet weights mapped onto timm's efficientnet_lite0 and
`Normalize.from_stats([0.5]*3, [0.5]*3)` as in `vs_fastai.py`; clearclass runs `python -m
clearclass train labels.csv --task multi` as a user does (`clearclass_command`), with an
empty photo cache. Both: batch 64, the same item size, one frozen epoch then `--epochs`
unfrozen ones.

For each seed, the two tools alternate in order, each training in a fresh process. Timed:
the whole training process, imports included, from its start to the trained model (fastai's
process then goes on to predict the validation photos: not in its time; its peak memory
includes it, as the same validation pass ran in every epoch before). Peak memory:
the largest PSS of the process and its DataLoader workers together, sampled every 5 s as in
`vs_fastai.py`, and the exact peak RSS of the main process (its rusage).

Scored afterwards, by this script, from each tool's validation probabilities (not from its
own log), the labels in one sorted order: fastai's `accuracy_multi` at 0.5 (the share of
photo x label cells where p > 0.5 is the truth), micro and macro F1 at 0.5, and the mean
average precision (scikit-learn's macro average precision). fastai's probabilities come
from `learn.get_preds()` (the sigmoid of BCEWithLogitsLossFlat applied), clearclass's from
`clearclass.load(RUN / "model").predict_proba(...)` in a separate process.

It prints the machine, a markdown table of medians and each seed's figures; `--json`
writes them (the section of RESULTS.md is written by hand from the table).

    python benchmarks/multilabel_vs_fastai.py --seeds 0 1 2
    python benchmarks/multilabel_vs_fastai.py --smoke               # about a minute here
    python benchmarks/multilabel_vs_fastai.py --smoke --tools fastai   # one tool only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from multilabel_collages import SHARED
from vs_fastai import PeakMemory, machine

ROOT = Path(__file__).resolve().parents[1]
ARCH, BATCH, DATA_SEED, THRESHOLD = "efficientnet_lite0", 64, 0, 0.5
TOOLS = ("fastai", "clearclass")
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "multilabel_vs_fastai.json"
SMOKE = {"train": 40, "valid": 16, "size": 64, "epochs": 1, "seeds": [0]}


def clearclass_command(data: Path, run_dir: Path, size: int, epochs: int,
                       seed: int) -> list[str]:
    """`clearclass train` for the multi-label task, as a user types it. No ONNX export:
    fastai exports nothing either, and scoring runs on the PyTorch weights."""
    return [sys.executable, "-m", "clearclass", "train", str(data), "--model", ARCH,
            "--item-resize", str(size), "--batch-size", str(BATCH), "--epochs", str(epochs),
            "--seed", str(seed), "--out", str(run_dir), "--overwrite", "--task", "multi",
            "--no-onnx", "--quiet"]


# --- the data -----------------------------------------------------------------------------

def ensure_collages(folder: Path, train: int, valid: int, source: Path) -> Path:
    """FOLDER/labels.csv, made by multilabel_collages.py first if it is not there."""
    labels = folder / "labels.csv"
    if labels.is_file():
        return labels
    # Made beside the folder and renamed when complete, so that a stopped run never
    # leaves a half-made set that a later run would take for the whole one.
    partial = folder.with_name(folder.name + ".partial")
    subprocess.run([sys.executable, str(Path(__file__).with_name("multilabel_collages.py")),
                    str(partial), "--train", str(train), "--valid", str(valid),
                    "--seed", str(DATA_SEED), "--data", str(source)], check=True)
    partial.rename(folder)
    return labels


def read_rows(data: Path) -> list[dict]:
    with open(data, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _is_valid(row: dict) -> bool:
    return row["is_valid"].strip().lower() == "true"


def valid_targets(data: Path) -> tuple[list[Path], list[str], np.ndarray]:
    """The validation photos in the CSV's order, every label of the CSV sorted, and the
    photos x labels 0/1 targets."""
    rows = read_rows(data)
    labels = sorted({x for r in rows for x in r["label"].split(";") if x})
    index = {label: i for i, label in enumerate(labels)}
    valid = [r for r in rows if _is_valid(r)]
    targets = np.zeros((len(valid), len(labels)), dtype=np.int64)
    for n, r in enumerate(valid):
        for x in r["label"].split(";"):
            if x:
                targets[n, index[x]] = 1
    return [data.parent / r["path"] for r in valid], labels, targets


# --- scoring ------------------------------------------------------------------------------

def in_order(probabilities: np.ndarray, tool_labels: list[str], labels: list[str]) -> np.ndarray:
    """A tool's probabilities with their columns in the order of `labels`."""
    missing = sorted(set(labels) - set(tool_labels))
    if missing:
        raise SystemExit(f"the model has no output for the labels {missing}")
    return probabilities[:, [tool_labels.index(x) for x in labels]]


def score(targets: np.ndarray, probabilities: np.ndarray,
          threshold: float = THRESHOLD) -> dict[str, float]:
    """The figures both tools are compared on, from photos x labels 0/1 targets and
    probabilities in the same column order."""
    from sklearn.metrics import average_precision_score, f1_score

    decided = (probabilities > threshold).astype(np.int64)
    # Average precision is undefined for a label no validation photo has (a tiny --valid
    # can leave one out): those are left out of the mean, as they have no precision to add.
    present = targets.sum(axis=0) > 0
    return {
        "accuracy_multi": float((decided == targets).mean()),
        "f1_micro": float(f1_score(targets, decided, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(targets, decided, average="macro", zero_division=0)),
        "mean_average_precision": float(average_precision_score(
            targets[:, present], probabilities[:, present], average="macro")),
    }


# --- the children -------------------------------------------------------------------------

def fastai_worker(data: Path, size: int, epochs: int, seed: int) -> dict:
    """fastai's multi-label recipe trained with `fine_tune(epochs)`; the moment training
    ended, each epoch's seconds and the validation probabilities."""
    from functools import partial

    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar)
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fine_tune)
    import pandas as pd
    import timm
    from fastai.callback.core import Callback
    from fastai.data.block import DataBlock, MultiCategoryBlock
    from fastai.data.transforms import ColReader, ColSplitter, Normalize
    from fastai.metrics import accuracy_multi
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, aug_transforms
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    from clearclass.model import _lite0_package_file, _remap_by_order, read_state_dict

    set_seed(seed)
    df = pd.read_csv(data)
    df["is_valid"] = df["is_valid"].astype(str).str.lower() == "true"
    block = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock),
        get_x=ColReader("path", pref=data.parent),
        get_y=ColReader("label", label_delim=";"),
        splitter=ColSplitter("is_valid"),
        item_tfms=Resize(size),
        # The offline weights were ported from TensorFlow and expect mean = std = 0.5;
        # vision_learner adds no Normalize itself with pretrained=False.
        batch_tfms=[*aug_transforms(), Normalize.from_stats([0.5] * 3, [0.5] * 3)],
    )
    dls = block.dataloaders(df, bs=BATCH)
    learn = vision_learner(dls, ARCH, pretrained=False,
                           metrics=partial(accuracy_multi, thresh=THRESHOLD))
    reference = timm.create_model(ARCH, pretrained=False)
    state = _remap_by_order(read_state_dict(_lite0_package_file()), reference, Path(ARCH))
    learn.model[0].model.load_state_dict(
        {k: v for k, v in state.items() if not k.startswith("classifier.")})
    seconds: list[float] = []

    class EpochTimer(Callback):
        def before_epoch(self) -> None:
            self.start = time.perf_counter()

        def after_epoch(self) -> None:
            seconds.append(time.perf_counter() - self.start)

    learn.add_cb(EpochTimer())
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
        trained_at = time.time()
        epoch_seconds = list(seconds)  # get_preds runs the epoch events too
        probabilities, targets = learn.get_preds()
    labels = list(learn.dls.vocab)
    # The parent scores against the CSV's targets: check they are the rows fastai predicted.
    _, csv_labels, csv_targets = valid_targets(data)
    if not np.array_equal(in_order(targets.numpy(), labels, csv_labels), csv_targets):
        raise SystemExit("fastai's validation targets are not the CSV's validation rows")
    return {"trained_at": trained_at, "epoch_seconds": epoch_seconds, "labels": labels,
            "probabilities": probabilities.numpy().tolist()}


def clearclass_predict_worker(data: Path, run_dir: Path) -> dict:
    """The trained clearclass model's probabilities for the validation photos."""
    import clearclass

    classifier = clearclass.load(run_dir / "model")
    files, _, _ = valid_targets(data)
    probabilities = classifier.predict_proba([str(f) for f in files], batch_size=BATCH)
    # Rows that each sum to 1 are a softmax: the model was not trained (or is not loaded)
    # as a multi-label one, and its figures would mean nothing here.
    if probabilities.shape[1] > 1 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4):
        raise SystemExit(f"{run_dir / 'model'} gives softmax probabilities, not per-label "
                         "sigmoids: is it a --task multi model?")
    return {"labels": list(classifier.info.class_ids), "probabilities": probabilities.tolist()}


def run_timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """Run `command`; its start (epoch seconds), wall seconds, peak PSS of it and its
    children in bytes (sampled), and the peak RSS of its main process in bytes (exact)."""
    started = time.time()
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, **env})
    # Reading PSS walks every page table and holds the process's memory lock meanwhile:
    # every 5 s, as vs_fastai.py samples, so the sampler takes little from 2 cores.
    memory = PeakMemory(child.pid, interval=5.0)
    # wait4 rather than Popen.wait: it gives this child's own rusage, whose ru_maxrss is
    # the main process's peak (RUSAGE_CHILDREN would be the largest of all children so far).
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    peak = memory.stop()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed with exit code {child.returncode}")
    return started, wall, peak, usage.ru_maxrss * 1024


def worker_command(*args: str) -> list[str]:
    return [sys.executable, __file__, "--worker", *args]


def read_result(path: Path) -> dict:
    result = json.loads(path.read_text())
    path.unlink()
    return result


def one_run(tool: str, data: Path, size: int, epochs: int, seed: int,
            scoring: tuple[list[str], np.ndarray]) -> dict:
    """One training of `tool` in a fresh process, timed, then scored."""
    labels, targets = scoring
    with tempfile.TemporaryDirectory(prefix="clearclass-multilabel-") as tmp:
        result_file = Path(tmp) / "result.json"
        # A first run: clearclass decodes every photo, as fastai does in every epoch.
        env = {"CLEARCLASS_CACHE_DIR": str(Path(tmp) / "cache")}
        if tool == "fastai":
            command = worker_command("fastai", "--data", str(data), "--size", str(size),
                                     "--epochs", str(epochs), "--seed", str(seed),
                                     "--result", str(result_file))
        else:
            run_dir = Path(tmp) / "run"
            command = clearclass_command(data, run_dir, size, epochs, seed)
        started, wall, peak, main_rss = run_timed(command, env)
        if tool == "fastai":
            out = read_result(result_file)
            seconds = out.pop("trained_at") - started
            epoch_seconds = out["epoch_seconds"]
        else:
            seconds = wall
            summary = json.loads((run_dir / "summary.json").read_text())
            epoch_seconds = [e["seconds"] for e in summary.get("epochs", []) if "seconds" in e]
            subprocess.run(worker_command("predict", "--data", str(data), "--run-dir",
                                          str(run_dir), "--result", str(result_file)),
                           env={**os.environ, **env}, check=True)
            out = read_result(result_file)
    probabilities = in_order(np.asarray(out["probabilities"], dtype=np.float64),
                             out["labels"], labels)
    return {"seed": seed, "train_process_seconds": seconds, "epoch_seconds": epoch_seconds,
            "peak_memory_gb": peak / 1e9, "main_peak_rss_gb": main_rss / 1e9,
            **score(targets, probabilities)}


# --- report -------------------------------------------------------------------------------

ROWS = [
    ("**training process, start to trained model**", "train_process_seconds", "s"),
    ("peak memory (PSS, process and workers, sampled)", "peak_memory_gb", "GB"),
    ("peak RSS of the main process", "main_peak_rss_gb", "GB"),
    ("accuracy_multi at 0.5", "accuracy_multi", "%"),
    ("micro F1 at 0.5", "f1_micro", "%"),
    ("macro F1 at 0.5", "f1_macro", "%"),
    ("mean average precision", "mean_average_precision", "%"),
]


def medians(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    return {tool: {key: statistics.median(r[key] for r in rs) for _, key, _ in ROWS}
            for tool, rs in runs.items() if rs}


def _fmt(value: float, unit: str) -> str:
    return f"{100 * value:.2f}%" if unit == "%" else f"{value:.2f} {unit}" if unit == "GB" \
        else f"{value:.1f} s"


def report(runs: dict[str, list[dict]], case: dict) -> str:
    med = medians(runs)
    tools = [t for t in TOOLS if t in med]
    lines = [f"Data: {case['data']} ({case['train']} training and {case['valid']} validation "
             f"collages, {case['labels']} labels, {case['labels_per_photo']:.2f} per collage), "
             f"{ARCH} with the offline ImageNet weights, {case['size']} px, batch {BATCH}, "
             f"1 frozen + {case['epochs']} unfrozen epoch(s); seeds "
             f"{', '.join(map(str, case['seeds']))}, medians; ratio = clearclass / fastai.", "",
             f"| | {' | '.join(tools)} |" + (" ratio |" if len(tools) == 2 else ""),
             "| --- |" + " ---: |" * (len(tools) + (len(tools) == 2))]
    for label, key, unit in ROWS:
        cells = [_fmt(med[t][key], unit) for t in tools]
        if len(tools) == 2:
            fast, ours = med["fastai"][key], med["clearclass"][key]
            cells.append(f"{100 * (ours - fast):+.2f} pts" if unit == "%" else
                         f"**{ours / fast:.2f}x**" if key == "train_process_seconds" else
                         f"{ours / fast:.2f}x")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += ["", "| seed | tool | order | process s | epochs s | peak GB (PSS) | RSS GB | "
              "accuracy_multi | micro F1 | macro F1 | mAP |",
              "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for tool in tools:
        for r in runs[tool]:
            epochs = " / ".join(f"{s:.1f}" for s in r["epoch_seconds"])
            lines.append(
                f"| {r['seed']} | {tool} | {r['order']} | {r['train_process_seconds']:.1f} | "
                f"{epochs} | {r['peak_memory_gb']:.2f} | {r['main_peak_rss_gb']:.2f} | "
                f"{100 * r['accuracy_multi']:.2f}% | {100 * r['f1_micro']:.2f}% | "
                f"{100 * r['f1_macro']:.2f}% | {100 * r['mean_average_precision']:.2f}% |")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        help="the collage folder (made there if it has no labels.csv); "
                             "default: multilabel-collages-TRAIN-VALID in the temp folder")
    parser.add_argument("--source", type=Path, default=SHARED / "imagewoof-160",
                        help="imagewoof-160, which the collages are made from")
    parser.add_argument("--train", type=int, default=3000, help="training collages")
    parser.add_argument("--valid", type=int, default=1000, help="validation collages")
    parser.add_argument("--size", type=int, default=224, help="item resize, in pixels")
    parser.add_argument("--epochs", type=int, default=1,
                        help="unfrozen epochs, after the one frozen epoch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--smoke", action="store_true",
                        help="a quick check: 40 + 16 collages, 64 px, 1 epoch, seed 0")
    parser.add_argument("--json", type=Path,
                        help=f"where the figures go; default: {DEFAULT_JSON.relative_to(ROOT)} "
                             "(with --smoke: nowhere)")
    parser.add_argument("--worker", choices=("fastai", "predict"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "fastai":
        args.result.write_text(json.dumps(
            fastai_worker(args.data, args.size, args.epochs, args.seed)))
        return
    if args.worker == "predict":
        args.result.write_text(json.dumps(clearclass_predict_worker(args.data, args.run_dir)))
        return

    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    elif args.json is None:  # a smoke run's figures never replace the measured ones
        args.json = DEFAULT_JSON
    folder = (args.data or Path(tempfile.gettempdir())
              / f"multilabel-collages-{args.train}-{args.valid}").resolve()
    data = ensure_collages(folder, args.train, args.valid, args.source)
    files, labels, targets = valid_targets(data)
    runs: dict[str, list[dict]] = {tool: [] for tool in args.tools}
    for n, seed in enumerate(args.seeds):
        # Alternating which tool goes first spreads a drift of the shared machine's speed
        # over both tools.
        order = args.tools if n % 2 == 0 else args.tools[::-1]
        for position, tool in enumerate(order, 1):
            result = one_run(tool, data, args.size, args.epochs, seed, (labels, targets))
            result["order"] = position
            runs[tool].append(result)
            print(f"seed {seed} {tool}: " + json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}),
                flush=True)
    rows = read_rows(data)
    # The command from the settings, not sys.argv: the results name no folder of this machine.
    command = (f"python benchmarks/multilabel_vs_fastai.py --train {args.train} --valid "
               f"{args.valid} --size {args.size} --epochs {args.epochs} --seeds "
               f"{' '.join(map(str, args.seeds))} --tools {' '.join(args.tools)}")
    case = {"data": folder.name, "train": len(rows) - len(files), "valid": len(files),
            "labels": len(labels),
            "labels_per_photo": statistics.mean(len(r["label"].split(";")) for r in rows),
            "size": args.size, "epochs": args.epochs, "batch_size": BATCH, "seeds": args.seeds,
            "threshold": THRESHOLD, "date": time.strftime("%Y-%m-%d"), "command": command}
    description = machine()
    text = report(runs, case)
    print(f"\nMachine: {description}\n\n{text}")
    summary = {"machine": description, "case": case, "medians": medians(runs), "runs": runs}
    if "clearclass" in runs and "fastai" in runs:
        med = summary["medians"]
        summary["time_ratio"] = (med["clearclass"]["train_process_seconds"]
                                 / med["fastai"]["train_process_seconds"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
