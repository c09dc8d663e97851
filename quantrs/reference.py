"""Plain-numpy twins of the compiled kernels.

Each function here defines what its kernel in csrc/ must return, bit for bit: the tests hold
the kernels to it (hypothesis), and the benchmarks use it as the baseline. Arrays are the same
(outer, C, inner) views the kernels take (see quantrs.kernels.channel_view). Readability beats
speed here, but everything is vectorised so the baselines are fair.

Weights may be float32, float16 or bfloat16: the twins widen them with .astype(np.float32)
(exact) and compute in float32, which is what the kernels must match.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "as_float32",
    "minmax",
    "scales",
    "quantize",
    "dequantize",
    "channel_error",
    "pack4",
    "unpack4",
    "histogram",
    "ERR_BLOCK",
]

ERR_BLOCK = 4096  # must equal ERR_BLOCK in csrc/_quant.pyx
ROW_GROUP_MIN = 64  # must equal ROW_GROUP_MIN in csrc/_rows.pxd
ROW_GROUPS_MAX = 16  # must equal ROW_GROUPS_MAX in csrc/_rows.pxd


def row_group(outer: int) -> int:
    """Rows per summation group in the row layout (inner == 1), as csrc/_rows.pxd."""
    return max(-(-outer // ROW_GROUPS_MAX), ROW_GROUP_MIN)


def as_float32(x: np.ndarray) -> np.ndarray:
    """A float32, float16 or bfloat16 weight as float32 values (exact; no copy for float32)."""
    return x.astype(np.float32, copy=False)


def minmax(x3: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-channel min and max over axes 0 and 2, and whether x has a NaN or an infinity."""
    x3 = as_float32(x3)
    bad = not bool(np.isfinite(x3).all())
    return x3.min(axis=(0, 2)), x3.max(axis=(0, 2)), bad


def scales(
    lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int32) per channel, as onnxruntime's compute_scale_zp."""
    lo = np.minimum(lo.astype(np.float64), 0.0)
    hi = np.maximum(hi.astype(np.float64), 0.0)
    if symmetric:
        absmax = np.maximum(-lo, hi)
        lo, hi = -absmax, absmax
    scale = ((hi - lo) / float(qmax - qmin)).astype(np.float32)
    scale[~(scale >= np.finfo(np.float32).tiny)] = 1.0
    if symmetric:
        zp = np.full(lo.shape, np.rint((qmin + qmax) / 2.0))
    else:
        zp = np.rint(qmin - lo / scale.astype(np.float64))
    return scale, np.clip(zp, qmin, qmax).astype(np.int32)


def quantize(
    x3: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int
) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(rint(x / scale) + zero_point), codes as raw uint8 bytes."""
    x3 = as_float32(x3)
    s = scale.reshape(1, -1, 1)
    z = zero_point.reshape(1, -1, 1).astype(np.float32)
    q = np.clip(np.rint(x3 / s) + z, qmin, qmax)
    return q.astype(np.int32).astype(np.uint8)  # a negative code keeps its two's-complement byte


def dequantize(q3: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """ONNX DequantizeLinear in float32: (q - zero_point) * scale."""
    diff = q3.astype(np.int32) - zero_point.reshape(1, -1, 1)
    return diff.astype(np.float32) * scale.reshape(1, -1, 1)


def channel_error(
    x3: np.ndarray, q3: np.ndarray, signed: bool, scale: np.ndarray, zero_point: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum of squared error (float64) and max abs error (float32) of the
    dequantized codes; each value's error is taken in float32, its square and the sums in float64.

    Sums follow the kernel's fixed order (csrc/_quant.pyx, channel_error), reproduced with
    sequential cumulative sums so that the results agree bit for bit.
    """
    x3 = as_float32(x3)
    codes = q3.view(np.int8) if signed else q3
    d = x3 - dequantize(codes, scale, zero_point)  # float32, as the kernel
    max_abs = np.abs(d).max(axis=(0, 2))
    sq = d.astype(np.float64) ** 2
    outer, channels, inner = x3.shape
    if inner == 1:
        rows = row_group(outer)
        groups = -(-outer // rows)
        padded_rows = np.zeros((groups * rows, channels), dtype=np.float64)
        padded_rows[:outer] = sq[:, :, 0]
        group_sums = np.cumsum(padded_rows.reshape(groups, rows, channels), axis=1)[:, -1, :]
        return np.cumsum(group_sums, axis=0)[-1], max_abs
    nblocks = -(-inner // ERR_BLOCK)
    padded = np.zeros((outer, channels, nblocks * ERR_BLOCK), dtype=np.float64)
    padded[:, :, :inner] = sq
    lanes = padded.reshape(outer, channels, nblocks, ERR_BLOCK // 4, 4)
    lane_sums = np.cumsum(lanes, axis=3)[:, :, :, -1, :]
    block_sums = (lane_sums[..., 0] + lane_sums[..., 1]) + (lane_sums[..., 2] + lane_sums[..., 3])
    ordered = block_sums.transpose(1, 0, 2).reshape(channels, outer * nblocks)
    return np.cumsum(ordered, axis=1)[:, -1], max_abs


def pack4(codes: np.ndarray) -> np.ndarray:
    """Two 4-bit codes per byte, the first in the low nibble; an odd tail fills a low nibble."""
    flat = codes.reshape(-1) & 0x0F
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, dtype=flat.dtype)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def unpack4(packed: np.ndarray, count: int, signed: bool) -> np.ndarray:
    """Inverse of pack4: `count` codes as bytes, sign-extended when signed."""
    out = np.empty(packed.size * 2, dtype=np.uint8)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    out = out[:count]
    if signed:
        out = np.where(out & 0x08, out | 0xF0, out).astype(np.uint8)
    return out


def histogram(x: np.ndarray, lo: float, hi: float, nbins: int) -> np.ndarray:
    """Counts of x in `nbins` equal bins of [lo, hi); values outside land in the end bins."""
    v = (x.astype(np.float64).ravel() - lo) * (nbins / (hi - lo))
    v = v[~np.isnan(v)]
    bins = np.clip(np.floor(v), 0, nbins - 1).astype(np.int64)
    return np.bincount(bins, minlength=nbins).astype(np.int64)
