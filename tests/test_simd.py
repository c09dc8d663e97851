"""The builds of the weight kernels (quantrs._simd: portable, AVX2 + F16C, AVX-512) give the same
bytes. The twins' tests hold the build in use to numpy; this holds the others to it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

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
    """Every build this CPU runs, by name: the portable one, AVX2, and AVX-512 where it has it."""
    found = {"baseline": {name: importlib.import_module(f"quantrs.{name}") for name in MODULES}}
    for build in _simd.supported():
        if build != "baseline":
            found[build] = {name: importlib.import_module(f"quantrs.{name}_{build}") for name in MODULES}
    return found


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
        assert len(got) >= 2
        for name in got:
            assert got[name] == got["baseline"], name


def test_the_widest_build_the_cpu_has_is_chosen_unless_capped(monkeypatch):
    assert K.simd_build() == _simd.wanted()  # what this process loaded (QUANTRS_SIMD as the run set it)
    if not os.environ.get("QUANTRS_SIMD"):
        assert K.simd_build() == _simd.supported()[0]
    for cap in _simd.BUILDS:
        monkeypatch.setenv("QUANTRS_SIMD", cap)
        # the widest build the CPU runs that is no wider than the cap
        assert _simd.wanted() == next(b for b in _simd.supported() if _simd.BUILDS.index(b) >= _simd.BUILDS.index(cap))
    monkeypatch.setenv("QUANTRS_SIMD", "AVX-512")
    with pytest.warns(RuntimeWarning, match="QUANTRS_SIMD='avx-512' is none of avx512, avx2, baseline: ignored"):
        assert _simd.wanted() == _simd.supported()[0]


@pytest.mark.parametrize(
    "ebx7, xcr0, usable",
    [
        (1 << 16 | 1 << 17 | 1 << 30 | 1 << 31, 0xE7, True),
        (1 << 16 | 1 << 17 | 1 << 30 | 1 << 31, 0x07, False),  # the OS does not save the ZMM state
        (1 << 16 | 1 << 17 | 1 << 30 | 1 << 31, 0x67, False),  # nor the upper 16 ZMM registers
        (1 << 16 | 1 << 17 | 1 << 30, 0xE7, False),  # no AVX-512 VL
        (1 << 16 | 1 << 30 | 1 << 31, 0xE7, False),  # no AVX-512 DQ
        (1 << 17 | 1 << 30 | 1 << 31, 0xE7, False),  # no AVX-512 F
    ],
)
def test_avx512_needs_the_instructions_and_the_os_saved_registers(ebx7, xcr0, usable):
    assert _build.avx512_usable(ebx7, xcr0) is usable


@pytest.mark.parametrize("cap", ["avx2", "baseline"])
def test_quantrs_simd_caps_the_build_a_process_loads(cap):
    env = dict(os.environ, QUANTRS_SIMD=cap)
    code = "import quantrs.kernels as k, quantrs._simd as s; print(k.simd_build(), s._block.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == [cap, "quantrs._block" + ("" if cap == "baseline" else f"_{cap}")]
