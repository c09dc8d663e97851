"""Scale/zero-point, quantize, dequantize and per-channel error, with ONNX semantics.

Same (outer, C, inner) view and the same two loop shapes as _reduce.pyx. Codes are written as raw
bytes (uint8): a signed code's byte is its two's complement, so one kernel serves INT8 and UINT8
(and the INT4/UINT4 codes that _pack.pyx packs afterwards). Weights are float32, float16 or
bfloat16 (the `kind` argument, as in _reduce.minmax), widened to float32 a row segment or block
at a time (see _half.pxd).
"""
from cython.parallel cimport prange
from libc.math cimport fabsf

from _half cimport (KIND_BFLOAT16, KIND_FLOAT16, WIDEN_CHUNK, Weights, chunk, const_bf16_up, const_f16_up,
                   weight_p, weight_view, widened)
from _restrict cimport const_float_rp, const_float_up, const_int_rp, double_rp, float_rp, uchar_rp
from _rows cimport ROW_GROUP_MIN, ROW_GROUPS_MAX, ROW_SPAN, RowTile, row_groups, row_spans, row_tile
from _scratch cimport double_zeros, float_zeros

cdef enum:
    BLOCK = 65536      # values per parallel task along a run
    ERR_BLOCK = 4096   # values per partial sum of the error kernel (a multiple of 4)

# The summation order's constants, for tests to check quantrs.reference against.
ERR_BLOCK_VALUES = ERR_BLOCK
ROW_GROUP_MIN_ROWS = ROW_GROUP_MIN
ROW_GROUPS_MAX_COUNT = ROW_GROUPS_MAX

# 1.5 * 2**23: adding then subtracting it rounds a float with |v| < 2**22 to the nearest
# integer, ties to even, in the default rounding mode. It is rint() without a libm call, so the
# loop vectorises on baseline x86-64 (SSE2 has no rounding instruction).
cdef float MAGIC = 12582912.0
cdef float FLT_MIN_NORMAL = 1.1754943508222875e-38


def scales(const float[::1] lo, const float[::1] hi, int qmin, int qmax, bint symmetric,
           float[::1] scale, int[::1] zero_point):
    """ONNX-style scale and zero point per channel from its range.

    The range is first widened to contain 0 (so 0.0 is exactly representable); symmetric uses
    the zero point rint((qmin + qmax) / 2) (0 for INT8 [-127, 127] and INT4 [-8, 7], 128 for
    UINT8, as onnxruntime). A zero point of 0 takes scale = max(lo / qmin, hi / qmax), the
    smallest that fits both sides (INT4's extra negative code is used, as MatMulNBits does; for
    [-127, 127] it is absmax / 127); otherwise symmetric uses [-absmax, absmax] and, like
    asymmetric, scale = (hi - lo) / (qmax - qmin). Computed in double, stored as float32;
    zero_point = rint(qmin - lo / scale) saturated to [qmin, qmax]. A zero range (all-zero
    channel) gets scale 1 so that dequantization stays exact.
    """
    cdef Py_ssize_t c
    cdef double l, h, a, s
    cdef float sf
    cdef double z
    cdef bint centred = symmetric and ((qmin + qmax) / 2.0 + 6755399441055744.0) - 6755399441055744.0 == 0
    for c in range(lo.shape[0]):
        l = lo[c] if lo[c] < 0 else 0.0
        h = hi[c] if hi[c] > 0 else 0.0
        if centred:
            s = l / <double>qmin
            if h / <double>qmax > s:
                s = h / <double>qmax
        elif symmetric:
            a = -l if -l > h else h
            s = (a + a) / <double>(qmax - qmin)
        else:
            s = (h - l) / <double>(qmax - qmin)
        sf = <float>s
        if not (sf >= FLT_MIN_NORMAL):
            sf = 1.0
        if symmetric:
            z = (qmin + qmax) / 2.0
        else:
            z = qmin - l / <double>sf
        z = (z + 6755399441055744.0) - 6755399441055744.0  # rint in double (1.5 * 2**52)
        if z < qmin:
            z = qmin
        if z > qmax:
            z = qmax
        scale[c] = sf
        zero_point[c] = <int>z


