"""`clearclass serve` under load, beside fastai's `learn.predict` behind a minimal FastAPI app.

Both serve efficientnet_lite0 at 224 px, 10 dog breeds (the bundled sample; clearclass
trains one frozen epoch on it, fastai's learner gets the same offline ImageNet body, and
prediction costs the same whatever the head learned). Each server runs alone on loopback
(`uvicorn`, one process), and a client process sends the same JPEG (a 500 x 375 photo of the
sample) as multipart POSTs from 1, 4 and 16 concurrent connections for DURATION seconds
each, after a warm-up. Reported per server and concurrency: requests answered, errors,
throughput, p50 and p99 latency; the machine; the ratio of throughputs at 16 clients.

The fastai app is the one a fastai user writes (`learn.predict` in an `async def` endpoint,
as in fastai's course): one photo at a time. clearclass gathers concurrent photos into
batches for one ONNX Runtime run.

    .venv/bin/pip install -e '.[benchmark,serve]'
    .venv/bin/python benchmarks/serve_load.py     # about 6 minutes on 2 cores

Writes benchmarks/results/serve_load.json and the "Serving under load" section of
RESULTS.md. Goal (issue 12): at least 3x fastai's throughput at 16 clients, p99 under 100 ms
at 4 clients.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_modes import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "clearclass" / "demo_photos"
CONCURRENCY = (1, 4, 16)
DURATION, WARMUP = 20.0, 3.0
SECTION = "## Serving under load"

FASTAI_APP = '''
import io, sys
sys.path.insert(0, {benchmarks!r})
from fastapi import FastAPI, File, UploadFile
from fastai.vision.core import PILImage
from vs_fastai import _fastai_learner
from pathlib import Path

learn = _fastai_learner(Path({labels!r}), "efficientnet_lite0", 42)
app = FastAPI()

@app.post("/predict")
async def predict(file: UploadFile = File(...)):
    label, index, probabilities = learn.predict(PILImage.create(io.BytesIO(await file.read())))
    return {{"label": str(label), "probability": float(probabilities[index])}}

@app.get("/health")
async def health():
    return {{"status": "ok"}}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    import httpx

    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        if process.poll() is not None:
            raise SystemExit(f"the server stopped with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def load(url: str, photo: bytes, clients: int, seconds: float) -> dict:
    """`clients` connections posting `photo` for `seconds`: latencies and errors."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def one_client():
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    answer = http.post("/predict",
                                       files={"file": ("dog.jpg", photo, "image/jpeg")})
                    ok = answer.status_code == 200 and "label" in answer.json()
                    problem = "" if ok else f"{answer.status_code} {answer.text[:80]}"
                except httpx.HTTPError as e:
                    problem = repr(e)
                elapsed = time.perf_counter() - t0
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))

    started = time.perf_counter()
    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0

    return {"clients": clients, "seconds": wall, "answered": len(latencies),
            "errors": len(errors), "first_error": errors[0] if errors else "",
            "throughput": len(latencies) / wall, "p50_ms": 1000 * pct(0.50),
            "p99_ms": 1000 * pct(0.99)}


def measure(name: str, command: list[str], env: dict, photo: bytes, port: int,
            seconds: float) -> list[dict]:
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until_up(url, server)
        load(url, photo, 4, WARMUP)  # first requests: allocations, lazy imports
        rows = []
        for clients in CONCURRENCY:
            row = load(url, photo, clients, seconds)
            row["server"] = name
            rows.append(row)
            print(f"{name:10} {clients:2} clients: {row['throughput']:6.1f}/s, p50 "
                  f"{row['p50_ms']:6.1f} ms, p99 {row['p99_ms']:6.1f} ms, "
                  f"{row['errors']} errors", flush=True)
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def labels_csv(folder: Path) -> Path:
    rows = ["path,label,is_valid"]
    for class_dir in sorted(d for d in DEMO.iterdir() if d.is_dir()):
        for i, photo in enumerate(sorted(class_dir.glob("*.jpg"))):
            rows.append(f"{photo},{class_dir.name},{i % 5 == 0}")
    path = folder / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DURATION)
    parser.add_argument("--servers", default="clearclass,fastai",
                        help="Which to measure (a trial of one alone is not written down).")
    args = parser.parse_args()
    seconds, servers = args.seconds, args.servers.split(",")
    photo = sorted((DEMO / "n02088364-beagle").glob("*.jpg"))[0].read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "clearclass", "train", str(DEMO), "--model",
                        "efficientnet_lite0", "--freeze-epochs", "1", "--epochs", "0",
                        "--out", str(tmp / "run"), "--quiet"], check=True)
        port, rows = free_port(), []
        if "clearclass" in servers:
            command = [sys.executable, "-m", "clearclass", "serve",
                       str(tmp / "run" / "model"), "--port", str(port)]
            rows += measure("clearclass", command, {}, photo, port, seconds)
        (tmp / "fastai_app.py").write_text(FASTAI_APP.format(
            benchmarks=str(ROOT / "benchmarks"), labels=str(labels_csv(tmp))))
        port = free_port()
        if "fastai" not in servers:
            return
        rows += measure("fastai", [sys.executable, "-m", "uvicorn", "fastai_app:app", "--port",
                                   str(port), "--log-level", "warning"],
                        {"PYTHONPATH": str(tmp)}, photo, port, seconds)
    results = {"date": datetime.date.today().isoformat(), "machine": machine(),
               "seconds_per_level": seconds, "photo_bytes": len(photo), "rows": rows}
    out = ROOT / "benchmarks" / "results" / "serve_load.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    by = {(r["server"], r["clients"]): r for r in rows}
    ratio = by["clearclass", 16]["throughput"] / max(by["fastai", 16]["throughput"], 1e-9)
    m = results["machine"]
    lines = [SECTION, "",
             f"`python benchmarks/serve_load.py`, run on {results['date']}. Machine: {m['cpu']}, "
             f"{m['cores']} cores; server and client processes on the same machine, loopback. "
             f"efficientnet_lite0, 224 px, 10 classes; one {len(photo):,}-byte JPEG posted "
             f"for {seconds:.0f} s per level after a warm-up.", "",
             "| server | clients | answered | errors | requests/s | p50 | p99 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['server']} | {r['clients']} | {r['answered']} | {r['errors']} | "
              f"{r['throughput']:.1f} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms |"
              for r in rows]
    lines += ["", f"Throughput at 16 clients: clearclass {ratio:.1f}x fastai. "
              f"p99 at 4 clients: clearclass {by['clearclass', 4]['p99_ms']:.0f} ms "
              f"(goal: 3x, under 100 ms).", ""]
    section = "\n".join(lines)
    write_section(ROOT / "benchmarks" / "RESULTS.md", section)
    print(section)


if __name__ == "__main__":
    main()
