"""The deploy install: prediction and serving in a fresh virtual environment that holds only
deploy/requirements.txt and clearclass itself (no PyTorch, timm, matplotlib or scipy)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import COLOURS, REPO, make_photo

pytestmark = pytest.mark.slow  # builds a virtual environment and installs into it


@pytest.fixture(scope="module")
def deploy_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("deploy") / "venv"
    # Without pip of its own (ensurepip takes longer than the rest of the venv): this
    # environment's pip installs into it (pip --python, pip >= 22.3).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
           "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REPO / "deploy" / "requirements.txt")], check=True)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True)
    return venv


def _run(venv: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True,
                          text=True, **kwargs)


def test_the_deploy_install_has_no_pytorch(deploy_venv):
    for heavy in ("torch", "timm", "matplotlib", "scipy"):
        assert _run(deploy_venv, "python", "-c", f"import {heavy}").returncode != 0, heavy


def test_predict_and_serve_work_without_pytorch(deploy_venv, trained_run, tmp_path):
    photo = make_photo(tmp_path / "red.jpg", COLOURS["red"], size=(64, 48), seed=3)
    model = str(trained_run / "model")
    predicted = _run(deploy_venv, "clearclass", "predict", model, str(photo), "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)[0]["label"] == "red"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(deploy_venv / "bin" / "clearclass"), "serve", model,
                               "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ""})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                assert server.poll() is None, "the server stopped"
                time.sleep(0.1)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"red.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
        body += photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            url + "/predict", data=body, method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.loads(answer.read())["label"] == "red"
    finally:
        server.terminate()
        server.wait(timeout=20)
