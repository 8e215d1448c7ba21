"""clearclass against fastai, stage by stage, on the same photos, split, weights and settings.

For each model (efficientnet_lite0 with the offline ImageNet weights; resnet34 with random
weights, as speed does not depend on them) and each repeat, in separate processes:

- train: the whole training process, as a user runs it. fastai: a script that builds the
  DataLoaders (item Resize(224), aug_transforms(), Normalize) and calls
  `learn.fine_tune(1)`; clearclass: `clearclass train CSV --item-resize 224
  --batch-size 64 --epochs 1` with an empty photo cache (a first run). Reported: process
  wall time up to the trained model, frozen and unfrozen epochs, peak memory (PSS of the
  process and its workers, sampled every second), valid accuracy.
- data: one epoch of training batches, decoded, resized and augmented, with no model.
- predict: on the trained model, the validation pass (400 photos read from their files,
  with accuracy), single-photo prediction latency over 100 calls (p50, p99), and batch
  prediction throughput on the 400 validation files. fastai: `learn.validate()`,
  `learn.predict`, `learn.get_preds(dl=learn.dls.test_dl(files))`; clearclass:
  `clearclass.load(RUN/model)` (ONNX Runtime), `predict`, `predict_many`.

Achieved GFLOP/s = forward FLOPs per photo (counted with torch's FlopCounterMode) x the
passes each stage needs (forward only: 1; back-propagating to the inputs of frozen layers:
2; training everything: 3) x photos / seconds, against this machine's matmul peak,
measured here.

A data folder with train/ and val/ (imagewoof-160) is first listed into a CSV with its
own split, which both tools then read. `--size 128` trains and predicts at 128 px;
`--train-only` skips the data and prediction stages (the two cases of issue 13 run this
way). Each run's figures go to `--json`; the results page's first section puts every case
measured so far (each JSON file in benchmarks/results/ with a `case`) side by side.

    pip install -e '.[benchmark]'
    python benchmarks/vs_fastai.py --repeats 3            # writes benchmarks/RESULTS.md
    python benchmarks/vs_fastai.py --breeds 5 --models efficientnet_lite0 --repeats 3 \
        --train-only --append --json benchmarks/results/vs_fastai-5-breeds.json
    python benchmarks/vs_fastai.py --data ../shared/datasets/imagewoof-160 --size 128 \
        --models efficientnet_lite0 --repeats 3 --train-only --append \
        --json benchmarks/results/vs_fastai-imagewoof-160-128px.json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
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
MODELS = ("efficientnet_lite0", "resnet34")
LATENCY_CALLS = 100


# --- fastai -------------------------------------------------------------------------------

def _fastai_learner(data: Path, arch: str, seed: int):
    import fastai.callback.progress  # noqa: F401  (adds Learner.no_bar)
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fine_tune)
    import pandas as pd
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, ColSplitter, Normalize
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, aug_transforms
    from fastai.vision.core import PILImage
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    set_seed(seed)
    df = pd.read_csv(data)
    df["path"] = [str(data.parent / p) for p in df["path"]]  # relative to the CSV's folder
    df["is_valid"] = df["is_valid"].astype(str).str.lower() == "true"
    stats = ([0.5] * 3, [0.5] * 3) if arch == "efficientnet_lite0" else \
        ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    block = DataBlock(
        blocks=(ImageBlock(PILImage), CategoryBlock),
        get_x=ColReader("path"),
        get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"),
        item_tfms=Resize(SIZE),
        batch_tfms=[*aug_transforms(), Normalize.from_stats(*stats)],
    )
    dls = block.dataloaders(df, bs=BATCH)
    if arch == "efficientnet_lite0":
        import timm

        from clearclass.model import _lite0_package_file, _remap_by_order, read_state_dict

        learn = vision_learner(dls, arch, pretrained=False, metrics=accuracy)
        reference = timm.create_model(arch, pretrained=False)
        state = _remap_by_order(read_state_dict(_lite0_package_file()), reference, Path(arch))
        learn.model[0].model.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith("classifier.")})
    else:
        from torchvision.models import resnet34

        learn = vision_learner(dls, resnet34, pretrained=False, metrics=accuracy)
    return learn


def fastai_train(data: Path, arch: str, seed: int, predict: bool = True) -> dict:
    from fastai.callback.core import Callback

    learn = _fastai_learner(data, arch, seed)
    times = []

    class EpochTimer(Callback):
        def before_epoch(self):
            self.start = time.perf_counter()

        def after_epoch(self):
            times.append(time.perf_counter() - self.start)

    learn.add_cb(EpochTimer())
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(1)
    result = {"trained_at": time.time(), "frozen_epoch_seconds": times[0],
              "unfrozen_epoch_seconds": times[1],
              "valid_accuracy": float(learn.recorder.values[-1][2])}
    if predict:
        result.update(fastai_predict(learn, data))
    return result


def fastai_predict(learn, data: Path) -> dict:
    files = _valid_files(data)
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter()
        learn.validate()
        result = {"valid_pass_seconds": time.perf_counter() - t0}
        result.update(_time_predictions(
            learn.predict, lambda: learn.get_preds(dl=learn.dls.test_dl(files, bs=BATCH)),
            files))
    return result


def fastai_data(data: Path, arch: str, seed: int) -> dict:
    learn = _fastai_learner(data, arch, seed)
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in learn.dls.train)
    return {"data_epoch_seconds": time.perf_counter() - t0, "photos": n}


# --- clearclass ---------------------------------------------------------------------------

def clearclass_train(data: Path, arch: str, seed: int, run_dir: Path) -> dict:
    """`clearclass train` as a user runs it (the timing is the parent's)."""
    command = [str(Path(sys.executable).parent / "clearclass"), "train", str(data),
               "--model", arch, "--epochs", "1", "--item-resize", str(SIZE), "--batch-size",
               str(BATCH), "--seed", str(seed), "--out", str(run_dir), "--quiet"]
    if arch != "efficientnet_lite0":
        # Random weights, but the pretrained code path: speed does not depend on the weights.
        command += ["--no-pretrained", "--no-adapt-batchnorm"]
    subprocess.run(command, check=True)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((run_dir / "summary.json").read_text())
    epochs = summary["epochs"]
    return {"frozen_epoch_seconds": epochs[0]["seconds"],
            "unfrozen_epoch_seconds": epochs[1]["seconds"],
            "valid_accuracy": float(rows[-1]["accuracy"]),
            "decode_seconds": summary["timings"]["decode_seconds"],
            "onnx_export_seconds": summary["timings"].get("onnx_export_seconds", 0.0)}


def clearclass_predict(data: Path, run_dir: Path) -> dict:
    import clearclass
    from clearclass import progress
    from clearclass.evaluation import _valid_photos, predict_photos

    classifier = clearclass.load(run_dir / "model")
    files = _valid_files(data)
    t0 = time.perf_counter()
    with progress.quiet():
        evaluation = predict_photos(classifier,
                                    _valid_photos(run_dir / "split.csv", classifier))
    result = {"valid_pass_seconds": time.perf_counter() - t0,
              "valid_pass_accuracy": evaluation.accuracy, "backend": classifier.backend}
    result.update(_time_predictions(
        classifier.predict, lambda: classifier.predict_many(files, batch_size=BATCH), files))
    return result


def clearclass_data(data: Path, seed: int) -> dict:
    """Decode every photo (empty cache) and produce one epoch of augmented batches."""
    import torch

    from clearclass.data.augment import augment_settings, batch_augment, normalize
    from clearclass.data.cache import default_cache_dir
    from clearclass.data.loader import PhotoBatches, decode_photos, take
    from clearclass.data.sources import find_photos

    t0 = time.perf_counter()
    photos = find_photos(data, seed=seed)
    decoded = decode_photos([p.path for p in photos.photos], SIZE, "crop",
                            cache_dir=default_cache_dir())
    index = {c: i for i, c in enumerate(photos.class_ids)}
    train = [i for i, p in enumerate(photos.photos) if not p.is_valid]
    batches = PhotoBatches(take(decoded.pixels, train),
                           [index[photos.photos[i].class_id] for i in train], SIZE, "crop", BATCH,
                           training=True, seed=seed)
    settings, gen, n = augment_settings("standard"), torch.Generator().manual_seed(seed), 0
    for images, labels in batches:
        normalize(batch_augment(images, settings, gen), (0.5,) * 3, (0.5,) * 3)
        n += len(labels)
    return {"data_epoch_seconds": time.perf_counter() - t0, "photos": n}


# --- measuring ----------------------------------------------------------------------------

def _valid_files(data: Path) -> list[Path]:
    with open(data, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["is_valid"].lower() == "true"]
    return [data.parent / r["path"] for r in rows]


def _time_predictions(predict_one, predict_all, files: list[Path]) -> dict:
    """Single-photo latency (p50, p99) over LATENCY_CALLS calls after 3 warm-up calls, and
    the photos per second of `predict_all()` on `files`."""
    for f in files[:3]:
        predict_one(f)
    latencies = []
    for f in files[:LATENCY_CALLS]:
        t0 = time.perf_counter()
        predict_one(f)
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    predict_all()
    per_second = len(files) / (time.perf_counter() - t0)
    ordered = sorted(latencies)
    return {"batch_predict_per_second": per_second,
            "predict_p50_ms": 1000 * statistics.median(ordered),
            "predict_p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


class PeakMemory:
    """The largest PSS of a process and its children (DataLoader workers) together,
    sampled every `interval` seconds in a thread until `stop()`."""

    def __init__(self, pid: int, interval: float):
        self.peak, self._done = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(pid, interval), daemon=True)
        self._thread.start()

    def _sample(self, pid: int, interval: float) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            while not self._done.is_set():
                total = 0
                for p in [proc, *proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a worker that just exited
                        total += p.memory_full_info().pss
                self.peak = max(self.peak, total)
                time.sleep(interval)

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._done.set()
        self._thread.join()
        return self.peak


def run_child(args: list[str], env: dict | None = None) -> tuple[dict, float, float, float]:
    """Run this script as a worker; its result, start time, wall seconds, peak PSS bytes."""

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = Path(f.name)
    started = time.time()
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, *args, "--result", str(result_file)],
                             env={**os.environ, **(env or {})})
    # Reading PSS walks every page table (about 0.15 s for a 3 GB process here) and holds
    # the process's memory lock meanwhile, so sample every 5 s, not every second: at 1 s
    # the sampler took a fifth of a core from the 2-core run it measures.
    memory = PeakMemory(child.pid, interval=5.0)
    code = child.wait()
    wall = time.perf_counter() - t0
    peak = memory.stop()
    if code != 0:
        raise SystemExit(f"worker {args} failed with exit code {code}")
    result = json.loads(result_file.read_text())
    result_file.unlink()
    return result, started, wall, peak


