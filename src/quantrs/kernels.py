"""Typed numpy front of the compiled kernels (csrc/).

This module owns every check: dtypes, shapes, contiguity, ranges and the thread count are
validated here, output arrays are allocated here, and only then does compiled code run. No
Cython type leaks out: callers pass and get numpy arrays.

Tensors are seen as 3-D views (outer, C, inner) around a channel axis; see channel_view().

Weights (minmax, quantize, quantize_with_error, channel_error) may be float32, float16 or
bfloat16 (ml_dtypes.bfloat16, the numpy dtype onnx gives BFLOAT16 tensors). The kernels read
16-bit weights in place and widen each value to float32 as they go (exactly: both formats are
subsets of float32), so every result is the float32 one of x.astype(np.float32), bit for bit,
without that copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantrs import _build, _calib, _gptq, _pack, _simd
from quantrs._simd import _block, _quant, _reduce
from quantrs._cpus import available_cpus
from quantrs.errors import ConfigError, NonFiniteWeightError

__all__ = [
    "PARALLEL_MIN_ELEMENTS",
    "openmp_enabled",
    "simd_build",
    "default_threads",
    "channel_view",
    "minmax",
    "scales",
    "quantize",
    "quantize_with_error",
    "dequantize",
    "channel_error",
    "pack4",
    "unpack4",
    "histogram",
    "FiniteRange",
    "finite_minmax",
    "finite_histogram",
    "entropy_divergences",
    "to_float32",
    "SEARCH_ALPHAS",
    "Blocks",
    "quantize_blocks",
    "compensate_rows",
]

# Below this many elements a kernel runs on one thread: starting OpenMP's team costs more than
# it saves. Up to 2**16 values 2 threads gain nothing, from 2**18 on 1.5x and more (measured by
# bench/test_bench_kernels.py::test_thread_threshold, see bench/RESULTS.md).
PARALLEL_MIN_ELEMENTS = 1 << 16


def openmp_enabled() -> bool:
    """True when the kernels were built with OpenMP."""
    return _build.openmp_enabled()


def simd_build() -> str:
    """The build of the weight kernels in use: "avx512", "avx2" (AVX2 + F16C) or "baseline" (quantrs._simd)."""
    return _simd.build()


def default_threads() -> int:
    """Threads a kernel may use: OpenMP's default (OMP_NUM_THREADS), capped by the CPUs this
    process may use (its affinity and cgroup CPU quota, see quantrs._cpus); 1 in the serial
    build."""
    if not openmp_enabled():
        return 1
    return max(1, min(_build.max_threads(), available_cpus()))


def _threads(n_threads: int | None, size: int) -> int:
    if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
        raise ConfigError(f"n_threads must be a positive integer or None, not {n_threads!r}")
    if size < PARALLEL_MIN_ELEMENTS:
        return 1
    return default_threads() if n_threads is None else n_threads


def channel_view(x: np.ndarray, axis: int | None) -> np.ndarray:
    """View x as (outer, C, inner) around `axis` (None: per tensor, (1, 1, size)). No copy for a
    C-contiguous x."""
    if axis is None:
        return x.reshape(1, 1, x.size)
    if not -x.ndim <= axis < x.ndim:
        raise ConfigError(f"axis {axis} is out of range for a tensor of shape {x.shape}")
    axis %= x.ndim
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1 :], dtype=np.int64))
    return x.reshape(outer, x.shape[axis], inner)


def _float32_view(x: np.ndarray, axis: int | None, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{what}: expected float32, got {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{what}: the tensor is empty")
    return channel_view(np.ascontiguousarray(x), axis)


def _weight_kind(dtype: np.dtype) -> int | None:
    if dtype == np.float32:
        return _reduce.WEIGHT_FLOAT32
    if dtype == np.float16:
        return _reduce.WEIGHT_FLOAT16
    # ml_dtypes.bfloat16, matched by name so that quantrs need not import ml_dtypes.
    if dtype.name == "bfloat16" and dtype.itemsize == 2 and dtype.isnative:
        return _reduce.WEIGHT_BFLOAT16
    return None


def _weight_view(x: np.ndarray, axis: int | None, what: str) -> tuple[np.ndarray, int]:
    """(outer, C, inner) view of a weight for the kernels, and its kind: float32 values, or
    the uint16 bit patterns of float16/bfloat16 values (widened in the kernels)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(x).__name__}")
    kind = _weight_kind(x.dtype)
    if kind is None:
        raise TypeError(f"{what}: expected float32, float16 or bfloat16, got {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{what}: the tensor is empty")
    x = np.ascontiguousarray(x)
    if kind != _reduce.WEIGHT_FLOAT32:
        x = x.view(np.uint16)
    return channel_view(x, axis), kind


