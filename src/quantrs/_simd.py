"""The build of the weight kernels this process runs: _reduce, _quant and _block are compiled
twice on x86-64 (setup.py), for any x86-64 CPU and with AVX2 + F16C (every Intel CPU since
2013, AMD since 2015). The second is 1.2-2x faster (float16 weights widen 8 values per
instruction instead of in integer arithmetic) and gives the same bits: the twins' tests run on
whichever is chosen, and tests/test_simd.py checks the two builds against each other.

QUANTRS_SIMD=baseline runs the portable build on any CPU (to compare, or to rule it out).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

from quantrs import _build


def wanted() -> bool:
    """True when this process should run the AVX2 builds (CPU support, no opt-out)."""
    return os.environ.get("QUANTRS_SIMD", "").strip().lower() != "baseline" and _build.cpu_has_avx2_f16c()


def _fastest(name: str) -> ModuleType:
    if wanted():
        try:
            return importlib.import_module(f"quantrs.{name}_avx2")
        except ModuleNotFoundError:  # not built: not x86-64, or QUANTRS_NO_SIMD at install
            pass
    return importlib.import_module(f"quantrs.{name}")


if TYPE_CHECKING:
    from quantrs import _block, _quant, _reduce
else:
    _reduce, _quant, _block = (_fastest(name) for name in ("_reduce", "_quant", "_block"))


def build() -> str:
    """The build in use: "avx2" or "baseline"."""
    return "avx2" if _block.__name__.endswith("_avx2") else "baseline"
