"""Label errors: how many swapped labels each ranking puts in its first candidates.

For each seed (42, 43, 44), 5% of imagewoof-2k's training photos get a random other breed
as their label (a labels CSV in a temp folder naming the original files; validation
photos untouched), efficientnet_lite0 (offline ImageNet weights) trains on it in a fresh
process (`fine_tune(1)`: one frozen and one unfrozen epoch, 160 px, batch 64, the seed),
and that process computes the run's features (`advice.run_features`, one pass), kept with
the model's own probabilities; the out-of-sample probabilities are computed from them
(`advice.out_of_sample_probabilities`, 5 folds over train and valid, as `clean` does), so
`--rank-only --keep FOLDER` measures a change of the heads without training again. Then
the training photos are ranked:

- in sample (what `clean` did before): 1 - p(label) from the trained model's own
  probabilities, highest first;
- out of sample: the photos `cleanlab.filter.find_label_issues` flags, least
  self-confident first, with cleanlab's default filter (prune_by_noise_rate) and with the
  one `clean` uses (predicted_neq_given); a photo not flagged is not a candidate.

and the precision and recall of the swapped photos in the first N and 2N candidates
(N = the number swapped) are reported per seed and as medians, with how many photos
cleanlab flags in all (and how many of them are swapped), and the times of the training,
the features pass and the folds.

    .venv/bin/python benchmarks/label_errors.py --keep /tmp/label-errors   # about 70 min on 2
    # cores shared with other jobs; then --rank-only to re-rank the kept features

Writes benchmarks/results/label_errors.json and prints the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "imagewoof-2k"
RESULTS = ROOT / "benchmarks" / "results" / "label_errors.json"
SEEDS = (42, 43, 44)
TRAINED = ("train_s", "features_s", "accuracy", "process_s", "load")  # kept by --rank-only
FRACTION = 0.05

# The child: train, then the features (and the model's own probabilities), timed.
CHILD = """
import json, sys, time
import numpy as np
from clearclass.training import train
from clearclass.advice.features import run_features
labels, out, saved = sys.argv[1], sys.argv[2], sys.argv[5]
seed, size = int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
run = train(labels, out=out, model="efficientnet_lite0", epochs=1, freeze_epochs=1,
            item_resize=size, batch_size=64, seed=seed, overwrite=True)
t1 = time.perf_counter()
found = run_features(out)
t2 = time.perf_counter()
np.savez(saved, targets=found.targets, is_valid=found.is_valid, features=found.features,
         in_sample=found.probabilities, paths=np.array(found.paths),
         class_ids=np.array(found.class_ids))
print("RESULT", json.dumps({"train_s": t1 - t0, "features_s": t2 - t1,
                            "accuracy": run.accuracy}))
