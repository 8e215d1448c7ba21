"""One process against two (torchrun, DDP): the same run, the same seed, the accuracy of each.

Trains efficientnet_lite0 (ImageNet weights) on imagewoof-2k (10 breeds, its labels.csv
split) at 128 px, `--freeze-epochs 1 --epochs 1`, seed 42, as a user runs it: `clearclass
train` with `--processes 1` and `--processes 2` (torchrun; on the CPU, gloo, each process
with half the cores). `--batch-size` is the photos of one step in both, so the two runs
follow the same schedule; they differ in what each process draws (augmentation) and in how
the sums are added up. Repeated for several seeds; reports each run's accuracy, the median
difference, and wall time (on a CPU the two processes share the same cores, so the time
says what the overhead of DDP is, not a speed-up).

    .venv/bin/python benchmarks/processes.py            # about 15 minutes on 2 cores

Writes benchmarks/results/processes.json and the "One process or two" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_modes import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "imagewoof-2k" / "labels.csv"
SECTION = "## One process or two (torchrun, DDP): accuracy with the same seed"
TRAIN = ["--model", "efficientnet_lite0", "--item-resize", "128", "--freeze-epochs", "1",
         "--epochs", "1", "--batch-size", "64", "--no-onnx", "--quiet"]


def run(data: Path, processes: int, seed: int, out: Path) -> dict:
    command = [sys.executable, "-m", "clearclass", "train", str(data), "--out", str(out),
               "--seed", str(seed), "--processes", str(processes), *TRAIN]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    return {"processes": processes, "seed": seed, "accuracy": summary["valid_accuracy"],
            "valid_loss": summary["epochs"][-1]["valid_loss"], "wall_seconds": wall}


def report(results: dict) -> str:
    m = results["machine"]
    rows = results["runs"]
    lines = [
        SECTION, "",
        f"`python benchmarks/processes.py`, run on {results['date']}. Machine: {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB, no GPU; torch {m['torch']}.",
        "",
        "efficientnet_lite0 on imagewoof-2k (labels.csv split, 400 validation photos), 128 px, "
        "1 frozen + 1 unfrozen epoch, `--batch-size 64` in both (each of the 2 processes "
        "takes 32 photos of every step).", "",
        "| seed | 1 process | 2 processes | difference (points) | wall 1 / 2 (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for seed in results["seeds"]:
        one = next(r for r in rows if r["seed"] == seed and r["processes"] == 1)
        two = next(r for r in rows if r["seed"] == seed and r["processes"] == 2)
        lines.append(f"| {seed} | {one['accuracy']:.2%} | {two['accuracy']:.2%} | "
                     f"{100 * (two['accuracy'] - one['accuracy']):+.2f} | "
                     f"{one['wall_seconds']:.0f} / {two['wall_seconds']:.0f} |")
    lines += ["", f"Median difference: {results['median_difference_points']:+.2f} points, "
                  f"largest {max(abs(d) for d in results['differences_points']):.2f} (goal: "
                  "within 2).", "",
              "Wall time includes starting the processes and, in the first run, decoding the "
              "photos into an empty disk cache; on 2 cores the two processes share them, so "
              "it shows DDP's overhead at best, never a speed-up (GPU figures: "
              "`benchmarks/gpu_throughput.py`).", ""]
    if results.get("note"):
        lines += [results["note"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--note", help="a remark on the conditions, kept in the results")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the RESULTS.md section from the saved JSON")
    args = parser.parse_args()
    out = ROOT / "benchmarks" / "results" / "processes.json"
    if args.report_only:
        results = json.loads(out.read_text())
        results["note"] = args.note or results.get("note")
        out.write_text(json.dumps(results, indent=2) + "\n")
        results["differences_points"] = [
            100 * (two["accuracy"] - one["accuracy"])
            for one, two in zip(results["runs"][0::2], results["runs"][1::2])]
        write_section(args.results, report(results))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for processes in (1, 2):
                runs.append(run(args.data, processes, seed, Path(tmp) / f"{seed}-{processes}"))
                print(runs[-1], flush=True)
    differences = [
        100 * (two["accuracy"] - one["accuracy"])
        for one, two in zip(runs[0::2], runs[1::2])]
    results = {"date": datetime.date.today().isoformat(), "machine": machine(),
               "data": "imagewoof-2k", "settings": TRAIN, "seeds": args.seeds, "runs": runs,
               "differences_points": differences, "note": args.note,
               "median_difference_points": statistics.median(differences)}
    out.write_text(json.dumps(results, indent=2) + "\n")
    write_section(args.results, report(results))
    print(report(results))


if __name__ == "__main__":
    main()
