"""Min/max reductions, per tensor and per channel.

Every kernel sees a tensor as a C-contiguous 3-D view (outer, C, inner): the channel axis in the
middle, everything before it folded into `outer`, everything after it into `inner`. Per-tensor is
(1, 1, N). Two loop shapes cover every layout:

- inner > 1 (Conv weights along axis 0, per-tensor): contiguous runs of `inner` values share one
  channel; the runs are cut into blocks of BLOCK values, and the blocks are the parallel tasks.
- inner == 1 (MatMul/Gemm weights along their last axis): each row holds one value per channel;
  a task walks a group of rows (see _rows.pxd), updating per-channel partial results
  elementwise; the groups' partials are folded at the end.

Inputs are validated by quantrs.kernels before anything here runs; kernels never raise.
Weights are float32, float16 or bfloat16: 16-bit ones are widened to float32 a row segment or
block at a time, and every loop is compiled once per input type (see _half.pxd).
"""
from cython.parallel cimport prange

from _half cimport (KIND_BFLOAT16, KIND_FLOAT16, KIND_FLOAT32, WIDEN_CHUNK, Weights, chunk,
                   const_bf16_up, const_f16_up, ld, weight_p, weight_view, widen, widened)
from _restrict cimport const_float_up, float_rp
from _rows cimport ROW_SPAN, RowTile, row_groups, row_spans, row_tile
from _scratch cimport float_zeros as _float_empty, int_zeros as _int_zeros

cdef enum:
    BLOCK = 65536  # values per parallel task along a run

BLOCK_SIZE = BLOCK
# The `kind` argument of the kernels that read weights (this module's and _quant's).
WEIGHT_FLOAT32 = KIND_FLOAT32
WEIGHT_FLOAT16 = KIND_FLOAT16
WEIGHT_BFLOAT16 = KIND_BFLOAT16


cdef inline void _minmax_run(weight_p x, Py_ssize_t n, float* lo_out, float* hi_out,
                             int* bad_out) noexcept nogil:
    # Four independent accumulator pairs keep the CPU's pipelines busy; `v - v` is 0 for every
    # finite value and NaN for NaN/Inf, so `bad` flags non-finite input at the cost of one add.
    # 16-bit input is widened a chunk at a time (float32 input is one chunk); chunks are
    # multiples of 4 values but the last, so value i always goes to lane i % 4.
    cdef float buf[WIDEN_CHUNK]
    cdef const_float_up y
    cdef float first = ld(x, 0)
    cdef float lo0 = first, lo1 = first, lo2 = first, lo3 = first
    cdef float hi0 = first, hi1 = first, hi2 = first, hi3 = first
    cdef float z0 = 0, z1 = 0, z2 = 0, z3 = 0
    cdef float v0, v1, v2, v3
    cdef Py_ssize_t i, start = 0, m
    while start < n:
        m = chunk(x, n - start)
        y = widened(x + start, m, buf)
        i = 0
        while i + 4 <= m:
            v0 = y[i]
            v1 = y[i + 1]
            v2 = y[i + 2]
            v3 = y[i + 3]
            lo0 = v0 if v0 < lo0 else lo0
            lo1 = v1 if v1 < lo1 else lo1
            lo2 = v2 if v2 < lo2 else lo2
            lo3 = v3 if v3 < lo3 else lo3
            hi0 = v0 if v0 > hi0 else hi0
            hi1 = v1 if v1 > hi1 else hi1
            hi2 = v2 if v2 > hi2 else hi2
            hi3 = v3 if v3 > hi3 else hi3
            z0 = z0 + (v0 - v0)
            z1 = z1 + (v1 - v1)
            z2 = z2 + (v2 - v2)
            z3 = z3 + (v3 - v3)
            i += 4
        while i < m:
            v0 = y[i]
            lo0 = v0 if v0 < lo0 else lo0
            hi0 = v0 if v0 > hi0 else hi0
            z0 = z0 + (v0 - v0)
            i += 1
        start += m
    lo0 = lo1 if lo1 < lo0 else lo0
    lo2 = lo3 if lo3 < lo2 else lo2
    hi0 = hi1 if hi1 > hi0 else hi0
    hi2 = hi3 if hi3 > hi2 else hi2
    lo_out[0] = lo2 if lo2 < lo0 else lo0
    hi_out[0] = hi2 if hi2 > hi0 else hi0
    z0 = (z0 + z1) + (z2 + z3)
    bad_out[0] = z0 != z0


