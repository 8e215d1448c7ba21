"""What `train --track` costs: the same training untracked, with TensorBoard, and with MLflow.

Trains efficientnet_lite0 (offline ImageNet weights, `--epochs 1`: one frozen and one
unfrozen epoch) on a data folder, imagewoof-2k at 128 px by default, in fresh processes,
`--repeats` times each, the modes alternating:
- none: no tracker;
- tensorboard: `--track tensorboard` (event files in RUN/tensorboard/);
- mlflow, local store: `--track mlflow` without MLFLOW_TRACKING_URI (RUNS/mlflow.db; the
  first repeat creates the store);
- mlflow, server: `--track mlflow` against a real `mlflow server` on loopback (SQLite store,
  artifacts proxied by the server), started by this script.
It prints the machine, each time, the medians, their ratio to the untracked training and
the peak memory of each process; `--json` writes them.

    python benchmarks/tracking_cost.py --repeats 3 --json benchmarks/results/tracking_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from advice_time import SHARED, machine, timed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return server, url
        except OSError:
            time.sleep(0.2)
    sys.exit("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "imagewoof-2k")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    modes = {"none": ([], {}), "tensorboard": (["--track", "tensorboard"], {}),
             "mlflow, local store": (["--track", "mlflow"], {}),
             "mlflow, server": (["--track", "mlflow"], None)}
    results: dict[str, list[dict]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp))
        try:
            for repeat in range(args.repeats):
                for name, (options, env) in modes.items():
                    run = Path(tmp) / "runs" / f"{name.replace(', ', '-')}-{repeat}"
                    environment = {"MLFLOW_TRACKING_URI": url} if env is None else {}
                    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI",)}
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                    os.environ.update(environment)
                    try:
                        result = timed(["train", str(args.data), "--model", "efficientnet_lite0",
                                        "--item-resize", str(args.size), "--epochs", "1",
                                        "--out", str(run), "--quiet", *options])
                    finally:
                        os.environ.pop("MLFLOW_TRACKING_URI", None)
                        os.environ.update({k: v for k, v in saved.items() if v is not None})
                    accuracy = json.loads((run / "summary.json").read_text())["valid_accuracy"]
                    results[name].append({"seconds": result["seconds"],
                                          "peak_gb": result["peak_gb"], "accuracy": accuracy})
                    print(f"#{repeat} {name}: {result['seconds']:.1f} s, "
                          f"accuracy {accuracy:.2%}", flush=True)
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    base = statistics.median(r["seconds"] for r in results["none"])
    summary = {"machine": machine(), "data": args.data.name, "size": args.size,
               "repeats": args.repeats, "runs": results}
    print(f"\nMachine: {summary['machine']}\nData: {args.data.name} at {args.size} px, "
          "efficientnet_lite0, 1 frozen + 1 unfrozen epoch")
    print("| tracking | median s | range s | x untracked | peak GB | accuracy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, rs in results.items():
        seconds = [r["seconds"] for r in rs]
        median = statistics.median(seconds)
        print(f"| {name} | {median:.1f} | {min(seconds):.1f}-{max(seconds):.1f} | "
              f"{median / base:.3f} | {max(r['peak_gb'] for r in rs):.2f} | "
              f"{statistics.median(r['accuracy'] for r in rs):.2%} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
