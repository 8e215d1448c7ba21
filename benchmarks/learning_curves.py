"""Learning curves: how well the 10-40% points predict the accuracy at 100%, and how well the
feature-head proxy agrees with real fine-tunes.

(a) For imagewoof-2k (labels.csv, 160 px) and imagewoof-160 (train/ and val/, 128 px): one
run each, `clearclass train DATA --model efficientnet_lite0 --item-resize N --epochs 1`
(one frozen and one unfrozen epoch, offline ImageNet weights) in its own process; then the
features of every photo (`run_features`), the learning curves at 10, 20, 40, 70 and 100% of
each class's training photos (`learning_curves`, several seeds), the power law fitted on the
10-40% points only, and its prediction of the overall and per-class accuracy at 100%
against the measured ones.

(b) On imagewoof-2k: real fine-tunes (a fresh `clearclass train`, same settings) on 20% and
40% of each class's training photos (a labels CSV holding the subset, validation photos
untouched), against the feature-head proxy at those fractions. The proxy's features come
from the network fine-tuned on all photos, so it is expected to be optimistic.

    .venv/bin/python benchmarks/learning_curves.py        # about 15 min on 2 cores

Runs are kept in --work (default /tmp/clearclass-learning-curves) and reused when a later
call finds them complete (their recorded training time is reused too); --fresh trains
again. Writes benchmarks/results/learning_curves.json and the "Learning curves" section
of RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_modes import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SECTION = "## Learning curves"
# name: (DATA as given to train, relative to the datasets folder; --item-resize)
CASES = {"imagewoof-2k": ("imagewoof-2k/labels.csv", 160),
         "imagewoof-160": ("imagewoof-160", 128)}
PROXY_CASE, PROXY_FRACTIONS = "imagewoof-2k", (0.2, 0.4)
FIT_FRACTIONS = (0.1, 0.2, 0.4)


def avx512() -> bool:
    try:
        flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines()
                     if x.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return " avx512f" in flags


def train_command(data: Path, size: int, seed: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "clearclass", "train", str(data), "--model",
            "efficientnet_lite0", "--item-resize", str(size), "--epochs", "1", "--seed",
            str(seed), "--out", str(out), "--overwrite", "--quiet"]


def shown(command: list[str], data: Path, name: str, out: Path) -> str:
    """A command as RESULTS.md shows it: dataset names, not this machine's paths."""
    words = ["clearclass" if i < 3 else w for i, w in enumerate(command)][2:]
    return " ".join(name if w == str(data) else "RUN" if w == str(out) else w
                    for w in words)


def train(data: Path, size: int, seed: int, out: Path, fresh: bool) -> dict:
    """One `clearclass train` in its own process (or the one kept in `out`)."""
    record = out.with_name(out.name + ".json")
    if not fresh and record.exists() and (out / "summary.json").exists():
        return json.loads(record.read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = train_command(data, size, seed, out)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    seconds = time.perf_counter() - started
    with open(out / "metrics.csv", newline="") as f:
        accuracy = float(list(csv.DictReader(f))[-1]["accuracy"])
    result = {"seconds": seconds, "accuracy": accuracy, "command": command,
              "load": os.getloadavg()[0]}
    record.write_text(json.dumps(result))
    return result


def subset_csv(labels: Path, fraction: float, seed: int, out: Path) -> Path:
    """labels.csv with `fraction` of each class's training photos (at least one), drawn
    with `seed`, and every validation photo; paths made absolute."""
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    kept = [r for r in rows if r["is_valid"] == "True"]
    for label in sorted({r["label"] for r in rows}):
        train_rows = [r for r in rows if r["label"] == label and r["is_valid"] != "True"]
        take = max(1, int(round(fraction * len(train_rows))))
        kept += [train_rows[i] for i in sorted(rng.permutation(len(train_rows))[:take])]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "is_valid"])
        writer.writeheader()
        for r in kept:
            writer.writerow({"path": str(labels.parent / r["path"]), "label": r["label"],
                             "is_valid": r["is_valid"]})
    return out