cdef inline void _minmax_rows(weight_p x, Py_ssize_t rows, Py_ssize_t row_len, Py_ssize_t n,
                              float_rp lo, float_rp hi, float_rp z) noexcept nogil:
    # n <= ROW_SPAN columns of a (rows, row_len) matrix: per-column min/max, elementwise over
    # rows. The non-finite check is per column too (z[c] turns NaN), so nothing is reduced
    # across columns and the loop vectorises.
    cdef float buf[ROW_SPAN]
    cdef const_float_up row = widened(x, n, buf)
    cdef Py_ssize_t r, c
    cdef float v
    for c in range(n):
        lo[c] = row[c]
        hi[c] = row[c]
        z[c] = 0
    for r in range(rows):
        row = widened(x + r * row_len, n, buf)
        for c in range(n):
            v = row[c]
            lo[c] = v if v < lo[c] else lo[c]
            hi[c] = v if v > hi[c] else hi[c]
            z[c] = z[c] + (v - v)


def minmax(x, int kind, float[::1] lo, float[::1] hi, int n_threads):
    """Per-channel min and max of x viewed as (outer, C, inner); results into lo[C], hi[C].

    x: float32 values (kind WEIGHT_FLOAT32), or the uint16 bit patterns of float16 or bfloat16
    values (WEIGHT_FLOAT16, WEIGHT_BFLOAT16). Returns True when x holds a NaN or an infinity
    (lo/hi are then meaningless).
    """
    cdef Weights w
    keep = weight_view(x, kind, &w)
    if w.kind == KIND_FLOAT16:
        return _minmax(<const_f16_up>w.data, w, lo, hi, n_threads)
    if w.kind == KIND_BFLOAT16:
        return _minmax(<const_bf16_up>w.data, w, lo, hi, n_threads)
    return _minmax(<const_float_up>w.data, w, lo, hi, n_threads)


cdef bint _minmax(weight_p base, Weights w, float[::1] lo, float[::1] hi, int n_threads):
    cdef Py_ssize_t outer = w.outer, C = w.C, inner = w.inner
    cdef Py_ssize_t runs = outer * C
    cdef Py_ssize_t nblocks, ntasks, t, r, b, start, stop, c, ngroups
    cdef int any_bad = 0
    cdef float[::1] part_lo, part_hi, part_z
    cdef RowTile tile
    cdef int[::1] part_bad
    cdef float v

    if inner == 1:
        ngroups = row_groups(outer)
        part_lo = _float_empty(ngroups * C)
        part_hi = _float_empty(ngroups * C)
        part_z = _float_empty(ngroups * C)  # per-column non-finite markers
        for t in prange(ngroups * row_spans(C), nogil=True, schedule="static", num_threads=n_threads):
            tile = row_tile(t, outer, C)
            _minmax_rows(base + tile.r0 * C + tile.c0, tile.r1 - tile.r0, C, tile.c1 - tile.c0,
                         &part_lo[tile.group * C + tile.c0], &part_hi[tile.group * C + tile.c0],
                         &part_z[tile.group * C + tile.c0])
        for c in range(C):
            lo[c] = part_lo[c]
            hi[c] = part_hi[c]
        for t in range(C, ngroups * C):
            c = t % C
            if part_lo[t] < lo[c]:
                lo[c] = part_lo[t]
            if part_hi[t] > hi[c]:
                hi[c] = part_hi[t]
        for t in range(ngroups * C):
            any_bad = any_bad | (part_z[t] != part_z[t])
        return any_bad

    nblocks = (inner + BLOCK - 1) // BLOCK
    ntasks = runs * nblocks
    part_lo = _float_empty(ntasks)
    part_hi = _float_empty(ntasks)
    part_bad = _int_zeros(ntasks)
    for t in prange(ntasks, nogil=True, schedule="static", num_threads=n_threads):
        r = t // nblocks
        b = t - r * nblocks
        start = b * BLOCK
        stop = start + BLOCK
        if stop > inner:
            stop = inner
        _minmax_run(base + r * inner + start, stop - start, &part_lo[t], &part_hi[t], &part_bad[t])
    # Fold the blocks of every run into its channel (serial: ntasks is small next to the data).
    for c in range(C):
        lo[c] = part_lo[c * nblocks]
        hi[c] = part_hi[c * nblocks]
    for t in range(ntasks):
        c = (t // nblocks) % C
        v = part_lo[t]
        if v < lo[c]:
            lo[c] = v
        v = part_hi[t]
        if v > hi[c]:
            hi[c] = v
        any_bad = any_bad | part_bad[t]
    return any_bad


def to_float32(x, int kind, float[::1] out):
    """out[i] = value i of x (and kind, as minmax takes them) widened to float32 by the same load
    as every kernel: lets tests check the conversion on every bit pattern."""
    cdef Weights w
    keep = weight_view(x, kind, &w)
    if w.kind == KIND_FLOAT16:
        widen(<const_f16_up>w.data, w.outer * w.C * w.inner, &out[0])
    elif w.kind == KIND_BFLOAT16:
        widen(<const_bf16_up>w.data, w.outer * w.C * w.inner, &out[0])
    else:
        widen(<const_float_up>w.data, w.outer * w.C * w.inner, &out[0])
