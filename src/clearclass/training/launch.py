"""`clearclass train --processes N`: checked before anything starts, then run through
torchrun's agent in this process, and ended with it.

The launcher (the `clearclass train` the user started) first checks what it can without
PyTorch: a core per process on the CPU (a GPU per process on CUDA), the memory the processes
need at the least, and a batch size that divides among them, each refused in one line with
the numbers. Then it runs torchrun's agent (`torch.distributed.run`) in its own process: the
agent starts the N processes and, on SIGTERM, SIGINT (Ctrl-C), SIGHUP or SIGQUIT, passes the
signal on to them and waits for them to save and stop (30 s, then SIGKILL). On Linux each
process also asks the kernel to kill it when its parent dies (`end_with_launcher`), so that
a launcher killed with SIGKILL, which can pass nothing on, leaves no process behind either.

A process that fails with a ClearclassError (the same error, most often, in all N) leaves its
message to the launcher (`report_error`), which prints each different message once, instead
of N copies under torchrun's ChildFailedError traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clearclass.errors import ClearclassError, RunError, SettingError
from clearclass.parallel import available_cores
from clearclass.run_folder import RunFolder

# Memory one training process takes before it holds a single photo: Python, PyTorch, a
# model and its optimizer. Measured on the CPU with the smallest model there is (timm's
# test_resnet, 32 px photos): 390 MB private to the process; real models take more. N
# processes that cannot have N times this are stopped by the system, not by a message.
PROCESS_MEMORY = 350 * 1000**2
LAUNCHER_VARIABLE = "CLEARCLASS_LAUNCHER_PID"  # the launcher's pid, in its processes
ERRORS_VARIABLE = "CLEARCLASS_PROCESS_ERRORS"  # the folder where they leave their errors
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")  # those torchrun's agent passes on
HANDLED_VARIABLE = "TORCHELASTIC_SIGNALS_TO_HANDLE"  # torchrun's: which signals it handles


def check(processes: int, device: str, batch_size: int | None,
          resumed: Path | None = None) -> None:
    """Refuse `processes` that this machine cannot run, before any of them starts.

    `batch_size` is the run's (None where a resumed run's config.json cannot be read: its
    processes then say what is wrong with it); `resumed` is its run folder.
    """
    from clearclass.device import device_name

    name = device_name(device)  # imports PyTorch only where a GPU may be there
    kind = name.partition(":")[0]
    if kind == "cuda":
        if name != "cuda":
            raise SettingError("device", f"{name} names one GPU, but each of the {processes} "
                                         "processes takes a GPU of its own (process N: GPU "
                                         "N); give --device cuda, and CUDA_VISIBLE_DEVICES to "
                                         "choose the GPUs.")
        import torch

        gpus = torch.cuda.device_count()
        limit, what = gpus, f"PyTorch sees {_count(gpus, 'CUDA GPU')} on this machine"
        advice = f"use at most --processes {gpus}, one per GPU"
    elif kind == "mps":
        limit, what = 1, "Apple MPS is one GPU, which processes cannot share"
        advice = "use --processes 1, or --device cpu"
    else:
        # On the CPU each process needs a core of its own. The processes take every step
        # together (each waits for the others' gradients), so one that has to wait for a
        # core holds back all of them: past one per core, more processes only add their
        # memory (PROCESS_MEMORY and up, each) and the time they wait for each other.
        # (Even one per core is rarely faster than --processes 1, whose threads use every
        # core; several processes are for GPUs.) Cores are those this process may use:
        # its CPU affinity and cgroup quota, as for the decoding workers.
        limit = available_cores()
        what = (f"this machine has {_count(limit, 'CPU core')} (those this command may use: "
                "its CPU affinity and quota), and on the CPU each process needs a core of its "
                "own")
        advice = (f"use at most --processes {limit} (--processes 1 already trains on every "
                  "core)")
    if processes > limit:
        raise SettingError("processes", f"{processes} asks for {processes} processes, but "
                                        f"{what}; {advice}.")

    from clearclass.data.budget import available_memory, format_size

    memory = available_memory()
    if memory is not None and processes * PROCESS_MEMORY > memory:
        raise SettingError("processes", f"{processes} needs at least "
                                        f"{format_size(processes * PROCESS_MEMORY)} of memory "
                                        f"({format_size(PROCESS_MEMORY)} for each process "
                                        "before any photo), but "
                                        f"{format_size(memory)} is available now; use at most "
                                        f"--processes {max(1, memory // PROCESS_MEMORY)}.")
    if batch_size is not None and batch_size % processes:
        fits = [n for n in range(min(processes, limit), 0, -1) if batch_size % n == 0][0]
        if resumed is None:
            raise SettingError("batch_size", f"is the photos of one step across all "
                                             f"{processes} processes, so it must divide "
                                             f"among them; got {batch_size}. Use a multiple "
                                             f"of {processes}, or --processes {fits}.")
        raise SettingError("processes", f"{processes}: the run's batch size ({batch_size}, in "
                                        f"{resumed / 'config.json'}) must divide among the "
                                        "processes, and a resumed run keeps it; resume it "
                                        f"with --processes {fits}.")


def saved_settings(run_dir: Path) -> dict[str, Any]:
    """A run's device and batch size, from its config.json read without PyTorch; what it
    does not say well is left out (resuming then says what is wrong, in one line)."""
    try:
        saved = RunFolder(run_dir).record()["config"]
        device, batch_size = saved.get("device"), saved.get("batch_size")
    except (RunError, KeyError, AttributeError):
        return {}
    kept: dict[str, Any] = {"device": device} if isinstance(device, str) else {}
    if type(batch_size) is int and batch_size > 0:
        kept["batch_size"] = batch_size
    return kept


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def run(processes: int, arguments: list[str], debug: bool = False) -> int:
    """`python -m clearclass ARGUMENTS` in `processes` processes, started by torchrun's
    agent in this process: 0 once all have finished, 128 + the signal that stopped them
    (each stops as it does on that signal itself: Ctrl-C saves a checkpoint). A failure is
    one RunError with the processes' own messages, each once."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    kept_environment = {name: os.environ.get(name) for name in (
        "OMP_NUM_THREADS", LAUNCHER_VARIABLE, ERRORS_VARIABLE, HANDLED_VARIABLE)}
    # torchrun gives each process 1 thread unless told; the cores shared out go further.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // processes)))
    os.environ[LAUNCHER_VARIABLE] = str(os.getpid())
    if sys.platform.startswith("linux"):
        # Ctrl-C is left to Python (KeyboardInterrupt), not to the agent: the agent still
        # stops the processes (SIGTERM: they save and stop between two steps), and a
        # second Ctrl-C ends this process at once, and with it its processes
        # (end_with_launcher), as a second Ctrl-C does in one process. The agent would
        # wait for them again instead.
        os.environ.setdefault(HANDLED_VARIABLE, "SIGTERM,SIGHUP,SIGQUIT")
    if not debug:  # what torchrun logs is its own view of what is reported here
        torch_logs = logging.getLogger("torch.distributed")  # PyTorch gave it a handler
        for handler in list(torch_logs.handlers):
            torch_logs.removeHandler(handler)
        torch_logs.addHandler(logging.NullHandler())
        torch_logs.propagate = False
    with tempfile.TemporaryDirectory(prefix="clearclass-errors-") as errors, _kept_signals():
        os.environ[ERRORS_VARIABLE] = errors
        try:
            torchrun.run(torchrun.parse_args(["--standalone", f"--nproc-per-node={processes}",
                                              "-m", "clearclass", *arguments]))
        except ChildFailedError as e:
            raise _failure(e, Path(errors), processes) from e
        except SignalException as e:
            return 128 + int(e.sigval)
        finally:
            for name, value in kept_environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return 0


