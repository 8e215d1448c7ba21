"""Shared fixtures: small generated photo folders, and the real photos when present."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEMO_PHOTOS = REPO / "src" / "clearclass" / "demo_photos"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def make_photo(path: Path, colour=(128, 128, 128), size=(48, 40), seed: int = 0,
               mode: str = "RGB", **save_options) -> Path:
    """A noisy photo of one dominant colour, saved in the format its suffix says."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_options)
    return path


def make_dataset(root: Path, per_class: int = 10, classes=("red", "green", "blue"),
                 size=(48, 40)) -> Path:
    """DATA/<colour>/<n>.jpg: classes a tiny model separates in one or two epochs."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            make_photo(root / name / f"{i:03d}.jpg", COLOURS.get(name, (128, 128, 128)),
                       size=size, seed=100 * c + i)
    return root


# Each photo of a multi-label set: its labels, drawn as vertical stripes of their colours
# (grey where it has none); every subset of the three colours.
LABEL_SETS = ((), ("red",), ("green",), ("blue",), ("green", "red"), ("blue", "red"),
              ("blue", "green"), ("blue", "green", "red"))


def make_multi_label_dataset(root: Path, per_set: int = 6, size=(48, 40),
                             delimiter: str = ";", sets=LABEL_SETS) -> Path:
    """ROOT/labels.csv (path,label) over ROOT/images/<n>.jpg: each photo a stripe of the
    colour of each of its labels, every label set of `sets` `per_set` times. Returns the
    CSV."""
    rows = ["path,label"]
    rng = np.random.default_rng(0)
    w, h = size
    for s, labels in enumerate(sets):
        for i in range(per_set):
            colours = [COLOURS[c] for c in labels] or [(128, 128, 128)]
            pixels = np.zeros((h, w, 3))
            for k, colour in enumerate(colours):
                pixels[:, k * w // len(colours):(k + 1) * w // len(colours)] = colour
            pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
            path = root / "images" / f"{s}-{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "RGB").save(path)
            rows.append(f"images/{path.name},{delimiter.join(labels)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture
def multi_label_photos(tmp_path: Path) -> Path:
    """A multi-label labels CSV (`make_multi_label_dataset`)."""
    return make_multi_label_dataset(tmp_path / "stripes")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests keep decoded photos in their own folder, never in the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("pixel-cache")
    previous = os.environ.get("CLEARCLASS_CACHE_DIR")
    os.environ["CLEARCLASS_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("CLEARCLASS_CACHE_DIR", None)
    else:
        os.environ["CLEARCLASS_CACHE_DIR"] = previous


@pytest.fixture
def colour_photos(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "colours")


def real_photo_root() -> Path:
    """Real dog photos: the shared Imagewoof set when present, else the bundled sample."""
    shared = SHARED_DATASETS / "imagewoof-2k"
    return shared if shared.is_dir() else DEMO_PHOTOS


# --- tiny training, and the command line ----------------------------------------------------

# Settings that train timm's 0.4M-parameter test_resnet in seconds on the CPU, with nothing
# to download: one frozen epoch and one unfrozen, no ONNX export. A test that needs more
# (more epochs, a model exported) says so: tiny(epochs=3) or tiny_options(onnx=True).
TINY = dict(model="test_resnet", pretrained=False, item_resize=32, batch_size=8,
            freeze_epochs=1, epochs=1, learning_rate=1e-2, head_speedup=1.0, workers=0,
            device="cpu", onnx=False)


def tiny(**changes) -> dict:
    """TINY with `changes`, for the Python API: train(data, out=..., **tiny(epochs=0))."""
    return {**TINY, **changes}


def tiny_options(**changes) -> list[str]:
    """TINY with `changes` as command-line options (pretrained=False: --no-pretrained; a
    setting changed to None is left out, at its default)."""
    options = []
    for name, value in tiny(**changes).items():
        option = "--" + name.replace("_", "-")
        if value is True:
            options.append(option)
        elif value is False:
            options.append("--no-" + option[2:])
        elif value is not None:
            options += [option, str(value)]
    return options


@pytest.fixture
def tiny_train_settings() -> dict:
    """TINY, for the tests that take it as a fixture."""
    return tiny()


def run_cli(*args, env: dict | None = None, cwd: Path | None = None, in_process: bool = True,
            text: bool = True) -> subprocess.CompletedProcess:
    """`clearclass ARGS`: its exit status, stdout and stderr, and never a traceback.

    In this process by default: `clearclass.cli.main`, as the command runs it, with its
    SystemExit caught, so that a test of a message does not wait seconds for a fresh Python
    to import PyTorch. `in_process=False` starts `python -m clearclass` as a user does: for
    what only a real process shows (signals, the exit status the shell sees, bytes written
    to a terminal's encoding, warnings printed, what gets imported); keep one such test for
    each way the command ends.
    """
    args = [str(a) for a in args]
    if not in_process:
        result = subprocess.run([sys.executable, "-m", "clearclass", *args], capture_output=True,
                                text=text, timeout=300, cwd=cwd, env={**os.environ, **(env or {})})
        assert ("Traceback" if text else b"Traceback") not in result.stderr, result.stderr
        return result
    assert text, "bytes as a terminal gets them need a real process: in_process=False"
    from clearclass.cli import main

    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ, env or {}))
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        argv, sys.argv = sys.argv, ["clearclass", *args]
        try:
            main()
            code = 0
        except SystemExit as exit:  # as the interpreter turns it into an exit status
            code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        finally:
            sys.argv = argv
    printed = []
    for stream in (out, err):
        stream.flush()
        printed.append(stream.buffer.getvalue().decode("utf-8"))
    return subprocess.CompletedProcess(["clearclass", *args], code, *printed)



def run_cli_all(*commands: tuple, in_process: bool = False) -> list:
    """Several commands in fresh processes, two at a time (most of each is Python importing
    PyTorch, on one core); in_process=True runs them here, one after the other."""
    if in_process:
        return [run_cli(*args) for args in commands]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda args: run_cli(*args, in_process=False), commands))


def failed(result, *words: str) -> None:
    """The command failed as documented: exit status 1 and one line `error: ...` that holds
    each of `words`."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, message


# --- a server in a real process ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`clearclass serve MODEL OPTIONS` as a user starts it: a real process on a free port of
    loopback, its log in FOLDER/server.log (a pipe nobody reads would fill up and stop it
    mid-test) and $TMPDIR its own folder."""

    def __init__(self, model: Path, folder: Path, *options: str):
        self.port, self.tmp = _free_port(), folder / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log = folder / "server.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clearclass", "serve", str(model), "--port", str(self.port),
             *options], stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(self.tmp)})
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            if self.process.poll() is not None:
                pytest.fail(self.log.read_text())
            time.sleep(0.1)

    def peak_memory(self) -> int:
        """VmHWM: the most resident memory the server process has had, in bytes (printed:
        `pytest -s` shows what each case measured)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
                print(f"server peak memory: {peak / 1e9:.3f} GB")
                return peak
        raise AssertionError("no VmHWM")

    def temporary_bytes(self) -> int:
        """Bytes in the files the server holds open in its temporary folder (Python's
        temporary files have no name there, or lose it at once: they are found through
        /proc/PID/fd)."""
        total = 0
        fds = Path(f"/proc/{self.process.pid}/fd")
        for fd in list(fds.iterdir()) if fds.is_dir() else []:
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(str(self.tmp)):
                    total += fd.stat().st_size
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished run of test_resnet on the colour photos, trained once per test session for
    every test that only reads a run (copy it before changing it)."""
    from clearclass.training import train

    root = tmp_path_factory.mktemp("trained")
    data = make_dataset(root / "colours", per_class=20)
    run = train(data=str(data), out=str(root / "run"), model="test_resnet", pretrained=False,
                # Batches of 4: 12 steps an epoch, enough to learn the colours whatever the
                # seed (batches of 8 failed one seed in 6).
                item_resize=32, batch_size=4, epochs=3, freeze_epochs=1, learning_rate=2e-2,
                head_speedup=1.0,
                workers=0, device="cpu")
    return run.run_dir


@pytest.fixture(scope="session")
def trained_multi_label_run(tmp_path_factory) -> Path:
    """A finished multi-label run of test_resnet on the striped photos
    (`make_multi_label_dataset`: labels red, green and blue, every subset), its thresholds
    tuned per label (--threshold auto), trained once per test session for every test that
    only reads it (copy it before changing it)."""
    from clearclass.training import train

    root = tmp_path_factory.mktemp("trained-multi-label")
    data = make_multi_label_dataset(root / "stripes")
    run = train(data=str(data), out=str(root / "run"),
                **tiny(batch_size=4, learning_rate=2e-2, threshold="auto"))
    return run.run_dir


# The two photos `mislabelled_multi_label_run` labels wrongly: a red stripe labelled blue
# and red, and a blue one with no label, as the data's relative path -> (labels given, labels
# drawn).
MISLABELLED_SETS = {"images/1-00.jpg": (("blue", "red"), ("red",)),
                    "images/3-01.jpg": ((), ("blue",))}


@pytest.fixture(scope="session")
def mislabelled_multi_label_run(tmp_path_factory) -> Path:
    """A finished multi-label run of test_resnet on the striped photos (every set of red,
    green and blue 8 times) with the two labels of MISLABELLED_SETS wrong, trained once per
    test session for the tests that read it (copy the run before changing it; DATA is
    `run's model.json training.data`, shared: a test that changes it puts it back)."""
    from clearclass.training import train

    root = tmp_path_factory.mktemp("mislabelled-multi-label")
    data = make_multi_label_dataset(root / "stripes", per_set=8)
    lines = data.read_text().splitlines()
    for path, (given, _) in MISLABELLED_SETS.items():
        at = next(i for i, line in enumerate(lines) if line.startswith(path + ","))
        lines[at] = f"{path},{';'.join(given)}"
    data.write_text("\n".join(lines) + "\n")
    # As trained_run: batches of 4, so that 3 epochs learn the stripes.
    run = train(data=str(data), out=str(root / "run"), **tiny(epochs=3, batch_size=4,
                                                                learning_rate=2e-2))
    # Its features kept in RUN/advice, which the copies of the run then read (clean and
    # advise compute them first).
    from clearclass.advice.features import run_features

    run_features(run.run_dir, device="cpu")
    return run.run_dir


@pytest.fixture(scope="session")
def multi_label_run(trained_multi_label_run, tmp_path_factory) -> Path:
    """A copy of `trained_multi_label_run` with model.onnx exported (checked against
    PyTorch), for the tests of ONNX, predict and serve that only read it (copy it before
    changing it). So few steps teach it little: a test that needs a given set predicted
    chooses the thresholds (`with_thresholds`)."""
    import shutil

    from clearclass.export import export_onnx

    run = shutil.copytree(trained_multi_label_run, tmp_path_factory.mktemp("exported") / "run")
    export_onnx(run / "model")
    return run


def with_thresholds(model: Path, thresholds, names=None) -> Path:
    """`model` (a bundle folder) with model.json's thresholds replaced, one per class in its
    order (and the display names, with `names`): model.json vouches for the weights and
    model.onnx, not for itself, so the bundle still loads. Returns the folder."""
    import json

    info = model / "model.json"
    data = json.loads(info.read_text(encoding="utf-8"))
    assert data["task"] == "multi" and len(thresholds) == len(data["classes"])
    for n, (entry, threshold) in enumerate(zip(data["classes"], thresholds)):
        entry["threshold"] = float(threshold)
        if names is not None:
            entry["name"] = names[n]
    info.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return model


def separating_thresholds(probabilities_with: np.ndarray, probabilities_without: np.ndarray
                          ) -> list[float]:
    """Thresholds under which the photo of `probabilities_with` gets one label, and the
    photo of `probabilities_without` none: the label whose probability is most above the
    other photo's gets the midpoint of the two, every other label a threshold above both."""
    gap = probabilities_with - probabilities_without
    chosen = int(np.argmax(gap))
    assert gap[chosen] > 1e-4, "the model gives both photos the same probabilities"
    thresholds = [min(1.0, max(a, b) + 1e-3)
                  for a, b in zip(probabilities_with, probabilities_without)]
    thresholds[chosen] = float(probabilities_with[chosen] + probabilities_without[chosen]) / 2
    return thresholds


CHROMIUM = Path("/usr/bin/chromium")


# --- which modules a run of the tests exercises ------------------------------------------------
# CLEARCLASS_CALLED_MODULES=FILE pytest -m "not slow": at the end, FILE lists each module of
# src/clearclass and whether a function of it ran in the test process (importing one does
# not count: one test imports them all; a module with no function, as __main__, is
# "imported"). The quick tier must leave none NOT CALLED. (coverage is not among the test
# dependencies; this costs the run some speed, so only on request.)

def pytest_configure(config):
    if os.environ.get("CLEARCLASS_CALLED_MODULES"):
        import threading

        source = str(REPO / "src" / "clearclass")
        called = config._clearclass_called = set()

        def record(frame, event, arg):
            if event == "call" and frame.f_code.co_name != "<module>":
                name = frame.f_code.co_filename
                if name.startswith(source):
                    called.add(name)

        sys.setprofile(record)
        threading.setprofile(record)


def pytest_unconfigure(config):
    called = getattr(config, "_clearclass_called", None)
    if called is None:
        return
    import ast

    sys.setprofile(None)
    source = REPO / "src" / "clearclass"
    lines = []
    for path in sorted(source.rglob("*.py")):
        module = ".".join(("clearclass", *path.relative_to(source).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        functions = any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
        if str(path) in called:
            state = "called"
        elif not functions:  # a package's names, `python -m clearclass`: import is all
            state = "imported" if module in sys.modules or module.endswith("__main__") \
                else "NOT IMPORTED"
        else:
            state = "NOT CALLED"
        lines.append(f"{state} {module}")
    Path(os.environ["CLEARCLASS_CALLED_MODULES"]).write_text("\n".join(lines) + "\n")


def pytest_collection_modifyitems(items):
    """A test in a real browser is slow: seconds to start chromium, more to drive it."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (never a downloaded browser)."""
    # CI installs the browser and sets CLEARCLASS_BROWSER_TESTS=required: there a missing
    # browser fails the test instead of skipping it.
    required = os.environ.get("CLEARCLASS_BROWSER_TESTS") == "required"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        if required:
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


# --- stopping a training, reading what it tracked ------------------------------------------

def stop_in_epoch(monkeypatch, epoch_to_stop: int | None = None):
    """Make the next training stop as Ctrl-C stops it in epoch `epoch_to_stop` (None: the
    first epoch it trains): a checkpoint after the next step, then KeyboardInterrupt.
    Returns the real `train_one_epoch`, to put back before resuming."""
    from clearclass.training import loop

    real = loop.train_one_epoch

    def stopping(run, setup, stage, epoch, start, saver, stop):
        if epoch_to_stop is None or epoch == epoch_to_stop:
            stop.asked = True
        return real(run, setup, stage, epoch, start, saver, stop)

    monkeypatch.setattr(loop, "train_one_epoch", stopping)
    return real


def tensorboard_events(folder: Path):
    """TensorBoard's EventAccumulator over the event files of `folder`, every event kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder),
                              size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events

