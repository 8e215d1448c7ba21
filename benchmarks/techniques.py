"""What each speed technique buys, measured one at a time on this machine.

Each line runs in a fresh process (allocator and thread settings cannot be undone), times
a number of steps after a warm-up, and reports the median and the peak resident memory:

- a training step of efficientnet_lite0 (batch 64, 224 px): NCHW fp32; channels_last;
  glibc keeping freed memory; chunks of 16 photos; bf16 autocast; torch.compile; one thread;
- a frozen-stage step: the body run forward only, against back-propagating to train the
  BatchNorm layers (fastai's train_bn);
- decoding a JPEG with and without Pillow's draft mode, at 4000 x 3000 and 500 x 375, and
  reading the decoded photo back from the cache;
- predicting one photo in ONNX Runtime and in PyTorch.

- (`--small-sizes`, issue 13) the unfrozen step at 128 and 224 px: every layer trained;
  with the depthwise weight gradient summed by hand (training/depthwise.py); with the stem
  and the first 2 or 3 feature stages frozen (--frozen-stages); and a forward-only pass of
  the frozen body (frozen epoch, validation) with and without BatchNorm folded.

    python benchmarks/techniques.py            # writes its sections of TECHNIQUES.md
    python benchmarks/techniques.py --small-sizes
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from cache_modes import write_section  # noqa: E402
from vs_fastai import machine  # noqa: E402

PHOTO = ROOT / "src" / "clearclass" / "demo_photos" / "n02088364-beagle"

STEP_CASES = {
    "NCHW, fp32": {},
    "channels_last": {"channels_last": True},
    "channels_last, keep freed memory": {"channels_last": True, "malloc": True},
    "... + chunks of 16 (BatchNorm statistics fixed)": {"channels_last": True, "malloc": True,
                                                        "micro": 16},
    "... + bf16 autocast": {"channels_last": True, "malloc": True, "micro": 16,
                            "bf16": True},
    "... + torch.compile": {"channels_last": True, "malloc": True, "micro": 16,
                            "compile": True},
    "... with 1 thread instead of 2": {"channels_last": True, "malloc": True, "micro": 16,
                                       "threads": 1},
    "frozen: BatchNorm trained (fastai train_bn), back-propagation": {
        "channels_last": True, "malloc": True, "frozen": "train_bn"},
    "frozen: body forward only": {"channels_last": True, "malloc": True, "frozen": "forward_only"},
}


def step_case(options: dict, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from clearclass.device import keep_freed_memory
    from clearclass.model import (
        create_model,
        fold_batchnorm,
        forward_frozen_body,
        freeze_early_stages,
        set_body_trainable,
        set_train_mode,
    )
    from clearclass.training.depthwise import faster_depthwise_gradients

    if options.get("malloc"):
        keep_freed_memory()
    if options.get("threads"):
        torch.set_num_threads(options["threads"])
    fmt = torch.channels_last if options.get("channels_last") else torch.contiguous_format
    model, _ = create_model("efficientnet_lite0", 10, pretrained=False)
    model = model.to(memory_format=fmt)
    frozen = options.get("frozen")
    set_body_trainable(model, not frozen, adapt_batchnorm=frozen == "train_bn")
    frozen_modules = tuple(freeze_early_stages(model, options.get("frozen_stages", 0)))
    set_train_mode(model, body_forward_only=frozen == "forward_only",
                   adapt_batchnorm=not options.get("micro"), frozen=frozen_modules)
    if options.get("fast_depthwise"):
        faster_depthwise_gradients(model).__enter__()  # for the life of this process
    size = options.get("size", 224)
    x = torch.randn(64, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (64,))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    forward = model
    compile_seconds = 0.0
    if options.get("compile"):
        t0 = time.perf_counter()
        forward = torch.compile(model)
        chunk = x[: options.get("micro") or 64]
        F.cross_entropy(forward(chunk), y[: len(chunk)]).backward()
        compile_seconds = time.perf_counter() - t0
    if frozen == "forward_only":
        body = fold_batchnorm(model).forward_features if options.get("fold") else None
        if options.get("onnx"):
            from clearclass.training.forward_only import forward_only

            body = forward_only(model, True, x[:2], batches=64)

        def forward(batch):
            return forward_frozen_body(model, batch, body)
    chunk = options.get("micro") or 64

    def step() -> None:
        optimizer.zero_grad()
        for xs, ys in zip(x.split(chunk), y.split(chunk)):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if options.get("bf16") else \
                torch.autocast("cpu", enabled=False)
            with ctx:
                loss = F.cross_entropy(forward(xs), ys) * len(ys) / len(y)
            loss.backward()
        optimizer.step()

    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    result = {"seconds": statistics.median(times[2:]), "compile_seconds": compile_seconds}
    if options.get("profile"):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        result["profile"] = [(e.key, e.self_cpu_time_total / total) for e in events[:8]]
    return result


def decode_case(steps: int) -> dict:
    from PIL import Image

    from clearclass.data.cache import entry_path, read_entry, write_entry
    from clearclass.data.decode import open_rgb, resize_to_fit

    source = Image.open(sorted(PHOTO.iterdir())[0]).convert("RGB")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in ((4000, 3000), (500, 375)):
            path = Path(tmp) / f"{w}x{h}.jpg"
            source.resize((w, h), Image.Resampling.BICUBIC).save(path, quality=90)
            for draft in (False, True):
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    img = open_rgb(path, min_size=224 if draft else None)
                    resize_to_fit(img, 224, "crop")
                    times.append(time.perf_counter() - t0)
                results[f"{w}x{h} {'draft' if draft else 'full'}"] = statistics.median(times)
            pixels = resize_to_fit(open_rgb(path), 224, "crop")
            entry = entry_path(Path(tmp) / "cache", path.read_bytes(), 224, "crop")
            write_entry(entry, pixels)
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                read_entry(entry)
                times.append(time.perf_counter() - t0)
            results[f"{w}x{h} cache"] = statistics.median(times)
    return results


def predict_case(steps: int) -> dict:
    import clearclass
    from clearclass import progress
    from clearclass.training import train

    with tempfile.TemporaryDirectory() as tmp:
        with progress.quiet():
            run = train(PHOTO.parent, out=Path(tmp) / "run", model="efficientnet_lite0",
                        freeze_epochs=1, epochs=0, batch_size=32)
        photos = sorted(PHOTO.iterdir())
        results = {}
        for backend in ("onnx", "torch"):
            classifier = clearclass.load(run.model_dir, backend=backend)
            for p in photos[:3]:
                classifier.predict(p)
            times = []
            for i in range(steps):
                t0 = time.perf_counter()
                classifier.predict(photos[i % len(photos)])
                times.append(time.perf_counter() - t0)
            results[backend] = statistics.median(times)
    return results


DEPTHWISE_SHAPES = [(1152, 4, 5, 1), (672, 8, 5, 2), (1152, 7, 5, 1), (672, 14, 5, 2)]


def depthwise_case(steps: int) -> dict:
    """The weight gradient of one depthwise convolution (16 photos, channels_last) by
    oneDNN and summed per kernel position (training/depthwise.py), for the shapes of
    efficientnet_lite0's last stages at 128 px (4 x 4 outputs) and 224 px (7 x 7)."""
    import torch

    from clearclass.training.depthwise import depthwise_weight_gradient

    results = {}
    for channels, size, kernel, stride in DEPTHWISE_SHAPES:
        pad = kernel // 2
        weight = torch.randn(channels, 1, kernel, kernel)
        x = torch.randn(16, channels, size, size).contiguous(memory_format=torch.channels_last)
        out = (size + 2 * pad - kernel) // stride + 1
        grad = torch.randn(16, channels, out, out).contiguous(memory_format=torch.channels_last)
        ways = {
            "oneDNN": functools.partial(
                torch.ops.aten.convolution_backward, grad, x, weight, None, [stride] * 2,
                [pad] * 2, [1, 1], False, [0, 0], channels, [False, True, False]),
            "by hand": functools.partial(depthwise_weight_gradient, x, grad, weight.shape,
                                         (stride, stride), (pad, pad)),
        }
        for way, run in ways.items():
            times = []
            for _ in range(steps + 3):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            results[f"{channels}x{size} k{kernel} s{stride} {way}"] = statistics.median(
                times[3:])
    return results


