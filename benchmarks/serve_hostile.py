"""What a stranger's upload makes `clearclass serve` take: peak memory (VmHWM) and the
temporary folder, for the code at --src against the code installed (or another --src).

The cases of issue 21, each on a fresh server (one worker), measured from outside:
- strip: one 100000 x 1 grey PNG (177 bytes) in `file`;
- eight: eight 8900 x 8900 grey PNGs (77 KB each, under 80 MP) in one `files` request;
- chunked: a 300 MB body sent chunked (no Content-Length): the answer, how long it took,
  and the most bytes the server held in its temporary folder (Starlette's spooled files are
  unlinked at once, so they are read through the server's open files under $TMPDIR).
The server's peak memory is sampled every 20 ms, so a server killed for memory still shows
how far it got.

    git worktree add /tmp/clearclass-before 95cf77a   # the code before issue 21
    .venv/bin/python benchmarks/serve_hostile.py runs/dogs/model \
        --src /tmp/clearclass-before/src --src src
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_modes import machine  # noqa: E402

CASES = ("idle", "strip", "eight", "chunked")
CHUNKED_MB = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder (RUN/model)")
    parser.add_argument("--src", action="append", default=None,
                        help="a clearclass src/ folder to serve from (repeatable); default: "
                             "the clearclass installed")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--port", type=int, default=8850)
    args = parser.parse_args()
    m = machine()
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB, "
          f"Python {m['python']}; model: {args.model}")
    for src in args.src or [None]:
        print(f"== {src or 'installed clearclass'}")
        for case in args.cases.split(","):
            print(f"{case}: {measure(case, args.model, src, args.port)}", flush=True)


def measure(case: str, model: str, src: str | None, port: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TMPDIR": tmp}
        if src:
            env["PYTHONPATH"] = src
        server = subprocess.Popen([sys.executable, "-m", "clearclass", "serve", model,
                                   "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = _wait_for(server, port)
            watch = _Watch(server.pid, tmp)
            started = time.monotonic()
            try:
                answer = _send(case, url)
            except httpx.HTTPError as e:
                answer = type(e).__name__
            seconds = time.monotonic() - started
            time.sleep(0.1)
            watch.stop()
            state = "running" if server.poll() is None else f"ended ({server.returncode})"
            return (f"answer {answer} after {seconds:.1f} s; peak memory {watch.memory / 1e9:.2f} "
                    f"GB; temporary folder peak {watch.spooled / 1e6:.1f} MB; server {state}")
        finally:
            server.terminate()
            server.wait()


def _send(case: str, url: str) -> int:
    if case == "idle":
        return httpx.get(url + "/health").status_code
    if case == "strip":
        files = {"file": ("strip.png", _png(Image.new("L", (100000, 1))))}
    elif case == "eight":
        big = _png(Image.new("L", (8900, 8900)))
        files = [("files", (f"{i}.png", big)) for i in range(8)]
    elif case == "chunked":
        boundary = "clearclass-benchmark"
        return httpx.post(url + "/predict", content=_chunked_body(boundary), timeout=300,
                          headers={"content-type":
                                   f"multipart/form-data; boundary={boundary}"}).status_code
    else:
        raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")
    return httpx.post(url + "/predict", files=files, timeout=600).status_code


def _chunked_body(boundary: str):
    """A generator: httpx sends it chunked, without Content-Length."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
           'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode()
    chunk = b"\0" * 1_000_000
    for _ in range(CHUNKED_MB):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def _wait_for(server: subprocess.Popen, port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if server.poll() is not None:
            raise SystemExit(f"the server ended with {server.returncode} before it answered")
        try:
            httpx.get(url + "/health", timeout=1)
            return url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not answer in 60 s")


class _Watch:
    """Samples a process's VmHWM and the bytes of its open files under a folder."""

    def __init__(self, pid: int, folder: str):
        self.pid, self.folder = pid, folder
        self.memory = self.spooled = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.thread.join()

    def _run(self) -> None:
        while self.running:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM"):
                        self.memory = max(self.memory, int(line.split()[1]) * 1000)
                spooled = 0
                for fd in Path(f"/proc/{self.pid}/fd").iterdir():
                    try:
                        if os.readlink(fd).startswith(self.folder):
                            spooled += os.stat(fd).st_size
                    except OSError:
                        continue
                self.spooled = max(self.spooled, spooled)
            except OSError:  # the process has ended
                pass
            time.sleep(0.02)


if __name__ == "__main__":
    main()