def one_repeat(tool: str, arch: str, data: Path, seed: int, train_only: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CLEARCLASS_CACHE_DIR": str(Path(tmp) / "cache")}  # a first run: no cache
        common = ["--tool", tool, "--arch", arch, "--data", str(data), "--seed", str(seed),
                  "--size", str(SIZE)] + (["--train-only"] if train_only else [])
        run_dir = Path(tmp) / "run"
        result, started, wall, peak = run_child(["--worker", "train", *common,
                                                 "--run-dir", str(run_dir)], env)
        result["train_process_seconds"] = (result.pop("trained_at") - started
                                           if "trained_at" in result else wall)
        result["peak_memory_gb"] = peak / 1e9
        if tool == "clearclass" and not train_only:
            predicted, *_ = run_child(["--worker", "predict", *common,
                                       "--run-dir", str(run_dir)], env)
            result.update(predicted)
    if train_only:
        return result
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CLEARCLASS_CACHE_DIR": str(Path(tmp) / "cache")}
        loaded, *_ = run_child(["--worker", "data", *common], env)
    result["data_epoch_seconds"] = loaded["data_epoch_seconds"]
    return result


def worker(args) -> dict:
    if args.worker == "train":
        if args.tool == "fastai":
            return fastai_train(args.data, args.arch, args.seed, predict=not args.train_only)
        return clearclass_train(args.data, args.arch, args.seed, args.run_dir)
    if args.worker == "predict":
        return clearclass_predict(args.data, args.run_dir)
    if args.tool == "fastai":
        return fastai_data(args.data, args.arch, args.seed)
    return clearclass_data(args.data, args.seed)


# --- the machine and the model ------------------------------------------------------------

def matmul_peak() -> dict:
    """GFLOP/s of a large fp32 and bf16 matrix product on all cores, best of 5.

    bf16 uses a smaller product: on a CPU without native bf16 (an AMD EPYC without
    AVX-512) the 2048 one took minutes before the first run could start."""
    import torch

    result = {}
    for dtype, n in ((torch.float32, 2048), (torch.bfloat16, 512)):
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        result[str(dtype).split(".")[1]] = 2 * n**3 / best / 1e9
    return result


def forward_gflops(arch: str) -> float:
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(arch, num_classes=10).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, SIZE, SIZE))
    return counter.get_total_flops() / 1e9