"""


def machine() -> str:
    cpu, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")),
                   cpu)
        flags = next((set(x.split(":", 1)[1].split()) for x in info if x.startswith("flags")),
                     flags)
    simd = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    return (f"{cpu}, {os.cpu_count()} logical CPUs ({simd or 'no AVX'}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
            f"Python {platform.python_version()}")


def swapped_labels(seed: int, folder: Path) -> tuple[Path, set[str]]:
    """imagewoof-2k's labels.csv with FRACTION of the training photos given a random other
    breed; the file (absolute paths to the original photos) and the swapped paths."""
    with open(DATA / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    breeds = sorted({r["label"] for r in rows})
    training = [i for i, r in enumerate(rows) if r["is_valid"] != "True"]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(training, size=round(FRACTION * len(training)), replace=False)
    swapped = set()
    for i in chosen:
        others = [b for b in breeds if b != rows[i]["label"]]
        rows[i]["label"] = others[rng.integers(len(others))]
        swapped.add(str((DATA / rows[i]["path"]).resolve()))
    path = folder / f"labels-swapped-{seed}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "is_valid"])
        for r in rows:
            writer.writerow([str((DATA / r["path"]).resolve()), r["label"], r["is_valid"]])
    return path, swapped


def rankings(saved: Path) -> dict:
    """The rankings of the training photos (indices into the training rows): the in-sample
    loss, and cleanlab's flagged photos by self-confidence under its default filter and
    under the one `clean` uses. The out-of-sample probabilities are computed here from the
    kept features with the current code (timed), so a change of the heads is measured
    without training again (--rank-only)."""
    sys.path.insert(0, str(ROOT / "src"))
    from clearclass.advice.label_issues import FILTER, find_label_issues, in_sample_ranking
    from clearclass.advice.out_of_sample import out_of_sample_probabilities

    data = np.load(saved)
    train = ~data["is_valid"]
    targets = data["targets"][train]
    t0 = time.perf_counter()
    # As `clean` does: every photo of the run judged, train and valid together.
    out_of_sample = out_of_sample_probabilities(data["features"], data["targets"],
                                                len(data["class_ids"]))
    folds_s = time.perf_counter() - t0
    position = {int(r): k for k, r in enumerate(np.flatnonzero(train))}
    found = {"paths": [str(p) for p in data["paths"][train]],
             "old": in_sample_ranking(data["in_sample"][train], targets).tolist(),
             "folds_s": folds_s}
    for name, filter_by in (("default", "prune_by_noise_rate"), ("new", FILTER)):
        issues = find_label_issues(out_of_sample, data["targets"], filter_by=filter_by)
        found[name] = [position[i.index] for i in issues if i.index in position]
        found[f"{name}_flagged_all"] = len(issues)
    return found


def scores(order: list[int], paths: list[str], swapped: set[str], n: int) -> dict:
    hits = sum(paths[i] in swapped for i in order[:n])
    return {"precision": hits / n, "recall": hits / len(swapped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--size", type=int, default=160, help="item resize, pixels")
    parser.add_argument("--keep", type=Path, default=None,
                        help="a folder to keep each seed's arrays in (re-ranked with "
                             "--rank-only without training again, the training's figures "
                             "taken from --json)")
    parser.add_argument("--rank-only", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    trained = {}  # with --rank-only: the training's figures, from the JSON file of that run
    if args.rank_only and args.json.exists():
        trained = {r["seed"]: {k: r[k] for k in TRAINED if k in r}
                   for r in json.loads(args.json.read_text())["runs"]}
    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        runs = []
        for seed in args.seeds:
            labels, swapped = swapped_labels(seed, Path(tmp))
            saved = keep / f"seed-{seed}.npz"
            timing: dict = trained.get(seed, {})
            if not args.rank_only:
                env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
                t0 = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", CHILD, str(labels),
                                       str(Path(tmp) / f"run-{seed}"), str(seed),
                                       str(args.size), str(saved)],
                                      env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
                line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
                timing = json.loads(line[len("RESULT "):])
                timing["process_s"] = time.perf_counter() - t0
                timing["load"] = os.getloadavg()[0]
            ranked = rankings(saved)
            n = len(swapped)
            result = {"seed": seed, "swapped": n, **timing, "folds_s": ranked["folds_s"]}
            for name in ("default", "new"):
                result[f"{name}_flagged"] = len(ranked[name])
                result[f"{name}_flagged_all"] = ranked[f"{name}_flagged_all"]
                result[f"{name}_flagged_swapped"] = sum(ranked["paths"][i] in swapped
                                                        for i in ranked[name])
            for name in ("old", "default", "new"):
                for k, label in ((n, "N"), (2 * n, "2N")):
                    for what, value in scores(ranked[name], ranked["paths"], swapped,
                                              k).items():
                        result[f"{name}_{what}_{label}"] = value
            runs.append(result)
            print(json.dumps(result), flush=True)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "data": "imagewoof-2k labels.csv", "size": args.size, "runs": runs,
              "command": "python benchmarks/label_errors.py"}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))


def table(report: dict) -> str:
    runs = report["runs"]

    def cell(key: str, percent: bool = True) -> str:
        values = [r[key] for r in runs if key in r]
        if not values:
            return ""
        shown = [f"{v:.0%}" if percent else f"{v:.0f}" for v in values]
        median = statistics.median(values)
        return f"{' / '.join(shown)} (median {median:.0%})" if percent else \
            f"{' / '.join(shown)} (median {median:.0f})"

    lines = [f"Machine: {report['machine']}", "",
             "| ranking of the training photos | precision, first N | recall, first N | "
             "precision, first 2N | recall, first 2N |", "| --- | --- | --- | --- | --- |"]
    for name, label in (("old", "in sample: 1 - p(label), the model's own (`clean` before)"),
                        ("default", "out of sample, cleanlab's default filter "
                                    "(prune_by_noise_rate), by self-confidence"),
                        ("new", "out of sample, cleanlab's predicted_neq_given, by "
                                "self-confidence (`clean` now)")):
        lines.append(f"| {label} | " + " | ".join(
            cell(f"{name}_{w}_{k}") for k in ("N", "2N") for w in ("precision", "recall"))
            + " |")
    lines += ["", f"Swapped per seed: {cell('swapped', False)}. Flagged among the training "
              f"photos, default filter: {cell('default_flagged', False)}, of which swapped: "
              f"{cell('default_flagged_swapped', False)}; `clean`'s filter: "
              f"{cell('new_flagged', False)}, of which swapped: "
              f"{cell('new_flagged_swapped', False)}; in all (train + valid), `clean`'s "
              f"filter: {cell('new_flagged_all', False)}.",
              f"Seconds: training process {cell('train_s', False)}, features pass "
              f"{cell('features_s', False)}, 5 folds of logistic regression "
              f"{cell('folds_s', False)}; valid accuracy {cell('accuracy')}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
