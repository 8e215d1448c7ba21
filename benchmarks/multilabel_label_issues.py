"""Multi-label label issues: how many wrong label sets `clean`'s ranking puts first, and how
many photos each cleanlab filter flags.

Takes a trained multi-label run (its features are computed once and kept in RUN/advice, as
`clean` does). For each seed, N photos get one label flipped (added or removed) in the
targets the out-of-sample heads are fitted on (5 folds, `advice.out_of_sample`), so only
the heads see the wrong sets; then:

- the ranking `clean` uses, cleanlab's multi-label quality score
  (`advice.label_issues.find_label_set_issues`), is compared with two simpler ones: the
  least self-confident label of each photo (the probability of its given yes/no), and
  that divided by the label's typical sureness (cleanlab's confident threshold);
- each cleanlab `filter_by` is counted: photos flagged, and the planted ones among them.

Caveat: the network was fine-tuned on the right labels, so its features know them; a run
trained on the wrong sets (as benchmarks/label_errors.py does for one label per photo)
would be a harder test. The point here is which ranking and filter, on the same features.

    python benchmarks/multilabel_collages.py /tmp/collages-1000 --train 1000 --valid 300
    clearclass train /tmp/collages-1000/labels.csv --model efficientnet_lite0 \\
        --item-resize 128 --epochs 2 --out /tmp/collages-run
    python benchmarks/multilabel_label_issues.py /tmp/collages-run --planted 50

Writes benchmarks/results/multilabel_label_issues.json and prints the table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import warnings
from pathlib import Path

import numpy as np

from clearclass.advice.features import run_features
from clearclass.advice.label_issues import find_label_set_issues
from clearclass.advice.out_of_sample import out_of_sample_probabilities

RESULTS = Path(__file__).resolve().parent / "results" / "multilabel_label_issues.json"
FILTERS = ("predicted_neq_given", "prune_by_noise_rate", "confident_learning")


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def one_seed(features: np.ndarray, truth: np.ndarray, planted_count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    targets = truth.copy()
    planted = rng.choice(len(truth), planted_count, replace=False)
    for i in planted:
        j = rng.integers(truth.shape[1])
        targets[i, j] = 1 - targets[i, j]
    p = out_of_sample_probabilities(features, targets, truth.shape[1])
    wrong = set(int(i) for i in planted)
    given = np.where(targets == 1, p, 1 - p)  # the probability of each given yes/no
    typical = np.array([[(1 - p[targets[:, j] == 0, j]).mean(), p[targets[:, j] == 1, j].mean()]
                        for j in range(truth.shape[1])])
    normalised = given / typical[np.arange(truth.shape[1]), targets]
    rankings = {
        "cleanlab quality (clean)": [x.index for x in find_label_set_issues(p, targets)],
        "least self-confident label": list(np.argsort(given.min(1), kind="stable")),
        "normalised by the label's sureness": list(np.argsort(normalised.min(1),
                                                               kind="stable")),
    }
    row = {"seed": seed, "ranking": {}, "filters": {}}
    for name, order in rankings.items():
        row["ranking"][name] = {
            f"first {k * planted_count}": len(set(map(int, order[:k * planted_count])) & wrong)
            for k in (1, 2)}
    for filter_by in FILTERS:
        flagged = [x.index for x in find_label_set_issues(p, targets, filter_by=filter_by)]
        row["filters"][filter_by] = {"flagged": len(flagged),
                                     "planted among them": len(set(flagged) & wrong)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained multi-label run folder")
    parser.add_argument("--planted", type=int, default=50, help="wrong sets per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # scikit-learn convergence on tiny folds
    found = run_features(args.run, "cpu")
    if not found.is_multi_label:
        parser.error(f"{args.run} is not a multi-label run")
    truth = np.asarray(found.targets, dtype=np.int64)
    rows = [one_seed(found.features, truth, args.planted, seed) for seed in args.seeds]
    photos, n = len(truth), args.planted
    result = {"machine": machine(), "photos": photos, "labels": truth.shape[1],
              "planted": n, "seeds": rows,
              "command": f"python benchmarks/multilabel_label_issues.py RUN --planted {n}"}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{photos} photos, {truth.shape[1]} labels, {n} wrong sets planted per seed "
          f"(chance puts {n * n / photos:.1f} of them in the first {n})")
    print(f"| ranking | planted in the first {n} (seeds {', '.join(map(str, args.seeds))}) "
          f"| median | first {2 * n}, median |\n| --- | --- | ---: | ---: |")
    for name in rows[0]["ranking"]:
        first = [r["ranking"][name][f"first {n}"] for r in rows]
        second = [r["ranking"][name][f"first {2 * n}"] for r in rows]
        print(f"| {name} | {' / '.join(map(str, first))} | {statistics.median(first)} | "
              f"{statistics.median(second)} |")
    print(f"\n| cleanlab filter_by | photos flagged (median of {photos}) | planted among them "
          "(median) |\n| --- | ---: | ---: |")
    for filter_by in FILTERS:
        flagged = [r["filters"][filter_by]["flagged"] for r in rows]
        hits = [r["filters"][filter_by]["planted among them"] for r in rows]
        print(f"| {filter_by} | {statistics.median(flagged)} | {statistics.median(hits)} of "
              f"{n} |")


if __name__ == "__main__":
    main()
