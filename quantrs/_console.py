"""Consoles for the CLI: data goes to stdout, everything else (progress, logs, errors) to stderr.
Colour and TTY handling are left to rich (NO_COLOR, FORCE_COLOR, non-TTY output)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from rich.console import Console

__all__ = ["stdout_console", "stderr_console", "tensor_progress"]


@cache
def stderr_console() -> Console:
    return Console(stderr=True)


def stdout_console() -> Console:
    return Console()


@contextmanager
def tensor_progress(*, disabled: bool) -> Iterator[Callable[[int, int, int], None]]:
    """A progress bar over tensors and bytes on stderr, drawn only on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    bar = Progress(
        TextColumn("quantizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tensors, {task.fields[mb]:.0f} MB"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=disabled or not console.is_terminal,
    )
    task = bar.add_task("quantize", total=None, mb=0.0)

    def update(done: int, total: int, nbytes: int) -> None:
        bar.update(task, completed=done, total=total, mb=nbytes / 1e6)

    with bar:
        yield update