cdef inline void _quantize_run(weight_p x, Py_ssize_t n, float s, int z, int qmin, int qmax,
                               uchar_rp out) noexcept nogil:
    # Clamping v = x / s to [qmin - z, qmax - z] before rounding gives the same code as
    # saturate(rint(v) + z), since both bounds are integers; it also keeps the float->int cast
    # defined. NaN would land on qmin (non-finite input is refused before this runs).
    # 16-bit input is widened a chunk at a time (float32 input is one chunk).
    cdef float buf[WIDEN_CHUNK]
    cdef const_float_up y
    cdef float lo = qmin - z, hi = qmax - z
    cdef float v
    cdef Py_ssize_t i, start = 0, m
    while start < n:
        m = chunk(x, n - start)
        y = widened(x + start, m, buf)
        for i in range(m):
            v = y[i] / s
            v = v if v > lo else lo
            v = v if v < hi else hi
            v = (v + MAGIC) - MAGIC
            out[start + i] = <unsigned char>(<int>v + z)
        start += m


cdef inline void _quantize_row(weight_p x, Py_ssize_t n, const_float_rp s, const_int_rp z,
                               const_float_rp lo, const_float_rp hi, uchar_rp out) noexcept nogil:
    # One row segment: n <= ROW_SPAN values, each with its own channel's parameters.
    cdef float buf[ROW_SPAN]
    cdef const_float_up y = widened(x, n, buf)
    cdef Py_ssize_t c
    cdef float v
    for c in range(n):
        v = y[c] / s[c]
        v = v if v > lo[c] else lo[c]
        v = v if v < hi[c] else hi[c]
        v = (v + MAGIC) - MAGIC
        out[c] = <unsigned char>(<int>v + z[c])


cdef tuple _clamp_bounds(const int[::1] zero_point, int qmin, int qmax):
    # Per-channel bounds of x / scale before rounding: [qmin - zero_point, qmax - zero_point].
    cdef Py_ssize_t c, C = zero_point.shape[0]
    cdef float[::1] lo = float_zeros(C), hi = float_zeros(C)
    for c in range(C):
        lo[c] = qmin - zero_point[c]
        hi[c] = qmax - zero_point[c]
    return lo, hi


def quantize(x, int kind, const float[::1] scale, const int[::1] zero_point,
             int qmin, int qmax, unsigned char[:, :, ::1] out, int n_threads):
    """q = saturate(rint(x / scale[c]) + zero_point[c]) into out (same shape), as raw bytes.

    x and kind as in _reduce.minmax."""
    cdef Weights w
    keep = weight_view(x, kind, &w)
    if w.kind == KIND_FLOAT16:
        _quantize(<const_f16_up>w.data, w, scale, zero_point, qmin, qmax, &out[0, 0, 0], n_threads)
    elif w.kind == KIND_BFLOAT16:
        _quantize(<const_bf16_up>w.data, w, scale, zero_point, qmin, qmax, &out[0, 0, 0], n_threads)
    else:
        _quantize(<const_float_up>w.data, w, scale, zero_point, qmin, qmax, &out[0, 0, 0], n_threads)


cdef void _quantize(weight_p src, Weights w, const float[::1] scale, const int[::1] zero_point,
                    int qmin, int qmax, unsigned char* dst, int n_threads):
    cdef Py_ssize_t outer = w.outer, C = w.C, inner = w.inner
    cdef Py_ssize_t nblocks, ntasks, t, r, b, start, stop, c
    cdef float[::1] lo, hi
    cdef RowTile tile
    if inner == 1:
        lo, hi = _clamp_bounds(zero_point, qmin, qmax)
        for t in prange(row_groups(outer) * row_spans(C), nogil=True, schedule="static",
                        num_threads=n_threads):
            tile = row_tile(t, outer, C)
            for r in range(tile.r0, tile.r1):
                _quantize_row(src + r * C + tile.c0, tile.c1 - tile.c0, &scale[tile.c0],
                              &zero_point[tile.c0], &lo[tile.c0], &hi[tile.c0], dst + r * C + tile.c0)
        return
    nblocks = (inner + BLOCK - 1) // BLOCK
    ntasks = outer * C * nblocks
    for t in prange(ntasks, nogil=True, schedule="static", num_threads=n_threads):
        r = t // nblocks
        b = t - r * nblocks
        c = r % C
        start = r * inner + b * BLOCK
        stop = r * inner + inner if b == nblocks - 1 else start + BLOCK
        _quantize_run(src + start, stop - start, scale[c], zero_point[c], qmin, qmax, dst + start)


ctypedef fused code_t:
    signed char
    unsigned char


