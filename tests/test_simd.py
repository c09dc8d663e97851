"""The two builds of the weight kernels (quantrs._simd: portable and AVX2 + F16C) give the same
bytes. The twins' tests hold the build in use to numpy; this holds the other one to it."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantrs import _build, _simd, kernels as K

MODULES = ("_reduce", "_quant", "_block")

pytestmark = pytest.mark.skipif(
    not _build.cpu_has_avx2_f16c() or importlib.util.find_spec("quantrs._block_avx2") is None,
    reason="needs an x86-64 CPU with AVX2 + F16C and the AVX2 build",
)


def builds() -> dict[str, dict[str, object]]:
    return {
        "baseline": {name: importlib.import_module(f"quantrs.{name}") for name in MODULES},
        "avx2": {name: importlib.import_module(f"quantrs.{name}_avx2") for name in MODULES},
    }


def run_on(build: dict[str, object], work):
    """work() with quantrs.kernels calling the modules of `build`."""
    saved = {name: getattr(K, name) for name in build}
    try:
        for name, module in build.items():
            setattr(K, name, module)
        return work()
    finally:
        for name, module in saved.items():
            setattr(K, name, module)


def results(x: np.ndarray, axis: int, block_size: int, transpose: bool, qrange: tuple[int, int, bool]) -> list[bytes]:
    """Everything the kernels compute for x, as bytes: min/max, per-channel codes and errors,
    blocks with and without the search."""
    qmin, qmax, symmetric = qrange
    rng = K.minmax(x, axis, n_threads=2)
    scale, zero_point = K.scales(rng, qmin, qmax, symmetric=symmetric)
    codes, sse, max_abs = K.quantize_with_error(x, scale, zero_point, qmin, qmax, axis, n_threads=2)
    out = [rng.lo.tobytes(), rng.hi.tobytes(), codes.tobytes(), sse.tobytes(), max_abs.tobytes()]
    out.append(K.to_float32(x).tobytes())
    for alphas in ((), (1.0,), K.SEARCH_ALPHAS):
        b = K.quantize_blocks(
            x, axis, block_size, qmin, qmax, symmetric=symmetric, alphas=alphas, transpose=transpose, n_threads=2
        )
        out += [
            b.codes.tobytes(),
            b.scale.tobytes(),
            b.zero_point.tobytes(),
            repr((b.sse, b.max_abs_error, b.sse_minmax)).encode(),
        ]
        if transpose and qmin >= 0 and qmax <= 15 and x.shape[axis] % 2 == 0 and block_size % 2 == 0:
            packed = K.quantize_blocks(
                x, axis, block_size, qmin, qmax, symmetric=symmetric, alphas=alphas, transpose=True, pack=True, n_threads=2
            )
            out.append(packed.codes.tobytes())
    return out


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 200),
    cols=st.integers(1, 150),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
    scale=st.sampled_from([1e-4, 1.0, 500.0]),
    block_size=st.sampled_from([16, 32, 128]),
    qrange=st.sampled_from([(0, 15, False), (-8, 7, True), (-128, 127, True), (0, 255, False)]),
    seed=st.integers(0, 2**31),
)
def test_avx2_build_gives_the_portable_builds_bytes(rows, cols, dtype, scale, block_size, qrange, seed):
    import ml_dtypes

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) * scale
    x[rng.random(x.shape) < 0.02] *= 30  # outliers, as trained weights have
    x = x.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    for axis, transpose in ((0, cols > 1), (1, False)):
        got = {name: run_on(build, lambda: results(x, axis, block_size, transpose, qrange)) for name, build in builds().items()}
        assert got["avx2"] == got["baseline"]


def test_the_avx2_build_is_chosen_here_unless_opted_out():
    assert K.simd_build() == "avx2"
    assert _simd.wanted()