def analyse(run: Path, seeds: int) -> dict:
    """Features, learning curves, the 10-40% fit and its prediction at 100%."""
    from clearclass.advice.features import run_features
    from clearclass.advice.learning_curve import fit_power_law, learning_curves

    record = run.with_name(run.name + ".features.json")  # the time of the pass that made them
    started = time.perf_counter()
    found = run_features(run, device="cpu")
    feature_seconds = time.perf_counter() - started
    if record.exists() and (run / "advice").stat().st_mtime < record.stat().st_mtime:
        feature_seconds = json.loads(record.read_text())["seconds"]
    else:
        record.write_text(json.dumps({"seconds": feature_seconds, "load": os.getloadavg()[0]}))
    started = time.perf_counter()
    curves = learning_curves(found, seeds=seeds)
    curve_seconds = time.perf_counter() - started
    early = [i for i, f in enumerate(curves.fractions) if f in FIT_FRACTIONS]
    full = curves.fractions.index(1.0)

    def predict(photos: np.ndarray, accuracy: np.ndarray, photos_now: float, valid: int):
        # photos: fractions x seeds; accuracy: fractions x seeds (nan: unknown); the floor
        # as LearningCurves.class_fit sets it (half a validation photo)
        fit = fit_power_law(photos[early].ravel(), 1 - accuracy[early].ravel(),
                            floor=0.5 / max(valid, 1))
        return None if fit is None else 1 - fit.error(photos_now), fit

    def covered(fit, photos_now: float, measured: float) -> bool | None:
        if fit is None:
            return None
        low, high = fit.error_interval(photos_now)
        return 1 - high <= measured <= 1 - low

    overall_photos = curves.photos.sum(axis=2)  # fractions x seeds, all classes
    measured = float(np.nanmean(curves.accuracy[full]))
    predicted, fit = predict(overall_photos, curves.accuracy, overall_photos[full].mean(),
                             int(curves.valid_photos.sum()))
    per_class = []
    for c, class_id in enumerate(curves.class_ids):
        got = float(np.nanmean(curves.class_accuracy[full, :, c]))
        now = curves.photos[full, 0, c]
        guess, class_fit = predict(curves.photos[:, :, c], curves.class_accuracy[:, :, c],
                                   now, int(curves.valid_photos[c]))
        per_class.append({"class": class_id, "photos": int(now),
                          "measured": got, "predicted": guess,
                          "covered": covered(class_fit, now, got),
                          "fit": None if class_fit is None else class_fit.as_dict()})
    errors = [abs(r["predicted"] - r["measured"]) for r in per_class
              if r["predicted"] is not None]
    return {"photos": len(found), "train_photos": int((~found.is_valid).sum()),
            "valid_photos": int(found.is_valid.sum()), "width": int(found.features.shape[1]),
            "feature_seconds": feature_seconds, "curve_seconds": curve_seconds,
            "seeds": seeds, "fractions": list(curves.fractions),
            "accuracy": curves.accuracy.tolist(),
            "overall": {"measured": measured, "predicted": predicted,
                        "covered": covered(fit, overall_photos[full].mean(), measured),
                        "fit": None if fit is None else fit.as_dict()},
            "per_class": per_class,
            "per_class_abs_error": {"median": float(np.median(errors)) if errors else None,
                                    "p90": float(np.percentile(errors, 90)) if errors
                                    else None, "fitted": len(errors),
                                    "covered": sum(bool(r["covered"]) for r in per_class),
                                    "classes": len(per_class)},
            "proxy": {str(f): float(np.nanmean(curves.accuracy[i]))
                      for i, f in enumerate(curves.fractions)},
            "proxy_by_seed": {str(f): [float(a) for a in curves.accuracy[i]]
                              for i, f in enumerate(curves.fractions)}}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report(results: dict) -> str:
    m = results["machine"]
    lines = [SECTION, "",
             f"`python benchmarks/learning_curves.py`, run on {results['date']}. Machine: "
             f"{m['cpu']}, {m['cores']} cores ({'AVX-512' if m['avx512'] else 'no AVX-512'})"
             f", {m['memory_bytes'] / 2**30:.0f} GiB, no GPU; Python {m['python']}, torch "
             f"{m['torch']}. The cores were shared with other work: times are noisy.", ""]
    lines += ["### (a) The 10-40% points predict the accuracy at 100%", "",
              "Heads (`feature_head`: each photo's features scaled to length 1, then "
              "LogisticRegression) trained "
              "on 10, 20, 40, 70 and 100% of each class's training photos, "
              f"{results['seeds']} seeds, scored on every validation photo; the power law "
              "error(n) = a n^-b fitted on the 10-40% points only; its accuracy at the 100% "
              "photo count against the measured one (mean over seeds).", "",
              "| data | photos (train + valid) | training | features | curves | measured "
              "at 100% | predicted | error | in the 80% interval | per-class abs. error: median | "
              "p90 | classes fitted | classes in their 80% interval |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | "
              "---: | ---: |"]
    for name, case in results["cases"].items():
        a, o, e = case["analysis"], case["analysis"]["overall"], \
            case["analysis"]["per_class_abs_error"]
        error = None if o["predicted"] is None else o["predicted"] - o["measured"]
        median, p90 = (("n/a" if e[k] is None else f"{100 * e[k]:.1f} pts")
                       for k in ("median", "p90"))
        lines.append(
            f"| {name}, {case['size']} px | {a['train_photos']:,} + {a['valid_photos']:,} | "
            f"{case['training']['seconds']:.0f} s | {a['feature_seconds']:.0f} s | "
            f"{a['curve_seconds']:.1f} s | {pct(o['measured'])} | {pct(o['predicted'])} | "
            f"{'n/a' if error is None else f'{round(100 * error, 1) + 0.0:+.1f} pts'} | "
            f"{'yes' if o['covered'] else 'no'} | {median} | {p90} | "
            f"{e['fitted']} of {e['classes']} | {e['covered']} of {e['fitted']} |")
    lines += ["", "Overall accuracy of the heads by fraction (mean over seeds):", "",
              "| data | " + " | ".join(f"{round(100 * f)}%" for f in
                                       next(iter(results["cases"].values()))["analysis"]
                                       ["fractions"]) + " |",
              "| --- |" + " ---: |" * len(next(iter(results["cases"].values()))["analysis"]
                                          ["fractions"])]
    for name, case in results["cases"].items():
        lines.append(f"| {name} | " + " | ".join(
            pct(v) for v in case["analysis"]["proxy"].values()) + " |")
    lines += ["", "### (b) The feature-head proxy against real fine-tunes, "
              f"{PROXY_CASE}", "",
              "Real: a fresh `clearclass train` (same settings) on a labels CSV holding the "
              "fraction of each class's training photos (every validation photo kept); proxy: "
              "the head on the full run's features at that fraction (mean over seeds).", "",
              "| fraction | training photos | real fine-tunes (each) | real, mean | proxy | "
              "proxy - real |", "| ---: | ---: | --- | ---: | ---: | ---: |"]
    for row in results["proxy_check"]:
        lines.append(f"| {round(100 * row['fraction'])}% | {row['train_photos']:,} | "
                     + ", ".join(pct(r["accuracy"]) for r in row["real"])
                     + f" | {pct(row['real_mean'])} | {pct(row['proxy'])} | "
                     f"{round(100 * (row['proxy'] - row['real_mean']), 1) + 0.0:+.1f} pts |")
    lines += ["", "Commands (RUN: a folder of --work; SUBSET.csv: labels.csv cut to the "
              "fraction):", "", "```"]
    lines += list(dict.fromkeys(
        [c["training"]["shown"] for c in results["cases"].values()]
        + [r["shown"] for row in results["proxy_check"] for r in row["real"]]))
    lines += ["```", "", results.get("reading", "").strip(), ""]
    return "\n".join(lines) + "\n"


