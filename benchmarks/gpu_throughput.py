"""Training and inference throughput of resnet34 on one CUDA GPU, and whether data keeps up.

Trains resnet34 (random weights: speed does not depend on them) at 224 px on imagewoof-160
(9,025 training photos) with clearclass's own loop: photos decoded once, uint8 batches
pinned and copied asynchronously, augmentation on the GPU, channels_last, bf16 autocast.
Reports:
- training photos/s per epoch (validation excluded);
- the share of training time the loop waited for a batch (the GPU idle for want of data)
  and the GPU utilisation nvidia-smi reports, sampled every 200 ms (target: busy >= 90%);
- inference photos/s: the model alone on batches already on the GPU, and `predict_many`
  from the validation files (decoding included);
- with more than one GPU, the same training in one process per GPU (`clearclass train
  --processes N`: torchrun, DDP over NCCL, --batch-size the total of a step): photos/s of
  all of them together and the share of time process 0 waited for data.

    python benchmarks/gpu_throughput.py                 # about 3 minutes on an H100/H200
    # a dry run of the code on the CPU:
    python benchmarks/gpu_throughput.py --device cpu --limit 256 --epochs 1 --batch-size 32

Designed to finish in well under 10 minutes on one recent GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagewoof-160"


def gpu_utilisation(samples: list[float], stop: threading.Event) -> None:
    """Append nvidia-smi's GPU utilisation (%) every 200 ms until `stop`."""
    if shutil.which("nvidia-smi") is None:
        return
    command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
               "-lms", "200"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if stop.is_set():
                proc.terminate()
                break
            with contextlib.suppress(ValueError):
                samples.append(float(line.split(",")[0]))


