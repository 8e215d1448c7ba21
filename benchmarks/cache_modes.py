"""Peak memory and time of `--cache memory`, `disk` and `off` as the number of photos grows.

For the first 2,000, 6,000 and all 12,954 photos of imagewoof-160 (its official train/val
split kept, photos taken in the same order every time, one class after the other), each
cache mode trains one frozen epoch of efficientnet_lite0 at 128 px (`--freeze-epochs 1
--epochs 0`, the cheapest epoch) as a user runs it: `clearclass train` in a child process.
Recorded per run: peak memory (the largest process's peak RSS, from wait4, and the peak
PSS of the process and its DataLoader workers together, sampled every half second),
decode time, epoch time, processor time and the machine's load. The disk cache starts
empty in a fresh folder (first run), then the same command runs again with it full (warm).

    .venv/bin/python benchmarks/cache_modes.py     # about 40 min on 2 cores
    .venv/bin/python benchmarks/cache_modes.py --modes off-forkserver --add  # one mode more

Writes benchmarks/results/cache_modes.json and the "Cache modes" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_fastai import PeakMemory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "imagewoof-160"
SIZES = (2000, 6000, 12954)
# disk-warm: the same cache folder again; off-forkserver: off, workers forked from a
# server process that imported PyTorch (CLEARCLASS_START_METHOD=forkserver) rather than
# from the training process (Linux's default before Python 3.14).
MODES = ("memory", "disk", "disk-warm", "off", "off-forkserver")
LABELS = {"disk": "disk, first run", "disk-warm": "disk, warm", "off": "off (fork)",
          "off-forkserver": "off (forkserver)"}
SECTION = "## Cache modes: peak memory against the number of photos"
TRAIN = ["--model", "efficientnet_lite0", "--item-resize", "128", "--freeze-epochs", "1",
         "--epochs", "0", "--batch-size", "64", "--no-onnx", "--quiet"]


def interleaved(files_by_class: dict[str, list[Path]]) -> list[tuple[Path, str]]:
    """One photo of each class in turn (classes and files sorted): any prefix is balanced."""
    queues = [(label, sorted(files)) for label, files in sorted(files_by_class.items())]
    rows, depth = [], max(len(files) for _, files in queues)
    for k in range(depth):
        rows += [(files[k], label) for label, files in queues if k < len(files)]
    return rows


def subset_csv(data: Path, photos: int, folder: Path) -> tuple[Path, int, int]:
    """A CSV of the first `photos` photos, train and val in the official proportion."""
    split = {}
    for part in ("train", "val"):
        by_class = {d.name: [p for p in d.iterdir() if p.is_file()]
                    for d in (data / part).iterdir() if d.is_dir()}
        split[part] = interleaved(by_class)
    total = len(split["train"]) + len(split["val"])
    n_train = min(len(split["train"]), round(photos * len(split["train"]) / total))
    n_valid = min(len(split["val"]), photos - n_train)
    target = folder / f"imagewoof-160-{photos}.csv"
    with open(target, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "is_valid"])
        writer.writerows((str(p), label, False) for p, label in split["train"][:n_train])
        writer.writerows((str(p), label, True) for p, label in split["val"][:n_valid])
    return target, n_train, n_valid


def run_training(data: Path, mode: str, out: Path, cache_dir: Path) -> dict:
    """`clearclass train` in a child process: its peaks, wall time and RUN/summary.json."""

    cache = mode.split("-")[0]
    env = {**os.environ, "CLEARCLASS_CACHE_DIR": str(cache_dir)}
    if mode == "off-forkserver":
        env["CLEARCLASS_START_METHOD"] = "forkserver"
    command = [sys.executable, "-m", "clearclass", "train", str(data), *TRAIN,
               "--cache", cache, "--out", str(out), "--overwrite"]
    t0 = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    memory = PeakMemory(child.pid, interval=0.5)  # the process and its workers, together
    # wait4 gives this child's own peak RSS (the largest of it and the workers it reaped),
    # where RUSAGE_CHILDREN would mix in the earlier runs.
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    pss = memory.stop()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {child.returncode}")
    summary = json.loads((out / "summary.json").read_text())
    timings = summary["timings"]
    return {"peak_rss_bytes": usage.ru_maxrss * 1024, "peak_pss_bytes": pss,
            # The process's and its reaped workers' processor time, start to end: unlike
            # the wall times, hardly longer when others share the cores.
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "decode_seconds": timings["decode_seconds"],
            "train_seconds": timings["epoch_0_train_seconds"],
            "epoch_seconds": summary["epochs"][0]["seconds"],
            "data_wait_seconds": timings["epoch_0_data_wait_seconds"],
            "wall_seconds": wall, "accuracy": summary["valid_accuracy"],
            "load_average_1min": os.getloadavg()[0]}  # how busy the machine was: on a
    # shared machine the times vary with it, the peaks much less


def machine() -> dict:
    from clearclass.parallel import available_cores

    cpu, memory = platform.processor() or "unknown CPU", 0
    with contextlib.suppress(OSError, StopIteration):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x.split(":", 1)[1].strip() for x in info if x.startswith("model name"))
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        memory = int(next(x for x in lines if x.startswith("MemTotal:")).split()[1]) * 1024
    import torch

    return {"cpu": cpu, "cores": available_cores(), "memory_bytes": memory,
            "system": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__}


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        SECTION, "",
        f"`python benchmarks/cache_modes.py`, run on {results['date']}. Machine: {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB; Python {m['python']}, "
        f"torch {m['torch']}.", "",
        "Data: the first N photos of imagewoof-160 (short side 160 px), one class after the "
        "other, its official train/val split kept. Each run: `clearclass train CSV "
        + " ".join(TRAIN[:-1]) + " --cache MODE` in its own process, one frozen epoch of "
        "efficientnet_lite0 at 128 px; `disk` starts from an empty cache folder, `disk, "
        "warm` is the same command again; `off` starts its DataLoader workers as Linux does "
        "by default before Python 3.14 (fork, from the training process), `off "
        "(forkserver)` with CLEARCLASS_START_METHOD=forkserver (forked from a server that "
        "imported PyTorch once). Peak RSS: the largest process (wait4); peak PSS: "
        "the training process and its DataLoader workers together (sampled every 0.5 s). "
        "Decode: checking and decoding every photo before training (with `off`, a check "
        "only); epoch: the training pass and validation, with `off` decoding every photo. "
        "CPU: processor time of the whole command (start, decoding, the epoch, its workers "
        "included). Load: the machine's 1-minute load average at the end of the run; the "
        "cores were shared with other work, and the wall times (decode, epoch) follow the "
        "load, the processor time and the peaks of memory hardly.",
        "",
        "| photos (train + valid) | cache | peak RSS | peak PSS | decode | epoch | of which "
        "waiting for data | CPU | accuracy | load |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results["runs"]:
        mode = LABELS.get(run["mode"], run["mode"])
        lines.append(
            f"| {run['photos']:,} ({run['train']:,} + {run['valid']:,}) | {mode} | "
            f"{run['peak_rss_bytes'] / 1e9:.2f} GB | {run['peak_pss_bytes'] / 1e9:.2f} GB | "
            f"{run['decode_seconds']:.1f} s | {run['epoch_seconds']:.1f} s | "
            f"{run['data_wait_seconds']:.1f} s | {run['cpu_seconds']:.0f} s | "
            f"{run['accuracy']:.2%} | {run['load_average_1min']:.1f} |")
    return "\n".join(lines) + "\n"


def write_section(results_md: Path, section: str, first: bool = False) -> None:
    """Replace the section of RESULTS.md with the heading `section` starts with (or add it
    at the end). `first`: put it before every other section instead."""
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    heading = section.splitlines()[0]
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        if not first:
            rest = "\n" + text[end + 1:] if end != -1 else ""  # a blank line before it
            results_md.write_text(text[:start] + section.rstrip("\n") + "\n" + rest)
            return
        text = text[:start] + text[end + 1:] if end != -1 else text[:start]
    if first and "\n## " in text:
        at = text.index("\n## ") + 1
        text = text[:at] + section.rstrip("\n") + "\n\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results_md.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", type=Path,
                        default=ROOT / "benchmarks" / "results" / "cache_modes.json")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--add", action="store_true",
                        help="keep the runs already in --json (those measured again replaced)")
    parser.add_argument("--report-only", action="store_true",
                        help="only write the RESULTS.md section again from --json")
    args = parser.parse_args()
    if args.report_only:
        write_section(args.results, report(json.loads(args.json.read_text())))
        return

    work = Path(tempfile.mkdtemp(prefix="clearclass-cache-modes-"))
    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "runs": []}
    if args.add and args.json.exists():
        results["runs"] = json.loads(args.json.read_text())["runs"]
    try:
        for photos in map(int, args.sizes.split(",")):
            data, n_train, n_valid = subset_csv(args.data, photos, work)
            cache_dir = work / f"cache-{photos}"  # empty for the first disk run
            for mode in args.modes.split(","):
                run = run_training(data, mode, work / f"run-{photos}-{mode}", cache_dir)
                run.update(photos=n_train + n_valid, train=n_train, valid=n_valid, mode=mode)
                results["runs"] = [r for r in results["runs"]
                                   if (r["photos"], r["mode"]) != (run["photos"], mode)]
                results["runs"].append(run)
                results["runs"].sort(key=lambda r: (r["photos"], MODES.index(r["mode"])))
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in run.items()}), flush=True)
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2) + "\n")  # as it goes
            shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = report(results)
    print(section)
    write_section(args.results, section)


if __name__ == "__main__":
    main()
