"""Stopping training when asked: Ctrl-C or SIGTERM ends the run at the next step, saved.

A signal only sets a flag (`StopRequest.asked`); the loop looks at it between two steps,
where the weights and the optimizer agree, saves a checkpoint and raises KeyboardInterrupt.
Under torchrun every process must stop at the same step, so the flag is shared at the
loop's sync points.
"""

from __future__ import annotations

import torch

from clearclass.parallel import StopBetweenSteps
from clearclass.progress import warn
from clearclass.training import distributed
from clearclass.training.distributed import Processes


class StopRequest(StopBetweenSteps):
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop at the next step, after saving a
    checkpoint; a second Ctrl-C stops at once, but not under torchrun: it passes the user's
    Ctrl-C on to every process (a second signal to each), then waits 30 s before it kills
    them."""

    def __init__(self, processes: Processes) -> None:
        super().__init__(second_stops=not processes.distributed)
        self.processes = processes

    def first_asked(self) -> None:
        if self.processes.main:  # the process that prints
            warn("Stopping after this step, once a checkpoint is saved (Ctrl-C again to "
                 "stop at once, without saving)...")

    def requested(self, due: bool = False) -> tuple[bool, bool]:
        """(stop, due): whether to stop, and whether a checkpoint is `due`, each set when
        set in any process (under DDP every process must call this at the same step)."""
        if not self.processes.distributed:
            return self.asked, due
        flags = torch.tensor([float(self.asked), float(due)])
        if torch.distributed.get_backend() == "nccl":
            flags = flags.cuda()
        stop, due = distributed.any_process(flags, self.processes).tolist()
        self.asked = bool(stop)
        return self.asked, bool(due)