def dequantize(const code_t[:, :, ::1] q, const float[::1] scale, const int[::1] zero_point,
               float[:, :, ::1] out, int n_threads):
    """out = (q - zero_point[c]) * scale[c] in float32, exactly as ONNX DequantizeLinear."""
    cdef Py_ssize_t C = q.shape[1], inner = q.shape[2]
    cdef Py_ssize_t r, i, c
    cdef const code_t* src = &q[0, 0, 0]
    cdef float* dst = &out[0, 0, 0]
    for r in prange(q.shape[0] * C, nogil=True, schedule="static", num_threads=n_threads):
        c = r % C
        for i in range(r * inner, (r + 1) * inner):
            dst[i] = <float>(src[i] - zero_point[c]) * scale[c]


cdef inline float _dq(unsigned char code, bint signed_codes, float s, int z) noexcept nogil:
    # Spelled out: a conditional expression would promote both arms to unsigned char.
    cdef int v
    if signed_codes:
        v = <signed char>code
    else:
        v = code
    return <float>(v - z) * s


cdef inline void _error_row(weight_p x, const unsigned char* codes, Py_ssize_t n,
                            bint signed_codes, const_float_rp s, const_int_rp z, double_rp sse,
                            float_rp mx) noexcept nogil:
    # One row segment of the row layout (n <= ROW_SPAN): value c adds to channel c's sums.
    cdef float buf[ROW_SPAN]
    cdef const_float_up y = widened(x, n, buf)
    cdef Py_ssize_t c
    cdef float d, a
    for c in range(n):
        d = y[c] - _dq(codes[c], signed_codes, s[c], z[c])
        sse[c] = sse[c] + <double>d * <double>d
        a = fabsf(d)
        mx[c] = a if a > mx[c] else mx[c]


cdef void _row_errors(weight_p src, unsigned char* codes, bint quantize, bint signed_codes,
                     Py_ssize_t outer, Py_ssize_t C, const float* scale, const int* zero_point,
                     const float* lo, const float* hi, double[::1] sse, float[::1] max_abs,
                     int n_threads):
    # The row layout of channel_error (quantize False: codes are given) and quantize_error
    # (quantize True: codes are written, lo/hi are the clamp bounds): per-group partial sums in
    # parallel, then the groups folded in order.
    cdef Py_ssize_t ngroups = row_groups(outer), t, r, off, n
    cdef double[::1] part_sum = double_zeros(ngroups * C)
    cdef float[::1] part_max = float_zeros(ngroups * C)
    cdef RowTile tile
    for t in prange(ngroups * row_spans(C), nogil=True, schedule="static", num_threads=n_threads):
        tile = row_tile(t, outer, C)
        n = tile.c1 - tile.c0
        for r in range(tile.r0, tile.r1):
            off = r * C + tile.c0
            if quantize:
                _quantize_error_row(src + off, n, scale + tile.c0, zero_point + tile.c0, lo + tile.c0,
                                    hi + tile.c0, codes + off, &part_sum[tile.group * C + tile.c0],
                                    &part_max[tile.group * C + tile.c0])
            else:
                _error_row(src + off, codes + off, n, signed_codes, scale + tile.c0,
                           zero_point + tile.c0, &part_sum[tile.group * C + tile.c0],
                           &part_max[tile.group * C + tile.c0])
    _fold_row_groups(part_sum, part_max, ngroups, C, sse, max_abs)


cdef void _fold_row_groups(double[::1] part_sum, float[::1] part_max, Py_ssize_t ngroups,
                           Py_ssize_t C, double[::1] sse, float[::1] max_abs):
    # Group results into channels, in group order (the order the sums are defined in).
    cdef Py_ssize_t g, c
    for c in range(C):
        sse[c] = 0.0
        max_abs[c] = 0.0
    for g in range(ngroups):
        for c in range(C):
            sse[c] += part_sum[g * C + c]
            if part_max[g * C + c] > max_abs[c]:
                max_abs[c] = part_max[g * C + c]


def channel_error(x, int kind, const unsigned char[:, :, ::1] q, bint signed_codes,
                  const float[::1] scale, const int[::1] zero_point,
                  double[::1] sse, float[::1] max_abs, int n_threads):
    """Per-channel sum of squared error and max abs error of the dequantized codes vs x.

    The error of one value is d = x - dequantized in float32, dequantized in float32 as
    DequantizeLinear does. Sums are in double with a fixed order, so results are identical for
    any thread count: runs are cut into ERR_BLOCK-value blocks; inside a block value i goes to
    lane i % 4 (lanes summed sequentially, then (l0 + l1) + (l2 + l3)); block sums are added in
    (outer, block) order. In the row layout (inner == 1) each column is summed row by row within
    each row group (csrc/_rows.pxd), and the group sums are added in group order.
    x and kind as in _reduce.minmax: float16/bfloat16 values are widened to float32 first.
    """
    # The codes are only read here (the drivers write them when `quantize` is True).
    _errors(x, kind, <unsigned char*>&q[0, 0, 0], False, signed_codes, scale, zero_point, 0, 0,
            sse, max_abs, n_threads)


