"""Consoles for the CLI: data goes to stdout, everything else (progress, logs, errors) to stderr.
Colour and TTY handling are left to rich (NO_COLOR, FORCE_COLOR, non-TTY output)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["stdout_console", "stderr_console", "progress_bar", "count_bar", "Bar"]


@cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Console:
    """The reports' console. Its print wraps a line of text at spaces only: a word longer than
    the width (a path, a tensor name) stays whole on its own line, for the terminal to wrap,
    where rich would fold it into pieces no one can copy."""
    from rich.console import Console
    from rich.text import Text

    class ReportConsole(Console):
        def print(self, *objects: Any, **kwargs: Any) -> None:
            if len(objects) != 1 or not isinstance(objects[0], str) or kwargs.get("soft_wrap") is not None:
                super().print(*objects, **kwargs)
                return
            text = self.render_str(objects[0], markup=kwargs.pop("markup", None), highlight=kwargs.pop("highlight", None))
            for line in text.split("\n", allow_blank=True):
                indent = line.plain[: len(line.plain) - len(line.plain.lstrip(" "))]
                for i, piece in enumerate(line.divide(word_breaks(line.plain, self.width))):
                    piece.rstrip()
                    super().print(piece if i == 0 else Text(indent).append_text(piece), soft_wrap=True, **kwargs)

    return ReportConsole()


def word_breaks(plain: str, width: int) -> list[int]:
    """Where to break `plain` into lines of at most `width` cells, at spaces only (a longer word
    gets a line of its own), each line after the first indented as the first is. Offsets into
    `plain`, for rich's Text.divide."""
    from rich.cells import cell_len

    indent = len(plain) - len(plain.lstrip(" "))
    breaks: list[int] = []
    used = indent
    for word in re.finditer(r"[^ ]+ *", plain[indent:]):
        length = cell_len(word.group().rstrip(" "))
        if used > indent and used + length > width:
            breaks.append(indent + word.start())
            used = indent
        used += cell_len(word.group())
    return breaks


@contextmanager
def count_bar(doing: str, what: str, *, disabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr over a count of `what` (samples, runs), `doing` them (e.g.
    "calibrating"); a total of 0 means unknown. Drawn only on a terminal (None otherwise)."""
    if disabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(doing),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(what),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    )
    task = bar.add_task(doing, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    with bar:
        yield update


class Bar:
    """A progress bar on stderr: called as a ProgressCallback (items and bytes: the writing, or
    a batch's models), and told of the stages before it (`stage`, a StageCallback: gptq's
    Hessians sample by sample, its codes weight by weight). Each stage starts afresh, so the
    time left is of the stage shown."""

    def __init__(self, progress: Progress, what: str) -> None:
        self._progress, self._what = progress, what
        self._doing = "quantizing"
        self._task = progress.add_task(self._doing, total=None, detail="")

    def __call__(self, done: int, total: int, nbytes: int, total_bytes: int) -> None:
        self._switch("quantizing")
        detail = f"{done}/{total} {self._what}, {nbytes / 1e6:.0f}/{total_bytes / 1e6:.0f} MB"
        self._progress.update(self._task, completed=nbytes, total=total_bytes or None, detail=detail)

    def stage(self, doing: str, unit: str, done: int, total: int) -> None:
        self._switch(doing)
        self._progress.update(self._task, completed=done, total=total or None, detail=f"{done}/{total} {unit}" if total else "")

    def _switch(self, doing: str) -> None:
        if doing != self._doing:
            self._doing = doing
            self._progress.reset(self._task, description=doing, total=None, detail="")


@contextmanager
def progress_bar(what: str, *, disabled: bool) -> Iterator[Bar | None]:
    """A Bar over items (`what`: tensors, models) and bytes, with the time left; drawn only on
    a terminal (None otherwise, without importing rich's progress)."""
    if disabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    )
    bar = Bar(progress, what)
    with progress:
        yield bar