def machine() -> str:
    cpu, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")),
                   cpu)
        flags = next((set(x.split(":", 1)[1].split()) for x in info if x.startswith("flags")),
                     flags)
    simd = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    import psutil
    import torch

    try:
        import fastai

        fastai_version = fastai.__version__
    except ImportError:
        fastai_version = "not installed"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical CPUs ({simd or 'no AVX'}), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {gpu}; {platform.platform()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, fastai "
            f"{fastai_version}")


# --- report -------------------------------------------------------------------------------

ROWS = [
    ("data: one training epoch of batches, no model", "data_epoch_seconds", "s", "lower"),
    ("frozen epoch (train + validation)", "frozen_epoch_seconds", "s", "lower"),
    ("unfrozen epoch (train + validation)", "unfrozen_epoch_seconds", "s", "lower"),
    ("**training process, start to trained model**", "train_process_seconds", "s", "lower"),
    ("peak memory (PSS, process and workers)", "peak_memory_gb", "GB", "lower"),
    ("valid accuracy", "valid_accuracy", "%", "higher"),
    ("validation pass, photos read from files", "valid_pass_seconds", "s", "lower"),
    ("single-photo predict, p50", "predict_p50_ms", "ms", "lower"),
    ("single-photo predict, p99", "predict_p99_ms", "ms", "lower"),
    ("batch predict, the validation files", "batch_predict_per_second", "photos/s", "higher"),
]