cdef inline void _error_block(weight_p x, const unsigned char* codes, Py_ssize_t n,
                              bint signed_codes, float s, int z, double* sum_out,
                              float* max_out) noexcept nogil:
    # One block (n <= ERR_BLOCK values of one channel): value i goes to lane i % 4, the tail of
    # the last block continues the lane pattern, lanes are summed as (l0 + l1) + (l2 + l3).
    cdef float buf[ERR_BLOCK]
    cdef const_float_up y = widened(x, n, buf)
    cdef double l0 = 0.0, l1 = 0.0, l2 = 0.0, l3 = 0.0
    cdef float m = 0.0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        l0 = l0 + _sq(y[i], _dq(codes[i], signed_codes, s, z), &m)
        l1 = l1 + _sq(y[i + 1], _dq(codes[i + 1], signed_codes, s, z), &m)
        l2 = l2 + _sq(y[i + 2], _dq(codes[i + 2], signed_codes, s, z), &m)
        l3 = l3 + _sq(y[i + 3], _dq(codes[i + 3], signed_codes, s, z), &m)
        i = i + 4
    if i < n:
        l0 = l0 + _sq(y[i], _dq(codes[i], signed_codes, s, z), &m)
    if i + 1 < n:
        l1 = l1 + _sq(y[i + 1], _dq(codes[i + 1], signed_codes, s, z), &m)
    if i + 2 < n:
        l2 = l2 + _sq(y[i + 2], _dq(codes[i + 2], signed_codes, s, z), &m)
    sum_out[0] = (l0 + l1) + (l2 + l3)
    max_out[0] = m


cdef inline double _sq(float x, float dq, float* m) noexcept nogil:
    # The error in float32 (exact whenever x lies within half a step of a code: Sterbenz), its
    # square in double (exact: 24-bit mantissas), so only the sums round.
    cdef float d = x - dq
    cdef float a = fabsf(d)
    if a > m[0]:
        m[0] = a
    return <double>d * <double>d


cdef void _fold_blocks(double[::1] part_sum, float[::1] part_max, Py_ssize_t outer, Py_ssize_t C,
                       Py_ssize_t nblocks, double[::1] sse, float[::1] max_abs):
    # Block results into channels, in (outer, block) order: the order the sums are defined in.
    cdef Py_ssize_t r, c, b, t
    for c in range(C):
        sse[c] = 0.0
        max_abs[c] = 0.0
    for r in range(outer):
        for c in range(C):
            for b in range(nblocks):
                t = (r * C + c) * nblocks + b
                sse[c] += part_sum[t]
                if part_max[t] > max_abs[c]:
                    max_abs[c] = part_max[t]


cdef inline float _code(float x, float s, float lo, float hi) noexcept nogil:
    cdef float v = x / s
    v = v if v > lo else lo
    v = v if v < hi else hi
    return (v + MAGIC) - MAGIC


cdef inline void _quantize_error_block(weight_p x, Py_ssize_t n, float s, int z, int qmin,
                                       int qmax, uchar_rp out, bint signed_codes, double* sum_out,
                                       float* max_out) noexcept nogil:
    # One error block (16 KiB of float32 input: it stays in L1 between the two loops): the
    # vectorised quantize loop, then the error of the codes just written, in channel_error's
    # order. 16-bit input is widened once, for both loops.
    cdef float buf[ERR_BLOCK]
    cdef const_float_up y = widened(x, n, buf)
    _quantize_run(y, n, s, z, qmin, qmax, out)
    _error_block(y, out, n, signed_codes, s, z, sum_out, max_out)


cdef inline void _quantize_error_row(weight_p x, Py_ssize_t n, const_float_rp s,
                                     const_int_rp z, const_float_rp lo, const_float_rp hi,
                                     uchar_rp out, double_rp sse, float_rp mx) noexcept nogil:
    # One row segment of the row layout (n <= ROW_SPAN).
    cdef float buf[ROW_SPAN]
    cdef const_float_up y = widened(x, n, buf)
    cdef Py_ssize_t c
    cdef float r, dq, d, a
    for c in range(n):
        r = _code(y[c], s[c], lo[c], hi[c])
        out[c] = <unsigned char>(<int>r + z[c])
        dq = r * s[c]  # = _dq(out[c]): the code minus its zero point is r
        d = y[c] - dq
        sse[c] = sse[c] + <double>d * <double>d
        a = fabsf(d)
        mx[c] = a if a > mx[c] else mx[c]


