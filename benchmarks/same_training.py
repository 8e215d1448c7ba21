"""Two versions of clearclass side by side: the same training, figures and time.

For a change that must not alter what a user sees (issue 22's restructuring): each version
trains efficientnet_lite0 as `clearclass demo` does (the bundled 240-photo sample, one
frozen and one unfrozen epoch, 224 px, batch 16) in a fresh process, alternating between
versions; the script prints each run's epoch table, whether the tables agree digit for
digit, and the median wall time and peak memory of each version.

    python benchmarks/same_training.py --src /tmp/clearclass-before/src --src src --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = """
import json, resource, sys, time
from clearclass.demo import SAMPLE_PHOTOS
from clearclass.training import train
t0 = time.perf_counter()
run = train(SAMPLE_PHOTOS, out=sys.argv[1], model="efficientnet_lite0", epochs=1,
            freeze_epochs=1, item_resize=224, batch_size=16, overwrite=True, cache="memory")
print("RESULT", json.dumps({
    "seconds": time.perf_counter() - t0,
    "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    "table": [[r.epoch, round(r.train_loss, 6), round(r.valid_loss, 6), round(r.accuracy, 6),
               r.stage] for r in run.history]}))
"""


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", required=True,
                        help="a clearclass source folder (the one holding clearclass/)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {src: [] for src in args.src}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for src in args.src:
                env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                out = Path(tmp) / f"run-{repeat}"
                t0 = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", TRAIN, str(out)], env=env,
                                      capture_output=True, text=True, check=True)
                line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
                result = json.loads(line[len("RESULT "):])
                result["process_seconds"] = time.perf_counter() - t0
                results[src].append(result)
                print(f"{src} #{repeat}: {result['process_seconds']:.1f} s, "
                      f"peak {result['peak_gb']:.2f} GB, {result['table']}", flush=True)
    print(f"\nMachine: {machine()}")
    tables = {json.dumps(r["table"]) for rs in results.values() for r in rs}
    print("Epoch tables identical across versions and repeats:", len(tables) == 1)
    for src, rs in results.items():
        print(f"{src}: median {statistics.median(r['process_seconds'] for r in rs):.1f} s "
              f"(process), median peak {statistics.median(r['peak_gb'] for r in rs):.2f} GB "
              f"(range {min(r['peak_gb'] for r in rs):.2f}-{max(r['peak_gb'] for r in rs):.2f}), "
              "accuracy "
              f"{rs[0]['table'][-1][3]:.1%}")


if __name__ == "__main__":
    main()
