"""What every fuzz target shares: the oracle that tells a finding from a clean refusal.

A target feeds the fuzzer's bytes to one of quantrs' readers of untrusted files. The reader may
return, or raise a QuantrsError (ModelLoadError, ConfigError): that is a clean refusal. Anything
else is a finding, reported to atheris as an uncaught exception (atheris saves the input):

* any other exception (IndexError from the bounds-checked kernels, KeyError, ValueError, ...);
* an unbounded allocation: more memory traced (tracemalloc: Python objects and numpy arrays)
  while reading than BASE_BYTES plus a target's factor times the input's size, or a
  MemoryError anywhere in the refusal's chain (the reader tried to allocate what a header
  claims, not what the file holds);
* a file opened outside the folder the input sits in (external data escaping it);
* hangs and memory held outside tracemalloc (protobuf's parser) are left to libFuzzer's
  -timeout and -rss_limit_mb (fuzz/run.py passes both).

Each target lays its input out in a fresh temporary folder, `Sandbox.work`, beside a file it
must never open, `Sandbox.outside` ("../secret.bin" from the input, and "link.bin", a
symbolic link to it, inside the folder).
"""

from __future__ import annotations

import os
import sys
import tempfile
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import atheris
import numpy as np

from quantrs.errors import QuantrsError
from quantrs.samples import InputSpec

BASE_BYTES = 64 << 20  # what a reader may use whatever the input (parsers, numpy's temporaries)

# The models' inputs a sample file is checked against: the first byte of a sample target's
# input picks one (bit 7: split_batch, as `auto` reads samples), the rest is the file.
F32, F16, I64 = np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.int64)
SPECS: list[list[InputSpec]] = [
    [InputSpec("x", F32, ("N", 4))],  # a dynamic batch
    [InputSpec("x", F32, (2, 4))],  # a fixed batch: stacks split into it
    [InputSpec("x", F32, (1, 4))],
    [InputSpec("x", F32, ())],  # a scalar (or an input of unknown rank)
    [InputSpec("x", I64, ("N", None))],
    [InputSpec("x", F16, ("N", 3))],
    [InputSpec("ids", I64, (1, 3)), InputSpec("feats", F32, ("N", 2))],
    [InputSpec("x", F32, ("N", 4)), InputSpec("sr", I64, ())],
]


def pick_specs(selector: int, count: int = len(SPECS)) -> tuple[list[InputSpec], bool]:
    """The input specs and split_batch a selector byte stands for (among the first `count`)."""
    return SPECS[(selector & 0x7F) % count], bool(selector & 0x80)


class Finding(AssertionError):
    """Something a reader of untrusted bytes must never do."""


class Sandbox:
    """A temporary folder: `work` holds the input (and the files it may name), `outside` a file
    beside it that no reader may open; `opened_outside()` lists the paths opened there."""

    def __init__(self) -> None:
        # In fuzz/run.py's work folder when it starts the target (libFuzzer exits without
        # running Python's clean-up, so the folder stays: there, not loose in /tmp).
        self.root = Path(tempfile.mkdtemp(prefix="sandbox-", dir=os.environ.get("QUANTRS_FUZZ_SANDBOX"))).resolve()
        self.work = self.root / "work"
        self.work.mkdir()
        self.outside = self.root / "secret.bin"
        self.outside.write_bytes(np.arange(256, dtype=np.uint8).tobytes() * 64)
        os.symlink(self.outside, self.work / "link.bin")
        self._escaped: list[str] = []
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple) -> None:
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        try:
            path = os.path.realpath(os.fsdecode(args[0]))
        except (TypeError, ValueError):
            return
        if path.startswith(str(self.root) + os.sep) and not path.startswith(str(self.work) + os.sep):
            self._escaped.append(path)

    def opened_outside(self) -> list[str]:
        escaped, self._escaped = self._escaped, []
        return escaped

    def write(self, name: str, data: bytes) -> Path:
        """Write `data` as work/name, as a new file (a reader may still map the previous one)."""
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path


def _memory_error(exc: BaseException | None) -> BaseException | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MemoryError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def checked(read: Callable[[bytes], object], sandbox: Sandbox, factor: int) -> Callable[[bytes], None]:
    """`read` wrapped in the oracle (module docstring): raises Finding, or lets any exception
    that is not a QuantrsError through, for atheris to report."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()

    def one_input(data: bytes) -> None:
        sandbox.opened_outside()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            read(data)
        except QuantrsError as exc:
            if _memory_error(exc) is not None:
                raise Finding(f"unbounded allocation: a MemoryError behind the refusal {exc}") from exc
        peak = tracemalloc.get_traced_memory()[1] - before
        bound = BASE_BYTES + factor * len(data)
        if peak > bound:
            raise Finding(f"unbounded allocation: {peak} bytes traced reading a {len(data)}-byte input (bound {bound})")
        escaped = sandbox.opened_outside()
        if escaped:
            raise Finding(f"opened a file outside the input's folder: {escaped[0]}")

    return one_input


def require_bounds_checked() -> None:
    """Refuse to fuzz the release build: the kernels must be the bounds-checked ones
    (QUANTRS_CYTHON_DEBUG=1), unless QUANTRS_FUZZ_ANY_BUILD=1 says otherwise."""
    from quantrs import _wire

    if not getattr(_wire, "BOUNDS_CHECKED", False) and not os.environ.get("QUANTRS_FUZZ_ANY_BUILD"):
        sys.exit(
            f"fuzz: {_wire.__file__} is not the bounds-checked build; build one with fuzz/build_debug.sh DIR "
            "and run with PYTHONPATH=DIR/src (or set QUANTRS_FUZZ_ANY_BUILD=1 to fuzz this one)"
        )


def main(one_input: Callable[[bytes], None]) -> None:
    require_bounds_checked()
    warnings.simplefilter("ignore")  # onnx and numpy warn about odd inputs; only exceptions are findings
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