def dataset_name(data: Path) -> str:
    """The dataset's name for the results page (`imagewoof-2k, labels.csv`), not a machine path."""
    data = Path(data)
    return f"{data.parent.name}, {data.name}" if data.is_file() else data.name


def report(runs: dict, data: Path, name: str, peak: dict, flops: dict, repeats: int) -> str:
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    valid = sum(r["is_valid"].lower() == "true" for r in rows)
    train_photos = len(rows) - valid
    lines = [f"Data: {name} ({train_photos} training and {valid} validation photos, "
             f"{len({r['label'] for r in rows})} classes); seeds "
             f"{', '.join(str(SEED + r) for r in range(repeats))}; medians of {repeats} "
             "run(s) each; ratio = clearclass / fastai.", ""]
    for arch, by_tool in runs.items():
        weights = "offline ImageNet weights" if arch == "efficientnet_lite0" else \
            "random weights, for speed only"
        lines += [f"### {arch}, {weights}, {flops[arch]:.2f} GFLOP per forward pass", "",
                  "| stage | fastai | clearclass | ratio |", "| --- | ---: | ---: | ---: |"]
        for label, key, unit, _ in ROWS:
            cells = []
            for tool in ("fastai", "clearclass"):
                values = [r[key] for r in by_tool.get(tool, []) if key in r]
                cells.append(statistics.median(values) if values else None)
            if arch != "efficientnet_lite0" and key == "valid_accuracy":
                continue
            if cells == [None, None]:  # a stage this run did not time (--train-only)
                continue
            shown = [_fmt(v, unit) for v in cells]
            ratio = f"{cells[1] / cells[0]:.2f}x" if all(cells) and unit != "%" else ""
            lines.append(f"| {label} | {shown[0]} | {shown[1]} | {ratio} |")
        lines += ["", _gflops(by_tool, flops[arch], peak, train_photos), ""]
    return "\n".join(lines)


