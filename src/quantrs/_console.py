"""Consoles for the CLI: data goes to stdout, everything else (progress, logs, errors) to stderr.
Colour and TTY handling are left to rich (NO_COLOR, FORCE_COLOR, non-TTY output)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["stdout_console", "stderr_console", "progress_bar"]


@cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Console:
    from rich.console import Console

    return Console()


@contextmanager
def count_bar(doing: str, what: str, *, disabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr over a count of `what` (samples, runs), `doing` them (e.g.
    "calibrating"); a total of 0 means unknown. Drawn only on a terminal (None otherwise)."""
    if disabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(doing), BarColumn(), MofNCompleteColumn(), TextColumn(what), TimeElapsedColumn(), console=stderr_console(), transient=True)
    task = bar.add_task(doing, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    with bar:
        yield update


@contextmanager
def progress_bar(what: str, *, disabled: bool) -> Iterator[Callable[[int, int, int, int], None] | None]:
    """A progress bar on stderr over items (`what`: tensors, models) and bytes, with the time
    left; drawn only on a terminal (None otherwise, without importing rich's progress)."""
    if disabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = stderr_console()
    bar = Progress(
        TextColumn("quantizing"),
        BarColumn(),
        TextColumn("{task.fields[items]} " + what + ", {task.fields[mb]:.0f}/{task.fields[total_mb]:.0f} MB"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("quantize", total=None, items="0", mb=0.0, total_mb=0.0)

    def update(done: int, total: int, nbytes: int, total_bytes: int) -> None:
        bar.update(task, completed=nbytes, total=total_bytes, items=f"{done}/{total}", mb=nbytes / 1e6, total_mb=total_bytes / 1e6)

    with bar:
        yield update