def run_isolated(kind: str, options: dict, steps: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", json.dumps([kind, options]),
                          "--steps", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "TECHNIQUES.md")
    parser.add_argument("--small-sizes", action="store_true",
                        help="only the unfrozen step and forward passes at 128 and 224 px")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, options = json.loads(args.case)
        result = {"step": lambda: step_case(options, args.steps),
                  "decode": lambda: decode_case(args.steps * 5),
                  "predict": lambda: predict_case(args.steps * 10),
                  "depthwise": lambda: depthwise_case(args.steps * 5)}[kind]()
        result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(json.dumps(result))
        return
    if args.small_sizes:
        small_sizes(args.steps, args.out)
        return

    lines = ["# What each speed technique buys", "",
             f"Written by `python benchmarks/techniques.py` on {time.strftime('%Y-%m-%d')}; "
             "each row in a fresh process, median of the timed repeats.", "",
             "## Training step, efficientnet_lite0, batch 64, 224 px", "",
             "| technique | seconds per step | photos/s | peak memory |",
             "| --- | ---: | ---: | ---: |"]
    for label, options in STEP_CASES.items():
        r = run_isolated("step", options, args.steps)
        extra = f" (compiling took {r['compile_seconds']:.0f} s)" if r["compile_seconds"] else ""
        lines.append(f"| {label}{extra} | {r['seconds']:.2f} | {64 / r['seconds']:.0f} | "
                     f"{r['peak_gb']:.1f} GB |")
        print(lines[-1], flush=True)
    r = run_isolated("decode", {}, args.steps)
    lines += ["", "## Decoding one JPEG and resizing it for 224 px (crop)", "",
              "| photo | full decode | draft mode | read back from the cache |",
              "| --- | ---: | ---: | ---: |"]
    for size in ("4000x3000", "500x375"):
        lines.append(f"| {size} | {1000 * r[size + ' full']:.1f} ms | "
                     f"{1000 * r[size + ' draft']:.1f} ms | {1000 * r[size + ' cache']:.2f} ms |")
    r = run_isolated("predict", {}, args.steps)
    lines += ["", "## Predicting one photo (decoding included), efficientnet_lite0", "",
              f"ONNX Runtime {1000 * r['onnx']:.1f} ms; PyTorch {1000 * r['torch']:.1f} ms "
              "(median).", ""]
    text = "\n".join(lines)
    print(text)
    # Its sections replace those of an earlier run; the others (--small-sizes, and
    # unfrozen_stage.py's) are kept.
    title, _, sections = text.partition("\n## ")
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(title + ("\n## " + old.split("\n## ", 1)[1] if "\n## " in old else ""))
    for section in sections.split("\n## "):
        write_section(args.out, "## " + section.rstrip("\n") + "\n")