@dataclass(frozen=True)
class Range:
    """Per-channel minimum and maximum (float32 arrays of length C)."""

    lo: np.ndarray
    hi: np.ndarray


def minmax(x: np.ndarray, axis: int | None = None, *, n_threads: int | None = None, name: str = "tensor") -> Range:
    """Per-channel (or per-tensor) min and max (float32, also for float16/bfloat16 x); raises
    NonFiniteWeightError on NaN/Inf.

    NaN/Inf policy: no scale can represent them and onnxruntime would carry them into every
    output, so quantrs refuses such a tensor with an error naming it.
    """
    x3, kind = _weight_view(x, axis, name)
    lo = np.empty(x3.shape[1], dtype=np.float32)
    hi = np.empty(x3.shape[1], dtype=np.float32)
    if _reduce.minmax(x3, kind, lo, hi, _threads(n_threads, x3.size)):
        raise NonFiniteWeightError("holds NaN or infinite values", tensor=name)
    return Range(lo, hi)


def _check_qrange(qmin: int, qmax: int) -> None:
    if not (-128 <= qmin < qmax <= 255) or (qmin < 0 and qmax > 127):
        raise ConfigError(f"[{qmin}, {qmax}] is not an 8-bit (or smaller) integer range")


def scales(rng: Range, qmin: int, qmax: int, *, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int32) for each channel of `rng` (see csrc/_quant.pyx)."""
    _check_qrange(qmin, qmax)
    lo = np.ascontiguousarray(rng.lo, dtype=np.float32)
    hi = np.ascontiguousarray(rng.hi, dtype=np.float32)
    if lo.shape != hi.shape or lo.ndim != 1:
        raise ValueError("lo and hi must be 1-D arrays of the same length")
    scale = np.empty(lo.shape, dtype=np.float32)
    zero_point = np.empty(lo.shape, dtype=np.int32)
    _quant.scales(lo, hi, qmin, qmax, bool(symmetric), scale, zero_point)
    return scale, zero_point


def _check_params(scale: np.ndarray, zero_point: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.ascontiguousarray(scale, dtype=np.float32).reshape(-1)
    zero_point = np.ascontiguousarray(zero_point, dtype=np.int32).reshape(-1)
    if scale.size != channels or zero_point.size != channels:
        raise ValueError(f"expected {channels} scale(s) and zero point(s), got {scale.size} and {zero_point.size}")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("scales must be finite and positive")
    return scale, zero_point


def _check_quantize_args(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, axis: int | None
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """(x's kernel view, its kind, the scales and zero points as the kernels take them)."""
    _check_qrange(qmin, qmax)
    x3, kind = _weight_view(x, axis, "x")
    scale, zero_point = _check_params(scale, zero_point, x3.shape[1])
    if ((zero_point < qmin) | (zero_point > qmax)).any():
        raise ValueError(f"zero points must lie in [{qmin}, {qmax}]")
    return x3, kind, scale, zero_point


def quantize(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """ONNX QuantizeLinear codes of x (float32, float16 or bfloat16) as raw bytes (uint8, shape
    of x): view them as int8 when the range is signed."""
    x3, kind, scale, zero_point = _check_quantize_args(x, scale, zero_point, qmin, qmax, axis)
    out = np.empty(x.shape, dtype=np.uint8)
    _quant.quantize(x3, kind, scale, zero_point, qmin, qmax, channel_view(out, axis), _threads(n_threads, x3.size))
    return out


def quantize_with_error(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    *,
    n_threads: int | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quantize() and channel_error() in one pass over x (the same results, bit for bit).

    Returns (codes, per-channel sum of squared error, per-channel max abs error). `out`, if
    given, is a C-contiguous uint8 array of x's size to write the codes into (a buffer reused
    across tensors avoids faulting in fresh pages for every weight).
    """
    x3, kind, scale, zero_point = _check_quantize_args(x, scale, zero_point, qmin, qmax, axis)
    if out is None:
        codes = np.empty(x.shape, dtype=np.uint8)
    else:
        if out.dtype != np.uint8 or out.size != x.size or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writable C-contiguous uint8 array of x's size")
        codes = out.reshape(x.shape)
    sse = np.empty(x3.shape[1], dtype=np.float64)
    max_abs = np.empty(x3.shape[1], dtype=np.float32)
    _quant.quantize_error(
        x3, kind, scale, zero_point, qmin, qmax, channel_view(codes, axis), sse, max_abs, _threads(n_threads, x3.size)
    )
    return codes, sse, max_abs


def dequantize(
    codes: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    axis: int | None = None,
    *,
    n_threads: int | None = None,
) -> np.ndarray:
    """ONNX DequantizeLinear: (codes - zero_point) * scale in float32; codes int8 or uint8."""
    if codes.dtype not in (np.int8, np.uint8):
        raise TypeError(f"codes must be int8 or uint8, got {codes.dtype}")
    q3 = channel_view(np.ascontiguousarray(codes), axis)
    scale, zero_point = _check_params(scale, zero_point, q3.shape[1])
    out = np.empty(codes.shape, dtype=np.float32)
    _quant.dequantize(q3, scale, zero_point, channel_view(out, axis), _threads(n_threads, q3.size))
    return out


def channel_error(
    x: np.ndarray,
    codes: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    axis: int | None = None,
    *,
    signed: bool,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum of squared error (float64) and max abs error (float32) of the
    dequantized codes against x (float32, float16 or bfloat16, widened to float32). `codes` are
    the raw bytes quantize() returned."""
    x3, kind = _weight_view(x, axis, "x")
    if codes.shape != x.shape or codes.dtype not in (np.int8, np.uint8):
        raise ValueError("codes must be int8/uint8 bytes of the same shape as x")
    q3 = channel_view(np.ascontiguousarray(codes).view(np.uint8), axis)
    scale, zero_point = _check_params(scale, zero_point, x3.shape[1])
    sse = np.empty(x3.shape[1], dtype=np.float64)
    max_abs = np.empty(x3.shape[1], dtype=np.float32)
    _quant.channel_error(x3, kind, q3, bool(signed), scale, zero_point, sse, max_abs, _threads(n_threads, x3.size))
    return sse, max_abs


def pack4(codes: np.ndarray, *, n_threads: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Pack 4-bit codes (the low nibble of each byte) two per byte, low nibble first.

    `out`, if given, is a writable C-contiguous uint8 array of ceil(n / 2) bytes to fill."""
    if codes.dtype not in (np.int8, np.uint8):
        raise TypeError(f"codes must be int8 or uint8, got {codes.dtype}")
    flat = np.ascontiguousarray(codes).reshape(-1).view(np.uint8)
    if out is None:
        out = np.empty((flat.size + 1) // 2, dtype=np.uint8)
    elif out.dtype != np.uint8 or out.shape != ((flat.size + 1) // 2,) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writable C-contiguous uint8 array of {(flat.size + 1) // 2} bytes")
    _pack.pack4(flat, out, _threads(n_threads, flat.size))
    return out


def unpack4(packed: np.ndarray, count: int, *, signed: bool, n_threads: int | None = None) -> np.ndarray:
    """Unpack `count` 4-bit codes into bytes (sign-extended when signed: view as int8)."""
    if packed.dtype != np.uint8:
        raise TypeError(f"packed codes must be uint8, got {packed.dtype}")
    flat = np.ascontiguousarray(packed).reshape(-1)
    if not 0 <= count <= 2 * flat.size or flat.size != (count + 1) // 2:
        raise ValueError(f"{flat.size} packed bytes cannot hold exactly {count} codes")
    out = np.empty(count, dtype=np.uint8)
    _pack.unpack4(flat, bool(signed), out, _threads(n_threads, count))
    return out


def histogram(x: np.ndarray, lo: float, hi: float, counts: np.ndarray, *, n_threads: int | None = None) -> np.ndarray:
    """Add the values of x (float32, any shape) to `counts` (int64 bins over [lo, hi)); values
    outside the range count in the end bins, NaN and +-inf are skipped. Returns `counts`.
    (finite_histogram with no limit: one compiled loop serves both.)"""
    return finite_histogram(_float32_view(x, None, "x"), lo, hi, counts, np.inf, n_threads=n_threads)


@dataclass(frozen=True)
class FiniteRange:
    """Min and max of the values of an activation with |x| < limit, and the values left out."""

    lo: float  # +inf when no value is included
    hi: float  # -inf when no value is included
    nonfinite: int  # NaN, +inf and -inf
    extreme: int  # finite values with |x| >= limit (attention masks of finfo(float32).min, ...)

    @property
    def empty(self) -> bool:
        """No value was included (an empty x, or every value excluded)."""
        return self.lo > self.hi


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _activation_values(x: np.ndarray, what: str) -> np.ndarray:
    """x (float32, any shape, may be empty) as a flat C-contiguous view (a copy if x is not
    contiguous)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{what}: expected float32, got {x.dtype}")
    return np.ascontiguousarray(x).reshape(-1)


def _check_limit(limit: float) -> float:
    limit = float(limit)
    if not (limit > 0 and (limit <= _FLOAT32_MAX or limit == np.inf)):
        raise ConfigError(f"limit must be a positive float32 value or inf, not {limit!r}")
    return limit


def finite_minmax(x: np.ndarray, limit: float, *, n_threads: int | None = None) -> FiniteRange:
    """Min and max of the values of x (float32, any shape, may be empty) with |x| < limit, and
    how many values were excluded, in one pass (csrc/_calib.pyx): NaN and +-inf counted in
    `nonfinite`, finite values with |x| >= limit in `extreme`. `limit` is rounded to float32
    (inf excludes only NaN and +-inf). A zero min or max is +0.0; nothing is included -> lo=+inf,
    hi=-inf. Never raises on the values (unlike minmax(), which refuses NaN/inf weights)."""
    flat = _activation_values(x, "x")
    lo, hi, nonfinite, extreme = _calib.finite_minmax(flat, _check_limit(limit), _threads(n_threads, flat.size))
    return FiniteRange(float(lo), float(hi), int(nonfinite), int(extreme))


def finite_histogram(
    x: np.ndarray, lo: float, hi: float, counts: np.ndarray, limit: float, *, n_threads: int | None = None
) -> np.ndarray:
    """histogram() of the values of x with |x| < limit (float32 limit): NaN, +-inf and
    |x| >= limit are skipped; other values outside [lo, hi) count in the end bins. x may be
    empty. Returns `counts`."""
    flat = _activation_values(x, "x")
    if (
        counts.dtype != np.int64
        or counts.ndim != 1
        or counts.size == 0
        or not counts.flags.c_contiguous
        or not counts.flags.writeable
    ):
        raise ValueError("counts must be a writable 1-D C-contiguous int64 array")
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"histogram range [{lo}, {hi}) must be finite with hi > lo")
    _calib.finite_histogram(flat, float(lo), float(hi), _check_limit(limit), counts, _threads(n_threads, flat.size))
    return counts


def entropy_divergences(hist: np.ndarray, quantized_bins: int) -> np.ndarray:
    """The KL divergence of each candidate window of onnxruntime's entropy calibration
    (HistogramCollector.get_entropy_threshold) on `hist`: int64 counts of N equal bins over a
    range [-T, T], N >= quantized_bins >= 2. Element k is window i = quantized_bins // 2 + k:
    bins [N // 2 - i, min(N // 2 + i + 1, N)); inf where onnxruntime's smoothing gives up. Same
    distributions as onnxruntime's (integer q per level, eps = 1e-4 smoothing), computed in
    float64 from prefix sums: O(quantized_bins) per window (csrc/_calib.pyx)."""
    if not isinstance(quantized_bins, (int, np.integer)) or isinstance(quantized_bins, bool) or quantized_bins < 2:
        raise ConfigError(f"quantized_bins must be an integer >= 2, not {quantized_bins!r}")
    if not isinstance(hist, np.ndarray) or hist.dtype != np.int64 or hist.ndim != 1:
        raise ValueError("hist must be a 1-D int64 array")
    if hist.size < quantized_bins:
        raise ConfigError(f"the histogram has {hist.size} bins, fewer than quantized_bins={quantized_bins}")
    if (hist < 0).any():
        raise ValueError("hist must hold non-negative counts")
    out = np.empty(hist.size // 2 - int(quantized_bins) // 2 + 1, dtype=np.float64)
    _calib.entropy_divergences(np.ascontiguousarray(hist), int(quantized_bins), out)
    return out


def to_float32(x: np.ndarray) -> np.ndarray:
    """x (float32, float16 or bfloat16, any shape) as a new float32 array, widened by the same
    load the kernels use (exact). For tests: the kernels themselves never make this copy."""
    x3, kind = _weight_view(x, None, "x")
    out = np.empty(x.shape, dtype=np.float32)
    _reduce.to_float32(x3, kind, out.reshape(-1))
    return out


# The range search's grid: shrink factors of each block's min/max range, as float32 values
# (1.0, 0.95, 0.9). quantrs.reference.SEARCH_ALPHAS must hold the same values. Three points, not
# the 11 down to 0.5 first tried: shrinking further changed the error by < 0.002 on normal and
# outlier-heavy weights, at 7.8x the time of no search instead of 3.1x (bench/RESULTS.md: each
# point costs one pass of sums over the block).
SEARCH_ALPHAS: tuple[float, ...] = tuple(float(np.float32(1.0 - 0.05 * k)) for k in range(3))


@dataclass(frozen=True)
class Blocks:
    """Block-wise codes and parameters of one tensor (see quantize_blocks)."""

    codes: np.ndarray  # uint8 bytes (two's complement for signed), shape of x, or x.T's when transposed ([N, K / 2] packed)
    scale: np.ndarray  # float32, ONNX blocked shape: x.shape with shape[axis] -> ceil(L / block_size)
    zero_point: np.ndarray  # int32, same shape as scale
    sse: float  # sum of squared error of the dequantized codes vs x (float64 sums, fixed order)
    max_abs_error: float
    sse_minmax: float  # the sse plain min/max ranges give (equal to sse when search=False)


def _search_grid(alphas: tuple[float, ...]) -> tuple[float, ...]:
    """1.0 (plain min/max) first, then the other alphas in order (reference.search_grid)."""
    return (1.0,) + tuple(a for a in alphas if np.float32(a) != np.float32(1.0))


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{what} must be True or False, not {value!r}")
    return bool(value)


def _block_axis(x: np.ndarray, axis: int, block_size: int, name: str) -> int:
    """quantize_blocks' tensor, axis and block size checked; the axis in [0, x.ndim)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name}: block-wise quantization needs a tensor of rank >= 1")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise ConfigError(f"axis must be an integer, not {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ConfigError(f"axis {axis} is out of range for a tensor of shape {x.shape}")
    if isinstance(block_size, (bool, np.bool_)) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ConfigError(f"block_size must be a positive integer, not {block_size!r}")
    return int(axis) % x.ndim


def _flat_codes(out: np.ndarray | None, size: int) -> np.ndarray:
    """quantize_blocks' codes buffer, flat: `out` checked, or a new one."""
    if out is None:
        return np.empty(size, dtype=np.uint8)
    if (
        not isinstance(out, np.ndarray)
        or out.dtype != np.uint8
        or out.size != size
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(f"out must be a writable C-contiguous uint8 array of {size} bytes")
    return out.reshape(-1)


def _block_grid(alphas: tuple[float, ...] | None, search: bool) -> np.ndarray:
    """The range-shrinking factors quantize_blocks tries per block (empty: min/max only)."""
    if alphas is not None:
        if not all(isinstance(a, float) and 0.0 < a <= 1.0 for a in alphas):
            raise ConfigError(f"alphas must be floats in (0, 1], not {alphas!r}")
        return np.asarray(_search_grid(alphas) if alphas else (), dtype=np.float32)
    return np.asarray(_search_grid(SEARCH_ALPHAS) if search else (), dtype=np.float32)


def _all_finite(a: np.ndarray) -> bool:
    """np.isfinite(a).all() without its boolean array: NaN carries through min and max, and an
    infinity is one of them (a block's scales: a copy of their size per weight)."""
    return not a.size or bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def quantize_blocks(
    x: np.ndarray,
    axis: int,
    block_size: int,
    qmin: int,
    qmax: int,
    *,
    symmetric: bool,
    search: bool = False,
    half_scale: bool = False,
    transpose: bool = False,
    pack: bool = False,
    n_threads: int | None = None,
    out: np.ndarray | None = None,
    name: str = "tensor",
    alphas: tuple[float, ...] | None = None,
    transpose_params: bool = True,
) -> Blocks:
    """Block-wise quantization (ONNX opset-21 QuantizeLinear with `axis` and `block_size`).

    x (float32, float16 or bfloat16, any rank >= 1) is cut into blocks of `block_size`
    consecutive values along `axis` (the last block short); each block gets the scale and zero
    point scales() gives its own min/max, and the codes are ONNX QuantizeLinear's, each block's
    values read from memory once (csrc/_block.pyx). `search` tries, per block, the codes of the
    range shrunk by each of SEARCH_ALPHAS, each with the least-squares scale (and zero point)
    for those codes, weighs them by their error in closed form from sums taken in cache, and
    writes the best one's codes once (plain min/max included, so sse <= sse_minmax; the codes
    are then QuantizeLinear's for the chosen range, the stored parameters their fit). `alphas`
    replaces the grid, 1.0 always first (search is then on when it is not empty): (1.0,) keeps
    the min/max codes and refits their scale and zero point. `half_scale` rounds every scale up
    to a float16 value (asymmetric zero points recomputed) before the codes are computed.
    `transpose` (2-D x, axis 0: a MatMul weight [K, N]) writes the codes as [N, K] and scale and
    zero_point as [N, blocks], the layout of onnxruntime's MatMulNBits (the ONNX blocked shape
    transposed); `pack` (with transpose, codes in [0, 15], K and block_size even) then writes
    them two per byte, low nibble first ([N, K / 2]: pack4 of the codes, in the same pass; for
    N = 1, the kernel's contiguous layout, packed after it).
    With `transpose_params=False` only the codes are transposed, scale and zero_point staying
    in the ONNX blocked shape [blocks, N] the kernel writes them in (for a caller that copies
    them into another type anyway: transposing them here would be one more strided copy each).
    `out`: a writable C-contiguous uint8 buffer of x.size bytes (x.size / 2 packed) to write
    the codes into. Results are identical for any thread count. Raises NonFiniteWeightError
    (naming `name`) on NaN/Inf.
    """
    axis = _block_axis(x, axis, block_size, name)
    _check_qrange(qmin, qmax)
    symmetric = _flag(symmetric, "symmetric")
    search = _flag(search, "search")
    half_scale = _flag(half_scale, "half_scale")
    transpose = _flag(transpose, "transpose")
    transpose_params = _flag(transpose_params, "transpose_params")
    if transpose and (x.ndim != 2 or axis != 0):
        raise ConfigError(f"transpose needs a 2-D tensor blocked along axis 0, not shape {x.shape} axis {axis}")
    pack = _flag(pack, "pack")
    if pack and not (transpose and 0 <= qmin and qmax <= 15 and x.shape[0] % 2 == 0 and block_size % 2 == 0):
        raise ConfigError("pack needs transposed codes in [0, 15], an even K and an even block size")
    x3, kind = _weight_view(x, axis, name)
    length = x.shape[axis]
    nblocks = -(-length // int(block_size))
    block_size = min(int(block_size), length)  # one block per column either way; keeps the kernel's counts small
    codes = _flat_codes(out, x.size // 2 if pack else x.size)
    # A [K, 1] weight's codes are already in the transposed order (the kernel's contiguous
    # layout): they are packed afterwards.
    pack_after = pack and x3.shape[2] == 1
    kernel_codes = np.empty(x.size, np.uint8) if pack_after else codes
    blocked = list(x.shape)
    blocked[axis] = nblocks
    scale = np.empty(blocked, dtype=np.float32)
    zero_point = np.empty(blocked, dtype=np.int32)
    totals = np.empty(3, dtype=np.float64)
    grid = _block_grid(alphas, search)
    bad = _block.quantize_blocks(
        x3,
        kind,
        block_size,
        qmin,
        qmax,
        symmetric,
        grid,
        half_scale,
        transpose,
        pack and not pack_after,
        kernel_codes,
        scale.reshape(-1),
        zero_point.reshape(-1),
        totals,
        _threads(n_threads, x3.size),
    )
    if bad:
        raise NonFiniteWeightError("holds NaN or infinite values", tensor=name)
    if half_scale and not _all_finite(scale):
        raise ValueError(f"{name}: a block's scale is above float16's largest value (65504)")
    if pack_after:
        pack4(kernel_codes, out=codes, n_threads=1)
    shape = x.shape
    if transpose:  # MatMulNBits' layout: codes [N, K], parameters [N, blocks] (the kernel writes them [blocks, N])
        shape = (x.shape[1], x.shape[0] // 2 if pack else x.shape[0])
        if transpose_params:
            scale, zero_point = np.ascontiguousarray(scale.T), np.ascontiguousarray(zero_point.T)
    return Blocks(
        codes=codes.reshape(shape),
        scale=scale,
        zero_point=zero_point,
        sse=float(totals[0]),
        max_abs_error=float(totals[2]),
        sse_minmax=float(totals[1]),
    )


def compensate_rows(
    w: np.ndarray,
    u: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    group: np.ndarray,
    qmin: int,
    qmax: int,
    *,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Error-compensated rounding of one batch of rows (GPTQ's inner loop; see quantrs.gptq).

    w: float64 [b, N], C-contiguous, updated in place (each row corrected by the errors of the
    rows before it); u: the batch's [b, b] block of the upper Cholesky factor of H^-1 (u[i, i]
    > 0); scale (float32) and zero_point (int32): [G, N], one row per group of weight rows;
    group: [b] each row's group. Returns (codes [b, N] uint8, a signed code's two's complement;
    err [b, N] float64, the scaled errors the caller applies to the rows after the batch).
    """
    _check_qrange(qmin, qmax)
    if not (isinstance(w, np.ndarray) and w.dtype == np.float64 and w.ndim == 2 and w.flags.c_contiguous and w.flags.writeable):
        raise ValueError("w must be a writable C-contiguous float64 [b, N] array")
    rows, cols = w.shape
    u = np.ascontiguousarray(u, dtype=np.float64)
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    zero_point = np.ascontiguousarray(zero_point, dtype=np.int32)
    group = np.ascontiguousarray(group, dtype=np.int32)
    if u.shape != (rows, rows):
        raise ValueError(f"u must be [{rows}, {rows}], not {list(u.shape)}")
    if scale.ndim != 2 or scale.shape[1] != cols or zero_point.shape != scale.shape:
        raise ValueError(f"scale and zero_point must be [G, {cols}], not {list(scale.shape)} and {list(zero_point.shape)}")
    if group.shape != (rows,) or (rows and (group.min() < 0 or group.max() >= scale.shape[0])):
        raise ValueError(f"group must hold {rows} row groups in [0, {scale.shape[0]})")
    if rows and not (np.diag(u) > 0).all():
        raise ValueError("u's diagonal must be positive")
    if scale.size and not (scale > 0).all():
        raise ValueError("scales must be positive")
    codes = np.empty((rows, cols), dtype=np.uint8)
    err = np.empty((rows, cols), dtype=np.float64)
    _gptq.compensate_rows(w, u, scale, zero_point, group, qmin, qmax, codes, err, _threads(n_threads, w.size * max(rows, 1)))
    return codes, err