def _without(data, key: str):
    """`data` with every `key` of every dict in it left out."""
    if isinstance(data, dict):
        return {k: _without(v, key) for k, v in data.items() if k != key}
    if isinstance(data, list):
        return [_without(v, key) for v in data]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/clearclass-learning-curves"))
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the learning curves")
    parser.add_argument("--finetune-seeds", type=int, default=2,
                        help="real fine-tunes per fraction (subset and training seed)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--fresh", action="store_true", help="train again, keep no run")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "benchmarks" / "results" / "learning_curves.json")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    from clearclass import progress

    progress.quiet()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": datetime.date.today().isoformat(),
                     "machine": {**machine(), "avx512": avx512()}, "seeds": args.seeds,
                     "cases": {}, "proxy_check": []}
    for name in args.cases.split(","):
        relative, size = CASES[name]
        data, out = DATASETS / relative, args.work / name
        training = train(data, size, 42, out, args.fresh)
        training["shown"] = shown(training["command"], data, relative, out)
        print(f"{name}: trained in {training['seconds']:.0f} s, "
              f"{pct(training['accuracy'])}", flush=True)
        results["cases"][name] = {"size": size, "training": training}
    if PROXY_CASE in results["cases"]:
        relative, size = CASES[PROXY_CASE]
        labels = DATASETS / relative
        for fraction in PROXY_FRACTIONS:
            real = []
            for seed in range(args.finetune_seeds):
                subset = subset_csv(labels, fraction, seed, args.work /
                                    f"{PROXY_CASE}-{round(100 * fraction)}pct-{seed}.csv")
                out = subset.with_suffix("")
                done = train(subset, size, 42 + seed, out, args.fresh)
                done["shown"] = shown(done["command"], subset, "SUBSET.csv", out)
                with open(subset, newline="") as f:
                    done["train_photos"] = sum(r["is_valid"] != "True"
                                               for r in csv.DictReader(f))
                print(f"{PROXY_CASE} {fraction:.0%} seed {seed}: {done['seconds']:.0f} s, "
                      f"{pct(done['accuracy'])}", flush=True)
                real.append(done)
            results["proxy_check"].append({"fraction": fraction, "real": real,
                                           "train_photos": real[0]["train_photos"]})
    if args.train_only:
        return
    for name, case in results["cases"].items():
        case["analysis"] = analyse(args.work / name, args.seeds)
        a = case["analysis"]
        print(f"{name}: features {a['feature_seconds']:.0f} s, curves "
              f"{a['curve_seconds']:.1f} s, at 100% measured {pct(a['overall']['measured'])},"
              f" predicted {pct(a['overall']['predicted'])}", flush=True)
    for row in results["proxy_check"]:
        row["real_mean"] = float(np.mean([r["accuracy"] for r in row["real"]]))
        row["proxy"] = results["cases"][PROXY_CASE]["analysis"]["proxy"][str(row["fraction"])]
    if args.json.exists():  # keep the reading written by hand
        results["reading"] = json.loads(args.json.read_text()).get("reading", "")
    # Committed results name datasets, not this machine's paths: `shown` says each command.
    args.json.write_text(json.dumps(_without(results, "command"), indent=1, default=float))
    write_section(args.results, report(results))
    print(report(results))


if __name__ == "__main__":
    main()