BASE = {"channels_last": True, "malloc": True, "micro": 16}
SMALL_CASES = {
    "every layer trained (before issue 13)": {},
    "+ depthwise weight gradient summed by hand": {"fast_depthwise": True},
    "+ stem and 2 feature stages fixed": {"fast_depthwise": True, "frozen_stages": 2},
    "+ stem and 3 feature stages fixed (the default)": {"fast_depthwise": True,
                                                         "frozen_stages": 3},
    "frozen body, forward only": {"frozen": "forward_only", "micro": None},
    "frozen body, forward only, BatchNorm folded": {
        "frozen": "forward_only", "micro": None, "fold": True},
    "frozen body, forward only, in ONNX Runtime (the default)": {
        "frozen": "forward_only", "micro": None, "onnx": True},
}


DEFAULT_CASE = "+ stem and 3 feature stages fixed (the default)"


def small_sizes(steps: int, out: Path) -> None:
    lines = ["## Unfrozen step and forward-only passes at 128 and 224 px", "",
             f"`python benchmarks/techniques.py --small-sizes`, run on "
             f"{time.strftime('%Y-%m-%d')}. Machine: {machine()}. efficientnet_lite0, batch "
             "64 (unfrozen: in chunks of 16, BatchNorm statistics fixed), channels_last; each "
             "row in a fresh process, median of the timed steps.", "",
             "| step | 128 px | 224 px |", "| --- | ---: | ---: |"]
    for label, options in SMALL_CASES.items():
        cells = []
        for size in (128, 224):
            r = run_isolated("step", {**BASE, **options, "size": size}, steps)
            cells.append(f"{r['seconds']:.2f} s")
        lines.append(f"| {label} | {' | '.join(cells)} |")
        print(lines[-1], flush=True)
    r = run_isolated("depthwise", {}, steps)
    lines += ["", "Depthwise weight gradient, 16 photos, median:", "",
              "| channels x input side, kernel, stride | output | oneDNN | by hand |",
              "| --- | --- | ---: | ---: |"]
    for channels, size, kernel, stride in DEPTHWISE_SHAPES:
        key = f"{channels}x{size} k{kernel} s{stride}"
        side = (size + 2 * (kernel // 2) - kernel) // stride + 1
        lines.append(f"| {channels} x {size}, {kernel} x {kernel}, {stride} | {side} x {side} | "
                     f"{1000 * r[key + ' oneDNN']:.1f} ms | {1000 * r[key + ' by hand']:.1f} ms |")
    r = run_isolated("step", {**BASE, **SMALL_CASES[DEFAULT_CASE], "size": 128,
                              "profile": True}, steps)
    lines += ["", "Where the default unfrozen step spends its time at 128 px "
              "(torch.profiler, 3 steps, share of self CPU time): " + "; ".join(
                  f"{name.removeprefix('aten::')} {100 * share:.0f}%"
                  for name, share in r["profile"]) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(out, text)


if __name__ == "__main__":
    main()
