"""Which device and number format training and prediction run in.

`--device` means the same in every command: `auto` picks CUDA, else Apple MPS, else the
CPU; `cpu`, `cuda`, `cuda:N` and `mps` ask for one, and one that is not there is an error
that names what is. Mixed precision is used where the hardware does it natively: bf16 on
CUDA (fp16 with loss scaling on GPUs without bf16), bf16 on CPUs with AVX512-BF16 or AMX;
elsewhere fp32, since emulated bf16 is slower.

PyTorch is imported only when a device has to be looked at, so that prediction with ONNX
Runtime on the CPU (`device_name("cpu")`) runs without it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clearclass.errors import ClearclassError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Compute:
    """A device and the number format its forward passes run in."""

    device: torch.device
    dtype: torch.dtype  # float32 means no autocast

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        import torch

        return self.dtype == torch.float16

    def describe(self) -> str:
        import torch

        name = self.device.type.upper()
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        elif self.device.type == "cpu":
            name = f"CPU ({torch.get_num_threads()} threads)"
        fmt = {torch.float32: "fp32", torch.bfloat16: "bf16 mixed precision",
               torch.float16: "fp16 mixed precision"}[self.dtype]
        return f"{name}, {fmt}"


def select(device: str = "auto", precision: str = "auto") -> Compute:
    """The device to use (`auto`, `cpu`, `cuda`, `cuda:1`, `mps`) and its number format.

    It changes nothing in the process: training on the CPU calls `keep_freed_memory`
    itself, where the change to the allocator is worth its cost.
    """
    import torch

    dev = torch.device(device_name(device))
    return Compute(dev, _dtype(dev, precision))


def is_device_name(name: str) -> bool:
    """Whether `name` is spelt as a device: auto, cpu, cuda, cuda:N or mps."""
    kind, colon, index = name.partition(":")
    # "cuda:" (no number) would pass to torch.device, which fails with a traceback.
    return kind in DEVICES and (not colon or (kind == "cuda" and index.isascii()
                                              and index.isdigit()))


def device_name(name: str) -> str:
    """`name` checked and resolved (`auto` becomes `cuda`, `mps` or `cpu`).

    Example:
        print(device_name("auto"))  # "cpu" on a machine without a GPU

    PyTorch is not imported for `cpu`, nor for `auto` where no GPU can be there (no NVIDIA
    driver, not an Apple silicon Mac, or PyTorch not installed).
    """
    if not is_device_name(name):
        raise ClearclassError(f"Unknown device '{name}'; use one of auto, cpu, cuda, cuda:N "
                              "or mps.")
    kind, _, index = name.partition(":")
    if kind == "cpu" or (kind == "auto" and not _gpu_possible()):
        return "cpu"
    try:
        import torch
    except ImportError:
        if kind == "auto":
            return "cpu"
        raise ClearclassError(f"--device {name} needs PyTorch, which is not installed here; "
                              "available: cpu (ONNX Runtime).") from None
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if kind == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if kind == "cuda" and (not cuda or (index and int(index) >= torch.cuda.device_count())):
        what = f"GPU number {index}" if cuda else "CUDA GPU"
        raise ClearclassError(f"--device {name}: PyTorch sees no {what} on this machine; "
                              f"available: {', '.join(available_devices())}.")
    if kind == "mps" and not mps:
        raise ClearclassError(f"--device {name}: Apple MPS is not available on this machine; "
                              f"available: {', '.join(available_devices())}.")
    return name


def available_devices() -> list[str]:
    """The devices PyTorch can use here, e.g. ['cpu', 'cuda:0 (NVIDIA H200)']."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                  for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _gpu_possible() -> bool:
    """False where no GPU PyTorch could use can be present, judged without importing it."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if "torch" in sys.modules:  # already imported: asking costs nothing
        return True
    # An NVIDIA driver, AMD ROCm, or WSL2's GPU.
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/kfd",
                                           "/dev/dxg"))


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    This changes the allocator of the whole process, for as long as it runs; training on
    the CPU asks for it explicitly.

    By default glibc serves every allocation over 32 MB with a fresh mmap and unmaps it on
    free, so each training step page-faults its activations in anew: measured here, a step
    of efficientnet_lite0 (batch 64, 224 px, 2 cores) spent 3 s of its 3.6 s in the kernel.
    Raising the mmap and trim thresholds halves the step time (1.8 s frozen, 2.4 s unfrozen);
    the cost is that the process keeps its peak memory until it exits.
    """
    if platform.system() != "Linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)
                    and libc.mallopt(m_trim_threshold, 1 << 31))
    except (OSError, AttributeError):  # not glibc (musl), or no mallopt
        return False


def _dtype(device: torch.device, precision: str) -> torch.dtype:
    import torch

    if precision not in PRECISIONS:
        raise ClearclassError(
            f"Unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}."
        )
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ClearclassError("fp16 is not supported on the CPU; use bf16 or fp32.")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX), not emulated."""
    if os.environ.get("CLEARCLASS_CPU_BF16") in ("0", "1"):
        return os.environ["CLEARCLASS_CPU_BF16"] == "1"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
