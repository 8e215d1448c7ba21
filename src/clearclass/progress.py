"""Terminal output: progress bars in a terminal, plain lines elsewhere, nothing when quiet."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Bar:
    """A task on a progress bar; `advance` and `set_info` are no-ops when silent."""

    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_info(self, info: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=info)


@contextlib.contextmanager
def bar(description: str, total: int, quiet: bool = False) -> Iterator[Bar]:
    """A transient progress bar, shown only in a terminal and when not quiet."""
    if quiet or not console.is_terminal:
        yield Bar(None, None)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task(description, total=total, info="")
        yield Bar(progress, task)


def say(message: str, quiet: bool = False) -> None:
    """Print a line as is (no markup: file names may hold brackets)."""
    if not quiet:
        console.print(message, markup=False)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}")
