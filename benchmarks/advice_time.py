"""What `advise` and `clean` cost beside the training they advise on.

Trains one run (efficientnet_lite0, offline ImageNet weights, `--epochs 1`: one frozen and
one unfrozen epoch) on a data folder, imagewoof-160 at 128 px by default, then times in fresh
processes, alternating, `--repeats` times each:
- `clearclass advise RUN` with no kept features (the features pass included: a cold start);
- `clearclass advise RUN` again (the features kept in RUN/advice/ are reused);
- `clearclass clean RUN` (kept features too).
It prints the machine, each time, the medians and their ratio to the training time, and the
peak memory of each process; `--json` writes them.

    python benchmarks/advice_time.py --repeats 3 --json benchmarks/results/advice_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")),
               platform.processor() or "unknown CPU")
    flags = next((set(x.split(":", 1)[1].split()) for x in info if x.startswith("flags")), set())
    simd = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu} ({simd or 'no AVX2'}), {os.cpu_count()} cores, {memory:.0f} GiB, "
            f"Python {platform.python_version()}")


# The command as `clearclass` runs it, reporting its own peak resident memory on exit
# (RUSAGE_CHILDREN would give the largest child so far, not this one's).
COMMAND = """
import atexit, resource, sys
atexit.register(lambda: print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              file=sys.stderr))
sys.argv = ["clearclass", *sys.argv[1:]]
from clearclass.cli import main
main()
"""


def timed(args: list[str]) -> dict:
    """Wall time and peak memory (of the main process) of one clearclass command, in a fresh
    process."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", COMMAND, *args], capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"clearclass {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak = next(int(x.split()[1]) for x in done.stderr.splitlines() if x.startswith("PEAK_KB"))
    return {"seconds": seconds, "peak_gb": peak / 1e6, "stdout": done.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "imagewoof-160")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--run", type=Path, help="a run trained already (skips the training)")
    parser.add_argument("--train-seconds", type=float,
                        help="with --run: the training time to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        train_seconds = args.train_seconds
        train_peak = None
        if run is None:
            run = Path(tmp) / "run"
            trained = timed(["train", str(args.data), "--model", "efficientnet_lite0",
                             "--item-resize", str(args.size), "--epochs", "1", "--out", str(run),
                             "--quiet"])
            train_seconds, train_peak = trained["seconds"], trained["peak_gb"]
            print(f"train: {train_seconds:.0f} s", flush=True)
        results: dict[str, list[dict]] = {"advise, cold": [], "advise, warm": [], "clean": []}
        for repeat in range(args.repeats):
            shutil.rmtree(run / "advice", ignore_errors=True)
            for name, command in (("advise, cold", ["advise", str(run), "--quiet"]),
                                  ("advise, warm", ["advise", str(run), "--quiet"]),
                                  ("clean", ["clean", str(run), "--quiet"])):
                result = timed(command)
                results[name].append({k: v for k, v in result.items() if k != "stdout"})
                print(f"#{repeat} {name}: {result['seconds']:.1f} s", flush=True)
    summary = {"machine": machine(), "data": args.data.name, "size": args.size,
               "train_seconds": train_seconds, "train_peak_gb": train_peak,
               "repeats": args.repeats, "runs": results}
    print(f"\nMachine: {summary['machine']}\nData: {args.data.name} at {args.size} px")
    print("| step | median s | range s | x training | peak GB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    if train_seconds:
        print(f"| train (1 frozen + 1 unfrozen epoch) | {train_seconds:.0f} | | 1 | "
              f"{train_peak or float('nan'):.2f} |")
    for name, rs in results.items():
        seconds = [r["seconds"] for r in rs]
        median = statistics.median(seconds)
        ratio = f"{median / train_seconds:.2f}" if train_seconds else ""
        print(f"| {name} | {median:.1f} | {min(seconds):.1f}-{max(seconds):.1f} | {ratio} | "
              f"{max(r['peak_gb'] for r in rs):.2f} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
