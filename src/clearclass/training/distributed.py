"""Training in several processes, on PyTorch's own engine: torchrun starts them, DDP syncs them.

`torchrun --nproc_per_node=N -m clearclass train ...` (or `clearclass train --processes N`,
which runs torchrun) starts N copies of the training; each learns from its share of every
batch and DistributedDataParallel averages the gradients, so the N copies stay one model.
torchrun tells each process its place through environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT), read here as torchvision's references do. The backend is NCCL
between CUDA GPUs and gloo on the CPU. Process 0 alone prints and writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of the run."""

    rank: int = 0  # 0 .. world_size - 1, across machines
    world_size: int = 1
    local_rank: int = 0  # on this machine: which GPU it uses
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """The process that prints and writes."""
        return self.rank == 0


def from_environment() -> Processes:
    """This process's place, as torchrun describes it (one process when not under torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    return Processes(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                     int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def device_for(requested: str, processes: Processes) -> str:
    """Under torchrun each process takes its own GPU: cuda:LOCAL_RANK."""
    if processes.distributed and requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{processes.local_rank}"
    return requested


def start(processes: Processes, device: torch.device) -> None:
    """Join the other processes (NCCL between GPUs, gloo on the CPU)."""
    if not processes.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def wrap(module: torch.nn.Module, processes: Processes,
         device: torch.device) -> torch.nn.Module:
    """What a training step calls: `module` in DistributedDataParallel when training in
    several processes (it averages the gradients across them during backward), else
    `module` itself. Built anew for each stage: DDP syncs the parameters that learn when it
    is built."""
    if not processes.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module,
                                   device_ids=[device] if device.type == "cuda" else None)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wait_for_all(processes: Processes) -> None:
    """A barrier: every process has reached this point."""
    if processes.distributed:
        dist.barrier()


def sum_all(values: torch.Tensor, processes: Processes) -> torch.Tensor:
    """`values` summed over every process (in place; returned for convenience)."""
    if processes.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def share_buffers(module: torch.nn.Module, processes: Processes) -> None:
    """Every process's buffers (BatchNorm's running statistics) made process 0's.

    DistributedDataParallel sends process 0's buffers at the start of each forward pass, so
    after the last training step each process holds the statistics of its own last batch;
    validating with them would score a slightly different model in each process than the
    one process 0 saves."""
    if processes.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def any_process(flags: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Each flag (0/1) set where it is set in any process."""
    if processes.distributed:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags
