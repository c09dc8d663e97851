"""The build of the weight kernels this process runs: _reduce, _quant and _block are compiled
three times on x86-64 (setup.py): for any x86-64 CPU, with AVX2 + F16C (every Intel CPU since
2013, AMD since 2015), and with AVX-512 (Intel server CPUs since 2017, AMD since Zen 4). AVX2
is 1.2-2x the portable build (float16 weights widen 8 values per instruction instead of in
integer arithmetic); AVX-512 took the block kernel a further 0.84-0.89x on the one Xeon
measured and left min/max and per-channel codes about level (bench/RESULTS.md). All give the
same bits: the twins' tests run on whichever is chosen, and tests/test_simd.py checks the builds
against each other.

QUANTRS_SIMD=avx2 or baseline caps the build (to compare, or to rule one out); another value is
ignored with a warning.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

from quantrs import _build

BUILDS = ("avx512", "avx2", "baseline")  # widest first


def supported() -> tuple[str, ...]:
    """The builds this CPU can run, widest first ("baseline" always)."""
    runs = {"avx512": _build.cpu_has_avx512, "avx2": _build.cpu_has_avx2_f16c, "baseline": lambda: True}
    return tuple(b for b in BUILDS if runs[b]())


def wanted() -> str:
    """The widest build this process should run: what the CPU supports, capped by QUANTRS_SIMD."""
    cap = os.environ.get("QUANTRS_SIMD", "").strip().lower()
    if cap and cap not in BUILDS:
        warnings.warn(f"QUANTRS_SIMD={cap!r} is none of {', '.join(BUILDS)}: ignored", RuntimeWarning, stacklevel=2)
    allowed = BUILDS[BUILDS.index(cap) :] if cap in BUILDS else BUILDS
    return next(b for b in supported() if b in allowed)


def _fastest(name: str) -> ModuleType:
    first = wanted()
    for build in BUILDS[BUILDS.index(first) : -1]:
        try:
            return importlib.import_module(f"quantrs.{name}_{build}")
        except ModuleNotFoundError:  # not built: not x86-64, or QUANTRS_NO_SIMD at install
            pass
    return importlib.import_module(f"quantrs.{name}")


if TYPE_CHECKING:
    from quantrs import _block, _quant, _reduce
else:
    _reduce, _quant, _block = (_fastest(name) for name in ("_reduce", "_quant", "_block"))


def build() -> str:
    """The build in use: "avx512", "avx2" or "baseline"."""
    suffix = _block.__name__.rsplit("_", 1)[-1]
    return suffix if suffix in BUILDS else "baseline"
