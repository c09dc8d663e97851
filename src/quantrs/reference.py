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
    "quantize_blocks",
    "search_grid",
    "fit_codes",
    "compensate_rows",
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


def scales(lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and zero point (int32) per channel, as onnxruntime's compute_scale_zp."""
    lo = np.minimum(lo.astype(np.float64), 0.0)
    hi = np.maximum(hi.astype(np.float64), 0.0)
    if symmetric and np.rint((qmin + qmax) / 2.0) == 0:  # centred: the smallest scale fitting both sides
        scale = np.maximum(lo / float(qmin), hi / float(qmax)).astype(np.float32)
    else:
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


def quantize(x3: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
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
    """Counts of x in `nbins` equal bins of [lo, hi); values outside land in the end bins, NaN
    and +-inf are skipped."""
    v = (x.astype(np.float64).ravel() - lo) * (nbins / (hi - lo))
    v = v[np.isfinite(v)]
    bins = np.clip(np.floor(v), 0, nbins - 1).astype(np.int64)
    return np.bincount(bins, minlength=nbins).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Block-wise quantization (csrc/_block.pyx): ONNX opset-21 blocks along one axis, optional range
# search. The constants below define the kernel's arithmetic and summation order and must equal
# csrc/_block.pyx's (tests/test_kernels_block.py checks them).

BLOCK_LANES = 4  # value r of a block (r along the axis) goes to lane r % 4 of its sums
BLOCK_CHUNK_VALUES = 1 << 17  # about this many values per partial sum of the totals
BLOCK_MIN_SPAN = 64  # fewest columns per partial sum in the strided layout (inner > 1)
BLOCK_MAX_SPAN = 4096  # most columns per partial sum in the strided layout
BLOCK_TRANSPOSED_SPAN = 256  # most columns per partial sum in the strided layout, codes transposed
# The range search's shrink factors of the min/max range, as float32: 1.0, 0.95, ..., 0.5.
SEARCH_ALPHAS = tuple(float(np.float32(1.0 - 0.05 * k)) for k in range(3))  # as kernels.SEARCH_ALPHAS
_TINY32 = np.float32(np.finfo(np.float32).tiny)
_HALF_TINY = np.float16(2.0**-24)


def block_chunk(block_size: int, inner: int, transpose: bool = False) -> int:
    """Blocks per partial sum of the totals: consecutive blocks in the contiguous layout (inner
    == 1), columns of one row of blocks in the strided layout (inner > 1; narrower when the
    codes are written transposed)."""
    if inner == 1:
        return max(1, BLOCK_CHUNK_VALUES // block_size)
    widest = BLOCK_TRANSPOSED_SPAN if transpose else BLOCK_MAX_SPAN
    return min(max(BLOCK_MIN_SPAN, BLOCK_CHUNK_VALUES // block_size), widest)


def half_up(scale: np.ndarray) -> np.ndarray:
    """The smallest float16 value >= each (positive) float32 scale, as float32 (at least 2**-24;
    inf above float16's largest value), as quantrs.tensor.half_scales rounds."""
    with np.errstate(over="ignore"):
        half = scale.astype(np.float16)
        half = np.where(half.astype(np.float32) < scale, np.nextafter(half, np.float16(np.inf)), half)
    return np.maximum(half, _HALF_TINY).astype(np.float32)


def _lane_sum(v: np.ndarray, dtype: type[np.floating]) -> np.ndarray:
    """Per-block sums of v (outer, nb, B, inner), zeros past each block's end: value r to lane
    r % 4, each lane summed in order, then (l0 + l1) + (l2 + l3); in `dtype`."""
    outer, nb, b, inner = v.shape
    v = v + v.dtype.type(0)  # -0.0 -> +0.0: the kernel's lanes start at +0.0, and +0.0 + -0.0 is +0.0
    padded = -(-b // BLOCK_LANES) * BLOCK_LANES
    if padded != b:
        v = np.concatenate([v, np.zeros((outer, nb, padded - b, inner), v.dtype)], axis=2)
    lanes = np.cumsum(v.reshape(outer, nb, padded // BLOCK_LANES, BLOCK_LANES, inner), axis=2, dtype=dtype)[:, :, -1]
    return (lanes[:, :, 0] + lanes[:, :, 1]) + (lanes[:, :, 2] + lanes[:, :, 3])


def _fold_chunks(block_values: np.ndarray, chunk: int) -> float:
    """Total of per-block values (outer, nb, inner) in the kernel's order: chunks of consecutive
    blocks summed in order, then the chunk sums in order (see block_chunk)."""
    outer, nb, inner = block_values.shape
    rows = block_values.reshape(outer * nb, inner) if inner > 1 else block_values.reshape(1, outer * nb)
    width = rows.shape[1]
    spans = -(-width // chunk)
    padded = np.zeros((rows.shape[0], spans * chunk), dtype=np.float64)
    padded[:, :width] = rows
    chunk_sums = np.cumsum(padded.reshape(rows.shape[0], spans, chunk), axis=2)[:, :, -1]
    return float(np.cumsum(chunk_sums.reshape(-1))[-1])


def search_grid(alphas: tuple[float, ...]) -> tuple[float, ...]:
    """The grid a search walks: 1.0 (plain min/max) first, then the other alphas in order."""
    return (1.0,) + tuple(float(np.float32(a)) for a in alphas if np.float32(a) != np.float32(1.0))


def fit_codes(
    st: np.ndarray,
    stt: np.ndarray,
    sr: np.ndarray,
    srt: np.ndarray,
    srr: np.ndarray,
    count: np.ndarray,
    gs: np.ndarray,
    gz: np.ndarray,
    qmin: int,
    qmax: int,
    symmetric: bool,
    half_scale: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored scale and zero point for a grid point's codes, and their squared error.

    The codes stay what the grid point's own (gs, gz) gave them: t = code - gz, and r = x - gs t
    (float32) their residuals. From st = sum t, stt = sum t^2, sr = sum r, srt = sum r t (float32
    lane sums) and srr = sum r^2, the error of any (s, z) for those codes is, in float64, with
    d = gz - z, a = gs - s, b = -s d: sum (x - s (t + d))^2 = sum (r + a t + b)^2 = srr + a^2 stt
    + n b^2 + 2 a srt + 2 b sr + 2 a b st, every term of the error's size (no cancellation of
    the values' own magnitude). Candidates, in order (a later one must be strictly better):
    (gs, gz), whose error is srr; the least-squares scale with z = gz; asymmetric, the integer
    zero point nearest the least-squares line's (x regressed on t) and the least-squares scale
    for it. A candidate's scale is taken to float32, where it must be normal and finite, then
    (half_scale) up to float16, where it must be finite, before its error is.
    """
    f64, f32 = np.float64, np.float32
    st, stt, sr, srt = (np.asarray(v, dtype=f32).astype(f64) for v in (st, stt, sr, srt))
    srr = np.asarray(srr, dtype=f64)
    n = np.asarray(count, dtype=f32).astype(f64)
    g = gs.astype(f64)

    def error(s: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):  # an infinite float16 scale: NaN, never chosen (the front refuses it)
            a = g - s.astype(f64)
            b = -(s.astype(f64) * d)
            return ((((srr + (a * a) * stt) + (n * b) * b) + (2.0 * a) * srt) + (2.0 * b) * sr) + ((2.0 * a) * b) * st

    def scale_for(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):
            qq = (stt + (2.0 * d) * st) + (n * d) * d
            num = (srt + d * sr) - g * ((d * st) + (n * d) * d)
            s = (g + num / qq).astype(f32)
        ok = (qq > 0) & (s >= _TINY32) & (s < np.inf)
        if half_scale:
            s = half_up(np.where(ok, s, f32(1)))
            ok &= s < np.inf
        return s, ok

    best_s, best_z, best_e = gs.astype(f32), gz.astype(np.int32), srr
    zero = np.zeros_like(st)
    s, ok = scale_for(zero)
    e = error(s, zero)
    better = ok & (e < best_e)
    best_s, best_e = np.where(better, s, best_s), np.where(better, e, best_e)
    if not symmetric:
        with np.errstate(all="ignore"):
            den = n * stt - st * st
            delta = (n * srt - st * sr) / den
            slope = g + delta
            line = (den > 0) & (slope >= float(_TINY32)) & (slope < np.inf)
            zf = gz.astype(f64) - ((sr - delta * st) / n) / slope
            zc = np.rint(np.clip(np.where(line, zf, 0.0), qmin, qmax))
        d = np.where(line, gz.astype(f64) - zc, 0.0)
        s, ok = scale_for(d)
        e = error(s, d)
        better = line & (d != 0) & ok & (e < best_e)
        best_s = np.where(better, s, best_s)
        best_z = np.where(better, zc.astype(np.int32), best_z)
        best_e = np.where(better, e, best_e)
    return best_s.astype(f32), best_z.astype(np.int32), best_e


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
    alphas: tuple[float, ...] = SEARCH_ALPHAS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]:
    """Twin of kernels.quantize_blocks: (codes, scale, zero_point, sse, max_abs_error, sse_minmax).

    Blocks of `block_size` values along `axis` (the last one short), each with the scale and
    zero point of scales() on its own min/max. With `search`, each block walks search_grid(alphas)
    (1.0 first): the codes of its range shrunk by alpha, and fit_codes' scale and zero point for
    those codes, with their error in closed form from the codes' sums. The candidate of least
    error (ties keep the earlier) gives the codes and the stored parameters, written once; a
    block whose written error comes out above plain min/max's (the closed form rounds) is
    written with plain min/max. With `half_scale` every scale is rounded up to float16 (a grid
    point's asymmetric zero point recomputed from its range) before codes or errors are taken.
    """
    x32 = as_float32(x)
    ndim = x32.ndim
    axis %= ndim
    length = x32.shape[axis]
    outer = int(np.prod(x32.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x32.shape[axis + 1 :], dtype=np.int64))
    b = min(block_size, length)  # as the kernel's front: a block longer than the axis is the axis
    nb = -(-length // b)
    xp = np.zeros((outer, nb * b, inner), dtype=np.float32)
    xp[:, :length] = x32.reshape(outer, length, inner)
    xp = xp.reshape(outer, nb, b, inner)
    valid = (np.arange(nb * b) < length).reshape(1, nb, b, 1)
    count = np.minimum(b, length - b * np.arange(nb)).astype(np.float32).reshape(1, nb, 1)
    lo = np.where(valid, xp, np.float32(np.inf)).min(axis=2)
    hi = np.where(valid, xp, np.float32(-np.inf)).max(axis=2)
    shape = lo.shape
    f64 = np.float64

    def params(alpha: float) -> tuple[np.ndarray, np.ndarray]:
        a = np.float32(alpha)
        lo_a, hi_a = a * lo, a * hi
        s, z = scales(lo_a.reshape(-1), hi_a.reshape(-1), qmin, qmax, symmetric)
        s, z = s.reshape(shape), z.reshape(shape)
        if half_scale:
            s = half_up(s)
            if not symmetric:
                with np.errstate(all="ignore"):
                    z = np.clip(np.rint(qmin - np.minimum(lo_a.astype(f64), 0.0) / s.astype(f64)), qmin, qmax).astype(np.int32)
        return s, z

    def codes_of(
        s: np.ndarray, z: np.ndarray, ds: np.ndarray | None = None, dz: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """code - z (float32, 0 past the ends) for codes of (s, z), and the error d = x - (code -
        dz) * ds (float32) of the stored (ds, dz), by default (s, z)."""
        ds = s if ds is None else ds
        dz = z if dz is None else dz
        s4, z4 = s[:, :, None, :], z[:, :, None, :].astype(np.float32)
        with np.errstate(all="ignore"):
            t = np.clip(np.rint(xp / s4) + z4, qmin, qmax) - z4
            t = np.where(valid, t, np.float32(0))
            q = t + (z4 - dz[:, :, None, :].astype(np.float32))
            d = np.where(valid, xp - q * ds[:, :, None, :], np.float32(0))
        return t, d

    def error_of(d: np.ndarray) -> np.ndarray:
        return _lane_sum(d.astype(f64) ** 2, f64)

    s0, z0 = params(1.0)
    err0 = error_of(codes_of(s0, z0)[1])
    code_s, code_z, best_s, best_z = s0, z0, s0, z0
    if search and alphas:  # as the kernels' front: an empty grid is no search
        best_e = None
        for k, alpha in enumerate(search_grid(alphas)):
            s_k, z_k = params(alpha)
            t, r = codes_of(s_k, z_k)
            with np.errstate(all="ignore"):  # an infinite float16 scale's NaN, as in the kernel
                st, stt, sr, srt = (_lane_sum(v, np.float32) for v in (t, t * t, r, r * t))
                srr = err0 if k == 0 else _lane_sum(r * r, np.float32)  # grid point 0 is plain min/max
            fs, fz, fe = fit_codes(st, stt, sr, srt, srr, count, s_k, z_k, qmin, qmax, symmetric, half_scale)
            better = np.ones(shape, dtype=bool) if best_e is None else fe < best_e
            code_s, code_z = np.where(better, s_k, code_s), np.where(better, z_k, code_z)
            best_s, best_z = np.where(better, fs, best_s), np.where(better, fz, best_z)
            best_e = np.where(better, fe, best_e) if best_e is not None else fe
        worse = error_of(codes_of(code_s, code_z, best_s, best_z)[1]) > err0
        code_s, code_z = np.where(worse, s0, code_s), np.where(worse, z0, code_z)
        best_s, best_z = np.where(worse, s0, best_s), np.where(worse, z0, best_z)
    t, d = codes_of(code_s, code_z, best_s, best_z)
    q = (t + code_z[:, :, None, :].astype(np.float32)).reshape(outer, nb * b, inner)[:, :length]
    codes = q.astype(np.int32).astype(np.uint8).reshape(x32.shape)
    if transpose:
        codes = np.ascontiguousarray(codes.T)
    chunk = block_chunk(b, inner, transpose)
    blocked = list(x32.shape)
    blocked[axis] = nb
    sse = _fold_chunks(error_of(d), chunk)
    sse_minmax = _fold_chunks(err0, chunk)
    scale, zero_point = best_s.reshape(blocked), best_z.reshape(blocked)
    if transpose:  # MatMulNBits' layout, as the codes
        scale, zero_point = np.ascontiguousarray(scale.T), np.ascontiguousarray(zero_point.T)
    return (
        codes,
        scale,
        zero_point,
        sse,
        float(np.abs(d).max()),
        sse_minmax,
    )


def compensate_rows(
    w: np.ndarray, u: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, group: np.ndarray, qmin: int, qmax: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Twin of kernels.compensate_rows: (codes, err, w after the batch's corrections).

    Row by row (all columns at once): q = saturate(rint(w_i / s) + z) in float64, the scaled
    error e = (w_i - (q - z) * s) / u[i, i], and every later row j loses u[i, j] * e.
    """
    w = np.array(w, dtype=np.float64)
    rows = w.shape[0]
    codes = np.empty(w.shape, dtype=np.uint8)
    err = np.empty(w.shape, dtype=np.float64)
    for i in range(rows):
        s = scale[group[i]].astype(np.float64)
        z = zero_point[group[i]].astype(np.float64)
        q = np.clip(np.rint(w[i] / s) + z, qmin, qmax)
        codes[i] = q.astype(np.int32).astype(np.uint8)
        err[i] = (w[i] - (q - z) * s) / u[i, i]
        w[i + 1 :] -= u[i, i + 1 :, None] * err[i][None, :]
    return codes, err, w