def quantize_error(x, int kind, const float[::1] scale, const int[::1] zero_point,
                   int qmin, int qmax, unsigned char[:, :, ::1] out,
                   double[::1] sse, float[::1] max_abs, int n_threads):
    """quantize() and channel_error() in one pass over x: the same codes, and the same sums
    (bit for bit, in channel_error's order), for the cost of reading the weight once."""
    _errors(x, kind, &out[0, 0, 0], True, qmin < 0, scale, zero_point, qmin, qmax, sse, max_abs,
            n_threads)


cdef void _errors(x, int kind, unsigned char* codes, bint quantize, bint signed_codes,
                  const float[::1] scale, const int[::1] zero_point, int qmin, int qmax,
                  double[::1] sse, float[::1] max_abs, int n_threads):
    # channel_error (quantize False: the codes are given) and quantize_error (quantize True:
    # the codes are written, saturated to [qmin, qmax]) share their loops and summation order.
    cdef Weights w
    keep = weight_view(x, kind, &w)
    if w.kind == KIND_FLOAT16:
        _errors_of(<const_f16_up>w.data, w, codes, quantize, signed_codes, scale, zero_point, qmin,
                   qmax, sse, max_abs, n_threads)
    elif w.kind == KIND_BFLOAT16:
        _errors_of(<const_bf16_up>w.data, w, codes, quantize, signed_codes, scale, zero_point, qmin,
                   qmax, sse, max_abs, n_threads)
    else:
        _errors_of(<const_float_up>w.data, w, codes, quantize, signed_codes, scale, zero_point, qmin,
                   qmax, sse, max_abs, n_threads)


cdef void _errors_of(weight_p src, Weights w, unsigned char* codes, bint quantize, bint signed_codes,
                     const float[::1] scale, const int[::1] zero_point, int qmin, int qmax,
                     double[::1] sse, float[::1] max_abs, int n_threads):
    cdef Py_ssize_t outer = w.outer, C = w.C, inner = w.inner
    cdef float[::1] lo, hi
    cdef const float* lo_p = NULL
    cdef const float* hi_p = NULL
    if inner == 1:
        if quantize:
            lo, hi = _clamp_bounds(zero_point, qmin, qmax)
            lo_p = &lo[0]
            hi_p = &hi[0]
        _row_errors(src, codes, quantize, signed_codes, outer, C, &scale[0], &zero_point[0], lo_p,
                    hi_p, sse, max_abs, n_threads)
    else:
        _block_errors(src, codes, quantize, signed_codes, outer, C, inner, &scale[0],
                      &zero_point[0], qmin, qmax, sse, max_abs, n_threads)


cdef void _block_errors(weight_p src, unsigned char* codes, bint quantize, bint signed_codes,
                        Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, const float* scale,
                        const int* zero_point, int qmin, int qmax, double[::1] sse,
                        float[::1] max_abs, int n_threads):
    # Runs cut into ERR_BLOCK-value blocks, one partial sum per block, folded in (outer, block)
    # order.
    cdef Py_ssize_t nblocks = (inner + ERR_BLOCK - 1) // ERR_BLOCK
    cdef Py_ssize_t ntasks = outer * C * nblocks, t, r, b, c, start, stop
    cdef double[::1] part_sum = double_zeros(ntasks)
    cdef float[::1] part_max = float_zeros(ntasks)
    for t in prange(ntasks, nogil=True, schedule="static", num_threads=n_threads):
        r = t // nblocks
        b = t - r * nblocks
        c = r % C
        start = r * inner + b * ERR_BLOCK
        stop = r * inner + inner if b == nblocks - 1 else start + ERR_BLOCK
        if quantize:
            _quantize_error_block(src + start, stop - start, scale[c], zero_point[c], qmin, qmax,
                                  codes + start, signed_codes, &part_sum[t], &part_max[t])
        else:
            _error_block(src + start, codes + start, stop - start, signed_codes, scale[c],
                         zero_point[c], &part_sum[t], &part_max[t])
    _fold_blocks(part_sum, part_max, outer, C, nblocks, sse, max_abs)
