"""What clearclass says while it works: messages, warnings, progress bars, the epoch table.

Messages and warnings are records of the standard `logging` logger "clearclass", so they
are silenced or redirected the usual way:

    import logging
    logging.getLogger("clearclass").setLevel(logging.WARNING)   # warnings and errors only

(`clearclass COMMAND --quiet` does the same; `progress.quiet()` does it for a block.)
Progress bars and the epoch table are shown only while the logger lets messages through.

One reporter renders all of it, chosen for where the code runs: in a Jupyter kernel, HTML
progress bars and a table that update in place under the cell; in a terminal, rich progress
bars that vanish when done; elsewhere (a pipe, a log file), plain lines and no bars.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence

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

logger = logging.getLogger("clearclass")
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
NOTEBOOK_REFRESH_SECONDS = 0.2  # a notebook is sent at most this many bar updates a second


def say(message: str) -> None:
    """Tell the user something (INFO): printed as is, file names with brackets included."""
    logger.info(message)


def warn(message: str) -> None:
    """Warn the user (WARNING): something was skipped or may not be what they meant."""
    logger.warning(message)


def enabled() -> bool:
    """Whether messages, bars and tables are shown (the logger lets INFO through)."""
    return logger.isEnabledFor(logging.INFO)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Only warnings and errors within the block."""
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def in_notebook() -> bool:
    """True in a Jupyter kernel (where HTML output is shown under the cell)."""
    if "IPython" not in sys.modules:  # never import IPython just to find out
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class Bar:
    """A task on a progress bar; `advance` and `set_info` do nothing when nothing is shown."""

    def advance(self, n: int = 1) -> None:
        pass

    def set_info(self, info: str) -> None:
        pass


class _RichBar(Bar):
    def __init__(self, progress: Progress, task: int):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_info(self, info: str) -> None:
        self._progress.update(self._task, info=info)


class _NotebookBar(Bar):
    """An HTML <progress> element under the cell, updated in place, removed when done."""

    def __init__(self, description: str, total: int):
        from IPython.display import display

        self.description, self.total, self.done, self.info = description, total, 0, ""
        self.started = self._shown = time.perf_counter()
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._refresh()

    def set_info(self, info: str) -> None:
        self.info = info
        self._refresh()

    def _refresh(self) -> None:
        now = time.perf_counter()
        if now - self._shown >= NOTEBOOK_REFRESH_SECONDS or self.done >= self.total:
            self._shown = now
            self.handle.update(self._bundle(), raw=True)

    def close(self) -> None:
        """Done: the bar leaves nothing behind (the epoch table stays)."""
        self.handle.update({"text/plain": "", "text/html": ""}, raw=True)

    def _bundle(self) -> dict[str, str]:
        """The bar as HTML, and as text for viewers without HTML."""
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else None
        timing = f"{clock(elapsed)}<{clock(left) if left is not None else '?'}"
        text = f"{self.description} {self.done}/{self.total} [{timing}] {self.info}".rstrip()
        return {"text/plain": text,
                "text/html": _render("progress_bar.html", done=self.done, total=self.total,
                                     text=text)}


@contextlib.contextmanager
def bar(description: str, total: int) -> Iterator[Bar]:
    """A progress bar for `total` steps, shown while it runs, in a notebook or a terminal."""
    if not enabled():
        yield Bar()
    elif in_notebook():
        notebook_bar = _NotebookBar(description, total)
        try:
            yield notebook_bar
        finally:
            notebook_bar.close()
    elif console.is_terminal:
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=console, transient=True,
        )
        with progress:
            yield _RichBar(progress, progress.add_task(description, total=total, info=""))
    else:
        yield Bar()


class LiveTable:
    """Rows that arrive one at a time (the epoch table).

    Live, it is shown as it grows: in a notebook, one HTML table updated in place under
    the cell; elsewhere, the header and then each row as a line of text. Otherwise it only
    collects rows, to be shown as a whole (`repr`, or HTML in a notebook).
    """

    def __init__(self, header: Sequence[str], widths: Sequence[int], live: bool = True):
        self.header, self.widths = tuple(header), tuple(widths)
        self.rows: list[tuple] = []
        self.live = live
        self._handle = None
        if live and enabled() and in_notebook():
            from IPython.display import display

            self._handle = display(self, display_id=True)

    def add_row(self, cells: Sequence) -> None:
        self.rows.append(tuple(cells))
        if not self.live:
            return
        if self._handle is not None:
            self._handle.update(self)
            return
        if len(self.rows) == 1:
            say(self._line(self.header))
        say(self._line(self.rows[-1]))

    def _line(self, cells: Sequence) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, self.widths)).rstrip()

    def __repr__(self) -> str:
        return "\n".join(self._line(r) for r in (self.header, *self.rows))

    def _repr_html_(self) -> str:
        return _render("live_table.html", header=self.header, rows=self.rows)


def show(renderable) -> None:
    """Print a rich table (or other renderable) when messages are shown."""
    if enabled():
        console.print(renderable)


def _render(template: str, **context) -> str:
    # Imported when first shown: a command that shows no HTML never loads Jinja2 or Pillow.
    from clearclass import pages

    return pages.render(template, **context)


def clock(seconds: float) -> str:
    """Seconds as minutes:seconds, "01:05" (the bars, and metrics.csv's `time`)."""
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


class _Handler(logging.Handler):
    """Renders clearclass's records: plain text on stdout, yellow warnings on stderr.

    The streams are looked up at each record, so a notebook cell, a test runner or a
    redirected sys.stdout gets the text.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if in_notebook():
                stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
                prefix = "warning: " if record.levelno >= logging.WARNING else ""
                print(prefix + text, file=stream, flush=True)
            elif record.levelno >= logging.WARNING:
                err_console.print(f"[yellow]warning:[/yellow] {escape(text)}")
            else:
                console.print(text, markup=False)
        except Exception:  # noqa: BLE001  (logging's rule: a handler never raises)
            self.handleError(record)


# Like most libraries that talk to their users (transformers, tqdm's logging), clearclass
# configures its own logger, so that `clearclass.train(...)` in a script or a notebook
# shows the epoch table without any logging set-up; `propagate = False` keeps the root
# logger's handlers from printing each line a second time.
if not any(isinstance(h, _Handler) for h in logger.handlers):
    logger.addHandler(_Handler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
