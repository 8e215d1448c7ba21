"""What making the unfrozen stage cheaper costs in accuracy: `clearclass train` once per
variant and seed, as a user runs it, on the two cases of issue 13:

- 224 px: imagewoof-2k, labels.csv, its first 5 breeds (800 training, 200 validation photos);
- 128 px: imagewoof-160, train/ and val/ (9,025 training, 3,929 validation photos).

Each run is `clearclass train DATA --model efficientnet_lite0 --epochs 1 --item-resize SIZE
--seed SEED` plus the variant's options, in its own process, one after the other. The
photo cache is shared and filled before the first timed run, so no run pays for decoding.
Every run is appended to a JSON-lines file as it ends (an interrupted benchmark continues
where it stopped); the table (medians over seeds) goes into benchmarks/TECHNIQUES.md.

    python benchmarks/unfrozen_stage.py --cases 224,128 --variants frozen-0,frozen-2,frozen-3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_modes import write_section  # noqa: E402
from vs_fastai import machine, subset_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
CASES = {
    "224": {"data": DATASETS / "imagewoof-2k" / "labels.csv", "breeds": 5, "size": 224,
            "name": "imagewoof-2k, first 5 breeds, 224 px"},
    "128": {"data": DATASETS / "imagewoof-160", "breeds": None, "size": 128,
            "name": "imagewoof-160, 128 px"},
}
# Variant name -> (options added to `clearclass train`, what it is).
VARIANTS = {
    "frozen-0": (["--frozen-stages", "0"], "every layer trained (fastai's fine_tune)"),
    "frozen-2": (["--frozen-stages", "2"], "stem + 2 stages fixed (to 1/4 resolution)"),
    "frozen-3": (["--frozen-stages", "3"], "stem + 3 stages fixed (to 1/8 resolution)"),
    "default": ([], "clearclass's defaults"),
    "warmup-3/4": (["--warmup-size", "{three_quarters}"],
                   "defaults + warm-up steps at 3/4 of the size (progressive resizing)"),
}
RESULTS = ROOT / "benchmarks" / "results" / "unfrozen_stage.jsonl"


def options(variant: str, size: int) -> list[str]:
    """The variant's options for photos of `size` pixels."""
    return [o.format(three_quarters=size * 3 // 4) for o in VARIANTS[variant][0]]


def run_once(data: Path, size: int, seed: int, options: list[str], cache: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = [str(Path(sys.executable).parent / "clearclass"), "train", str(data),
                   "--model", "efficientnet_lite0", "--epochs", "1", "--item-resize",
                   str(size), "--seed", str(seed), "--out", str(run_dir), "--quiet",
                   *options]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "CLEARCLASS_CACHE_DIR": str(cache)})
        wall = time.perf_counter() - t0
        summary = json.loads((run_dir / "summary.json").read_text())
    epochs = summary["epochs"]
    if len(epochs) < 2:  # the warm-up run
        return {}
    return {"wall_seconds": wall, "frozen_epoch_seconds": epochs[0]["seconds"],
            "unfrozen_epoch_seconds": epochs[1]["seconds"],
            "decode_seconds": summary["timings"]["decode_seconds"],
            "valid_accuracy": epochs[-1]["accuracy"], "load": os.getloadavg()[0],
            "timings": summary["timings"]}  # where the run's time went, inside the process


def table(rows: list[dict], cases: list[str], variants: list[str]) -> str:
    lines = ["| case | variant | seeds | frozen epoch | unfrozen epoch | whole run | "
             "valid accuracy (median) | accuracies |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for case in cases:
        for variant in variants:
            got = [r for r in rows if r["case"] == case and r["variant"] == variant]
            if not got:
                continue

            def median(key: str, runs: list[dict] = got) -> float:
                return statistics.median(r[key] for r in runs)

            accuracies = ", ".join(f"{100 * r['valid_accuracy']:.2f}" for r in got)
            lines.append(
                f"| {CASES[case]['name']} | {VARIANTS[variant][1]} | {len(got)} | "
                f"{median('frozen_epoch_seconds'):.1f} s | "
                f"{median('unfrozen_epoch_seconds'):.1f} s | {median('wall_seconds'):.1f} s | "
                f"{100 * median('valid_accuracy'):.2f}% | {accuracies} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="224,128")
    parser.add_argument("--variants", default="frozen-0,frozen-2,frozen-3")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    cases, variants = args.cases.split(","), args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in args.results.read_text().splitlines()] \
        if args.results.exists() else []
    cache = Path(tempfile.gettempdir()) / "clearclass-unfrozen-stage-cache"
    for case in [] if args.report_only else cases:
        spec = CASES[case]
        data = spec["data"]
        if spec["breeds"]:
            data = subset_csv(data, spec["breeds"], cache.parent / "clearclass-bench-subsets")
        warmed = False
        for seed in seeds:
            for variant in variants:
                if any(r["case"] == case and r["variant"] == variant and r["seed"] == seed
                       for r in done):
                    continue
                if not warmed:  # fill the photo cache: no timed run decodes
                    run_once(data, spec["size"], seed, ["--epochs", "0", "--freeze-epochs",
                                                        "1", "--no-onnx"], cache)
                    warmed = True
                result = {"case": case, "variant": variant, "seed": seed,
                          "date": time.strftime("%Y-%m-%d"),
                          "options": options(variant, spec["size"]),
                          **run_once(data, spec["size"], seed, options(variant, spec["size"]),
                                     cache)}
                done.append(result)
                with open(args.results, "a") as f:
                    f.write(json.dumps(result) + "\n")
                print(json.dumps(result), flush=True)
    # The table shows every run in --results, whichever cases this command ran.
    cases = [c for c in CASES if any(r["case"] == c for r in done)]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in done)]
    dates = sorted({r.get("date", "") for r in done} - {""})
    text = (f"`python benchmarks/unfrozen_stage.py --cases {','.join(cases)} --variants "
            f"{','.join(variants)}`, run on {', '.join(dates)}. Machine: {machine()}.\n\n"
            "Each run: `clearclass train DATA --model efficientnet_lite0 --epochs 1 "
            "--item-resize SIZE --seed SEED` with the variant's options, photos already "
            "decoded in the cache; times are medians over the seeds; the whole run includes "
            "starting Python, reading the cache and the ONNX export.\n\n"
            + table(done, cases, variants))
    print(text)
    write_section(ROOT / "benchmarks" / "TECHNIQUES.md",
                  "## Unfrozen stage: accuracy and time of each variant\n\n" + text + "\n")


if __name__ == "__main__":
    main()