@contextlib.contextmanager
def _kept_signals() -> Iterator[None]:
    """The agent handles these signals while it runs; this process's own handlers after."""
    kept = {getattr(signal, name): signal.getsignal(getattr(signal, name))
            for name in SIGNALS if hasattr(signal, name)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)


def _failure(failed: Any, errors: Path, processes: int) -> ClearclassError:
    """What the processes left in `errors`, each different message once (process 0's
    first); else which process failed, and how, from torchrun's ChildFailedError."""
    left: dict[str, int] = {}  # message: the first process that left it
    for file in sorted(errors.iterdir(), key=lambda f: int(f.name)):  # named by rank
        message = file.read_text("utf-8", errors="surrogateescape").strip()
        if message:
            left.setdefault(message, int(file.name))
    if left:
        first, *others = left
        return RunError(first + "".join(f" (process {left[m]} of {processes}: {m})"
                                        for m in others))
    rank, failure = failed.get_first_failure()
    if failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
        if -failure.exitcode == getattr(signal, "SIGKILL", 9):
            how += (", most often the system's answer to running out of memory: fewer "
                    "--processes, a smaller --batch-size or --item-resize need less")
    else:
        how = f"failed with exit status {failure.exitcode} (its output is above)"
    return RunError(f"Process {rank} of {processes} {how}.")


def report_error(message: str) -> bool:
    """In a process the launcher started: leave `message` to the launcher, which prints it
    (once, whatever the number of processes that fail the same way). False elsewhere: the
    process prints it itself."""
    folder, rank = os.environ.get(ERRORS_VARIABLE), os.environ.get("RANK")
    if not folder or rank is None or not rank.isdigit():
        return False
    try:
        (Path(folder) / rank).write_text(message, "utf-8", errors="surrogateescape")
    except OSError:
        return False
    return True


def end_with_launcher() -> None:
    """In a process that torchrun started (`clearclass train --processes N`, or torchrun
    itself): be killed with SIGKILL when the launcher dies (Linux's PR_SET_PDEATHSIG).

    A launcher that gets SIGTERM or Ctrl-C passes it on and waits for its processes; one
    killed with SIGKILL (or by the system, for memory) cannot, and this is what ends them
    then. Elsewhere, and outside torchrun, it does nothing.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    launcher = os.environ.get(LAUNCHER_VARIABLE, "")
    if launcher.isdigit() and os.getppid() != int(launcher):
        os.kill(os.getpid(), signal.SIGKILL)  # it died before the line above: end now