def _gflops(by_tool: dict, gflop: float, peak: dict, train_photos: int) -> str:
    parts = []
    passes = {"fastai": (2, 3), "clearclass": (1, 3)}  # (frozen, unfrozen) passes per photo
    for tool, runs in by_tool.items():
        frozen = statistics.median(r["frozen_epoch_seconds"] for r in runs)
        unfrozen = statistics.median(r["unfrozen_epoch_seconds"] for r in runs)
        f_rate = passes[tool][0] * gflop * train_photos / frozen
        u_rate = passes[tool][1] * gflop * train_photos / unfrozen
        parts.append(f"{tool}: frozen epoch {f_rate:.0f} GFLOP/s, unfrozen {u_rate:.0f} "
                     f"GFLOP/s")
    return (f"Achieved throughput (training photos only, validation time included in the "
            f"epoch; the unfrozen epoch counted as a backward pass through every layer, "
            f"which --frozen-stages makes shorter): {'; '.join(parts)}; this machine's "
            f"matmul peak: {peak['float32']:.0f} GFLOP/s fp32, {peak['bfloat16']:.0f} GFLOP/s "
            "bf16.")


def _fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{100 * value:.2f}%"
    if unit in ("ms", "GB"):
        return f"{value:.2f} {unit}"
    if unit == "photos/s":
        return f"{value:.0f} {unit}"
    return f"{value:.1f} s"


def folder_csv(data: Path, folder: Path) -> Path:
    """A data folder (train/ and val/ class folders) listed as path,label,is_valid with
    absolute paths, as clearclass reads it, so that both tools train on the same split."""
    from clearclass.data.sources import find_photos

    photos = find_photos(data)
    if not any(p.is_valid for p in photos.photos):
        raise SystemExit(f"{data} has no validation folder (valid/, val/ or test/)")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{data.name}.csv"
    with open(target, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "is_valid"])
        for p in photos.photos:
            writer.writerow([str(Path(p.path).resolve()), p.class_id, str(p.is_valid)])
    return target


def subset_csv(data: Path, breeds: int, folder: Path) -> Path:
    """The CSV restricted to its first `breeds` labels, with absolute photo paths."""
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = sorted({r["label"] for r in rows})[:breeds]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{data.stem}-{breeds}-breeds.csv"
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(data.parent / r["path"])}
                         for r in rows if r["label"] in keep)
    return target