def limited_copy(data: Path, limit: int, folder: Path) -> Path:
    """A CSV with about `limit` photos of each split, from every class (for dry runs)."""
    rows = ["path,label,is_valid"]
    for split, is_valid in (("train", False), ("val", True)):
        classes = sorted(d for d in (data / split).iterdir() if d.is_dir())
        for d in classes:
            files = sorted(d.iterdir())[: max(1, limit // len(classes))]
            rows += [f"{f},{d.name},{is_valid}" for f in files]
    target = folder / "subset.csv"
    target.write_text("\n".join(rows) + "\n")
    return target


def inference(run_dir: Path, device: str, batch: int) -> dict:
    import torch

    import clearclass
    from clearclass.data.augment import normalize
    from clearclass.evaluation import _valid_photos

    classifier = clearclass.load(run_dir / "model", device=device, backend="torch")
    model = classifier.network.model
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
    info = classifier.info
    on_gpu = device.startswith("cuda")
    # bf16 as in training on the GPU; a dry run on a CPU without native bf16 would crawl.
    with torch.inference_mode(), torch.autocast(device_type=torch.device(device).type,
                                                dtype=torch.bfloat16, enabled=on_gpu):
        for _ in range(3):
            model(normalize(x, info.mean, info.std))
        if on_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        rounds = 20 if on_gpu else 2
        for _ in range(rounds):
            model(normalize(x, info.mean, info.std))
        if on_gpu:
            torch.cuda.synchronize()
        model_only = rounds * batch / (time.perf_counter() - t0)
    photos = [p for p, _ in _valid_photos(run_dir / "split.csv", classifier)]
    t0 = time.perf_counter()
    classifier.predict_many(photos, batch_size=batch)
    from_files = len(photos) / (time.perf_counter() - t0)
    return {"inference_model_only_per_second": model_only,
            "inference_from_files_per_second": from_files}


def ddp_training(data: Path, processes: int, args: argparse.Namespace, folder: Path) -> dict:
    """The same training as `clearclass train --processes N`; figures from its summary."""
    out = folder / f"run-{processes}-processes"
    command = [sys.executable, "-m", "clearclass", "train", str(data), "--out", str(out),
               "--processes", str(processes), "--model", "resnet34", "--no-pretrained",
               "--no-adapt-batchnorm", "--freeze-epochs", "0", "--epochs", str(args.epochs),
               "--item-resize", "224", "--batch-size", str(args.batch_size * processes),
               "--device", "cuda", "--no-onnx", "--quiet"]
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=gpu_utilisation, args=(samples, stop), daemon=True)
    sampler.start()
    subprocess.run(command, check=True)
    stop.set()
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "split.csv", newline="") as f:
        train_photos = sum(r["is_valid"] == "False" for r in csv.DictReader(f))
    step = args.batch_size * processes
    epochs = []
    for row in summary["epochs"]:
        seconds = summary["timings"][f"epoch_{row['epoch']}_train_seconds"]
        waited = summary["timings"][f"epoch_{row['epoch']}_data_wait_seconds"]
        epochs.append({"epoch": row["epoch"],
                       "train_photos_per_second": train_photos // step * step / seconds,
                       "data_wait_share": waited / seconds})
    return {"processes": processes, "epochs": epochs,
            "gpu_utilisation_median_percent": statistics.median(samples) if samples else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, help="photos per split, for a dry run")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()

    import torch

    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0

    import clearclass
    from clearclass import progress

    with tempfile.TemporaryDirectory() as tmp:
        data = limited_copy(args.data, args.limit, Path(tmp)) if args.limit else args.data
        run_dir = Path(tmp) / "run"
        samples: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=gpu_utilisation, args=(samples, stop), daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        with progress.quiet():
            run = clearclass.train(
                data, out=run_dir, model="resnet34", pretrained=False,
                adapt_batchnorm=False, freeze_epochs=0, epochs=args.epochs, item_resize=224,
                batch_size=args.batch_size, device=args.device, onnx=False,
            )
        wall = time.perf_counter() - t0
        stop.set()
        with open(run_dir / "split.csv", newline="") as f:
            train_photos = sum(r["is_valid"] == "False" for r in csv.DictReader(f))
        epochs = []
        for row in run.history:
            seconds = run.timings[f"epoch_{row.epoch}_train_seconds"]
            waited = run.timings[f"epoch_{row.epoch}_data_wait_seconds"]
            epochs.append({"epoch": row.epoch, "train_photos_per_second":
                           train_photos // args.batch_size * args.batch_size / seconds,
                           "data_wait_share": waited / seconds})
        result = {
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda")
            else args.device,
            "decode_seconds": run.timings["decode_seconds"],
            "process_seconds": wall,
            "epochs": epochs,
            "gpu_utilisation_median_percent": statistics.median(samples) if samples else None,
            **inference(run_dir, args.device, args.batch_size),
        }
        if gpus > 1:  # DDP: one process per GPU, each with --batch-size photos a step
            result["ddp"] = ddp_training(data, gpus, args, Path(tmp))
    print(json.dumps(result, indent=2))
    steady = epochs[1:] or epochs  # the first epoch includes cuDNN autotuning
    busy = 1 - statistics.median(e["data_wait_share"] for e in steady)
    utilisation = result["gpu_utilisation_median_percent"]
    print(f"\nTraining: {statistics.median(e['train_photos_per_second'] for e in steady):.0f} "
          f"photos/s; the loop waited for data {100 * (1 - busy):.1f}% of the time "
          f"(GPU fed {100 * busy:.1f}%, target >= 90%); nvidia-smi utilisation median "
          + (f"{utilisation:.0f}%." if utilisation is not None else "not available."))
    print(f"Inference: {result['inference_model_only_per_second']:.0f} photos/s (model "
          f"alone), {result['inference_from_files_per_second']:.0f} photos/s from files.")
    if "ddp" in result:
        ddp = result["ddp"]
        steady = ddp["epochs"][1:] or ddp["epochs"]
        print(f"DDP, {ddp['processes']} GPUs: "
              f"{statistics.median(e['train_photos_per_second'] for e in steady):.0f} photos/s "
              f"together; process 0 waited for data "
              f"{100 * statistics.median(e['data_wait_share'] for e in steady):.1f}% of the time.")
    else:
        print("DDP: not measured (one GPU here).")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
