"""`train --balance none|weights|sampler` on imagewoof-160 with half the breeds made rare.

Five of the ten breeds (drawn with `random.Random(--cut-seed)` from the sorted folder
names) keep 10% of their training photos (drawn the same way); validation is untouched.
The set is a labels CSV (path,label,is_valid) of the original files, written to a
temporary folder: nothing is copied. For each seed and each `--balance`, `clearclass train`
runs in a child process as a user runs it: efficientnet_lite0 (offline ImageNet weights),
128 px, one frozen and one unfrozen epoch (`--epochs 1`, the schedule of the earlier
imagewoof-160 benchmark), batch 64. Then `clearclass.evaluate` predicts the run's
validation photos, and the script records the recall of each breed, the mean recall of the
cut breeds and of the others, balanced accuracy (the mean recall over the ten), plain
accuracy, valid_loss, the epoch times and the training process's wall time and peak memory
(PSS of the process and its workers, sampled every 5 s). The photo cache is shared by the
runs of one invocation (the first decodes, the others read it): the batches are the same
either way, and the epoch times exclude decoding.

    .venv/bin/python benchmarks/imbalance.py --seeds 42            # about 15 min on 2 cores
    .venv/bin/python benchmarks/imbalance.py --seeds 43 --append   # another seed, same file

Writes benchmarks/results/imbalance.json (every run) and prints the table for RESULTS.md's
"Imbalance" section.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_fastai import PeakMemory, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "imagewoof-160"
RESULTS = ROOT / "benchmarks" / "results" / "imbalance.json"
MODES = ("none", "weights", "sampler")
TRAIN = ["--model", "efficientnet_lite0", "--item-resize", "128", "--freeze-epochs", "1",
         "--epochs", "1", "--batch-size", "64", "--quiet"]
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def photos_by_class(folder: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
            for d in sorted(folder.iterdir()) if d.is_dir()}


def imbalanced_csv(data: Path, cut: int, keep: float, seed: int, folder: Path
                   ) -> tuple[Path, list[str], dict[str, int]]:
    """labels.csv over DATA's train/ and val/: `cut` breeds keep `keep` of their training
    photos. Returns the CSV, the cut breeds and the training photos of each breed."""
    train, valid = photos_by_class(data / "train"), photos_by_class(data / "val")
    rng = random.Random(seed)
    cut_breeds = sorted(rng.sample(sorted(train), cut))
    rows, counts = [], {}
    for label, files in train.items():
        if label in cut_breeds:
            files = sorted(rng.sample(files, math.ceil(keep * len(files))))
        counts[label] = len(files)
        rows += [(str(f.resolve()), label, 0) for f in files]
    for label, files in valid.items():
        rows += [(str(f.resolve()), label, 1) for f in files]
    path = folder / "labels.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "is_valid"])
        writer.writerows(rows)
    return path, cut_breeds, counts


def train_and_evaluate(labels: Path, balance: str, seed: int, run_dir: Path,
                       cache: Path) -> dict:
    """One `clearclass train` in a child process, then its validation photos predicted."""
    command = [sys.executable, "-m", "clearclass", "train", str(labels), "--out", str(run_dir),
               "--balance", balance, "--seed", str(seed), *TRAIN]
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, "CLEARCLASS_CACHE_DIR": str(cache)})
    memory = PeakMemory(child.pid, interval=5.0)
    if child.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    wall, peak = time.perf_counter() - t0, memory.stop()

    import clearclass

    summary = json.loads((run_dir / "summary.json").read_text())
    evaluation = clearclass.evaluate(run_dir, report=run_dir.parent / f"report-{run_dir.name}")
    recall = {row["class_id"]: row["recall"] for row in evaluation.per_class()}
    return {"balance": balance, "seed": seed, "recall": recall,
            "accuracy": evaluation.accuracy,
            "balanced_accuracy": statistics.fmean(recall.values()),
            "valid_loss": summary["epochs"][-1]["valid_loss"],
            "train_losses": [e["train_loss"] for e in summary["epochs"]],
            "frozen_epoch_seconds": summary["epochs"][0]["seconds"],
            "unfrozen_epoch_seconds": summary["epochs"][1]["seconds"],
            "decode_seconds": summary["timings"]["decode_seconds"],
            "train_process_seconds": wall, "peak_memory_gb": peak / 1e9,
            "load_average": os.getloadavg()[0]}


def table(results: dict) -> str:
    """The Markdown table: one row per --balance, medians over the seeds (each seed shown)."""
    cut = results["cut_breeds"]
    lines = ["| `--balance` | recall, 5 cut breeds | recall, 5 others | balanced accuracy "
             "| accuracy | valid_loss | frozen + unfrozen epoch | training process | peak memory |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode in MODES:
        runs = [r for r in results["runs"] if r["balance"] == mode]
        if not runs:
            continue

        def cell(value, fmt: str = "{:.1%}", runs=runs) -> str:
            values = [value(r) for r in runs]
            median = fmt.format(statistics.median(values))
            return median if len(values) == 1 else (
                f"{median} ({', '.join(fmt.format(v) for v in values)})")

        lines.append(" | ".join([
            f"| `{mode}`",
            cell(lambda r: statistics.fmean(r["recall"][c] for c in cut)),
            cell(lambda r: statistics.fmean(v for c, v in r["recall"].items() if c not in cut)),
            cell(lambda r: r["balanced_accuracy"]), cell(lambda r: r["accuracy"]),
            cell(lambda r: r["valid_loss"], "{:.3f}"),
            cell(lambda r: r["frozen_epoch_seconds"] + r["unfrozen_epoch_seconds"], "{:.0f} s"),
            cell(lambda r: r["train_process_seconds"], "{:.0f} s"),
            cell(lambda r: r["peak_memory_gb"], "{:.2f} GB")]) + " |")
    per_breed = ["", "Recall of each breed (median over the seeds; * marks the cut breeds, "
                 "training photos in brackets):", "",
                 "| breed | " + " | ".join(f"`{m}`" for m in MODES) + " |",
                 "| --- |" + " ---: |" * len(MODES)]
    for breed, count in results["train_photos"].items():
        cells = []
        for mode in MODES:
            values = [r["recall"][breed] for r in results["runs"] if r["balance"] == mode]
            cells.append(f"{statistics.median(values):.1%}" if values else "")
        star = "*" if breed in cut else ""
        per_breed.append(f"| {breed}{star} ({count}) | " + " | ".join(cells) + " |")
    return "\n".join(lines + per_breed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA,
                        help="a folder with train/ and val/ class folders")
    parser.add_argument("--seeds", default="42", help="training seeds, comma-separated")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cut", type=int, default=5, help="breeds made rare")
    parser.add_argument("--keep", type=float, default=0.1,
                        help="share of their training photos the cut breeds keep")
    parser.add_argument("--cut-seed", type=int, default=0, help="draws the breeds and photos")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true",
                        help="add these runs to those already in --json")
    parser.add_argument("--table-only", action="store_true", help="print --json's table")
    args = parser.parse_args()
    if args.table_only:
        print(table(json.loads(args.json.read_text())))
        return
    previous = json.loads(args.json.read_text()) if args.append and args.json.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        labels, cut_breeds, counts = imbalanced_csv(args.data, args.cut, args.keep,
                                                    args.cut_seed, Path(tmp))
        if previous and previous["cut_breeds"] != cut_breeds:
            raise SystemExit(f"{args.json} holds runs with other cut breeds")
        results = {"machine": machine(), "data": args.data.name,
                   "command": "python " + " ".join([Path(sys.argv[0]).as_posix(),
                                                     *sys.argv[1:]]),
                   "train_options": TRAIN, "cut_seed": args.cut_seed, "keep": args.keep,
                   "cut_breeds": cut_breeds, "train_photos": counts,
                   "date": time.strftime("%Y-%m-%d"), "runs": previous.get("runs", [])}
        print(f"Cut breeds: {', '.join(cut_breeds)}; training photos {counts}", flush=True)
        for seed in (int(s) for s in args.seeds.split(",")):
            for mode in args.modes.split(","):
                result = train_and_evaluate(labels, mode, seed, Path(tmp) / f"run-{mode}-{seed}",
                                            Path(tmp) / "cache")
                results["runs"].append(result)
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2) + "\n")  # after every run
                cut_recall = statistics.fmean(result["recall"][c] for c in cut_breeds)
                print(f"--balance {mode}, seed {seed}: cut breeds' recall {cut_recall:.1%}, "
                      f"balanced accuracy {result['balanced_accuracy']:.1%}, accuracy "
                      f"{result['accuracy']:.1%}, {result['train_process_seconds']:.0f} s",
                      flush=True)
    print(f"\nMachine: {results['machine']}\n")
    print(table(results))


if __name__ == "__main__":
    main()