def main() -> None:
    global SIZE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tools", default="fastai,clearclass")
    parser.add_argument("--breeds", type=int, help="only the first N breeds of the CSV")
    parser.add_argument("--size", type=int, default=SIZE, help="item resize, in pixels")
    parser.add_argument("--train-only", action="store_true",
                        help="time training only, not the data and prediction stages")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    parser.add_argument("--append", action="store_true",
                        help="add this run's tables to --results instead of replacing it")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    SIZE = args.size
    if args.worker:
        args.result.write_text(json.dumps(worker(args)))
        return

    data = args.data.resolve()
    name = dataset_name(data) + (f", its first {args.breeds} breeds" if args.breeds else "")
    if data.is_dir():
        data = folder_csv(data, Path(tempfile.mkdtemp(prefix="clearclass-bench-")))
    if args.breeds:
        data = subset_csv(data, args.breeds, Path(tempfile.mkdtemp(prefix="clearclass-bench-")))
    peak = matmul_peak()
    runs: dict = {}
    for arch in args.models.split(","):
        runs[arch] = {}
        for r in range(args.repeats):
            for tool in args.tools.split(","):
                result = one_repeat(tool, arch, data, SEED + r, args.train_only)
                runs[arch].setdefault(tool, []).append(result)
                print(f"{arch} run {r + 1}/{args.repeats} {tool}: " + json.dumps(
                    {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}),
                    flush=True)
    flops = {arch: forward_gflops(arch) for arch in runs}
    text = report(runs, data, name, peak, flops, args.repeats)
    print(text)
    command = "python benchmarks/vs_fastai.py " + " ".join(sys.argv[1:])
    if args.json:
        with open(data, newline="") as f:
            rows = list(csv.DictReader(f))
        valid = sum(r["is_valid"].lower() == "true" for r in rows)
        case = {"data": name, "size": SIZE, "classes": _classes(data),
                "train": len(rows) - valid, "valid": valid, "command": command.strip(),
                "date": time.strftime("%Y-%m-%d")}
        args.json.write_text(json.dumps({"machine": machine(), "matmul_peak": peak,
                                         "case": case, "runs": runs}, indent=2))
    section = (f"## {len(runs)} model(s), {_classes(data)} classes, {SIZE} px\n\n"
               f"`{command.strip()}`, run on {time.strftime('%Y-%m-%d')} on {machine()}."
               f"\n\n{text}\n")
    if args.append and args.results.exists():
        with open(args.results, "a") as f:
            f.write("\n" + section)
    else:
        args.results.write_text(f"# Benchmark results\n\nMachine: {machine()}.\n\n"
                                + section)
    write_side_by_side(args.results)


def write_side_by_side(results: Path) -> None:
    """The results page's first section: every case in benchmarks/results/vs_fastai-*.json
    (those that record their case), the whole training process and the accuracy of each
    tool, medians over the repeats."""
    lines = ["## clearclass against fastai: every case side by side", "",
             "The whole training process, start to trained model (`fine_tune(1)`: one frozen "
             "and one unfrozen epoch), of efficientnet_lite0 with the offline ImageNet "
             "weights, same split, weights and settings; medians over the repeats (seeds "
             "42, 43, 44), each tool in its own process, one run at a time.", "",
             "| case | photos (train + valid, classes) | fastai | clearclass | ratio | "
             "fastai accuracy | clearclass accuracy | measured on |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for path in sorted((ROOT / "benchmarks" / "results").glob("vs_fastai-*.json")):
        saved = json.loads(path.read_text())
        case, runs = saved.get("case"), saved["runs"].get("efficientnet_lite0", {})
        if not case or not runs.get("fastai") or not runs.get("clearclass"):
            continue
        med = {tool: {key: statistics.median(r[key] for r in runs[tool])
                      for key in ("train_process_seconds", "valid_accuracy")}
               for tool in ("fastai", "clearclass")}
        fast, ours = med["fastai"], med["clearclass"]
        lines.append(
            f"| {case['data']}, {case['size']} px | {case['train']:,} + {case['valid']:,}, "
            f"{case['classes']} | {fast['train_process_seconds']:.1f} s | "
            f"{ours['train_process_seconds']:.1f} s | "
            f"{ours['train_process_seconds'] / fast['train_process_seconds']:.2f}x | "
            f"{100 * fast['valid_accuracy']:.2f}% | {100 * ours['valid_accuracy']:.2f}% | "
            f"{case['date']}, {saved['machine'].split(',')[0]}, "
            f"{len(runs['clearclass'])} repeats |")
    from cache_modes import write_section  # it imports this module: here, not at the top

    write_section(results, "\n".join(lines) + "\n", first=True)


def _classes(data: Path) -> int:
    with open(data, newline="") as f:
        return len({r["label"] for r in csv.DictReader(f)})


if __name__ == "__main__":
    main()
