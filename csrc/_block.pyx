"""Block-wise quantization: ONNX opset-21 QuantizeLinear/DequantizeLinear with `axis` and
`block_size` (and onnxruntime's MatMulNBits): one scale and zero point per block of `block_size`
consecutive values along the reduction axis (the last block short), with an optional range search.

The tensor is seen as (outer, L, inner) around the block axis; block (o, b, i) is rows
b * B .. b * B + n - 1 (n <= B) of column i. Each block is read from memory once, then from cache:

- contiguous layout (inner == 1: Gemm transB=1 weights [N, K] and embedding tables along their
  last axis): a block is n consecutive values. A task walks a run of consecutive blocks (which
  are consecutive in memory) a batch at a time (<= BATCH_VALUES values, widened from 16 bits
  once): min/max of each block, the batch's parameters, then each block's codes and error, the
  loops vectorised along the block. The search transposes the batch into a tile (block k =
  column k) and runs the strided layout's loops on it, across blocks.
- strided layout (inner > 1: MatMul weights [K, N] along axis 0, Conv [O, I, kh, kw] along 1): a
  block row is n rows x `inner` columns, one block per column. A chunk is one block row times a
  span of columns (a task is one chunk, or with transposed codes several block rows' chunks of
  one narrower span: see _run): the first pass walks its rows (long runs through memory) for
  per-column min/max; the other passes take SUB columns at a time from cache, four rows per
  iteration, vectorised along the columns.

Parameters follow _quant.scales exactly, codes are ONNX QuantizeLinear (saturated to [qmin,
qmax], see _quant._quantize_run) and the error of one value is taken as _quant.channel_error does
(d = x - dequantized in float32, its square in double).

Range search, per block, over a grid of shrink factors (alphas; the first is 1.0, plain
min/max): for each alpha the codes of [alpha * lo, alpha * hi] with scales()'s parameters, and
stored parameters fitted to those same codes (_fit_n: candidates are the grid point's own, the
least-squares scale with its zero point, and asymmetric the integer zero point nearest the
least-squares line's with its least-squares scale), each weighed by its squared error in
closed form from the block's sums of its codes t = code - zero point and of their residuals
r = x - t * s for the grid point's own scale s (sum t, t*t, r, r*t, r*r in float32 lanes; for
plain min/max, r*r is its exact error, taken in float64 lanes; the fit in float64): every term
is of the error's own size, so nothing cancels. The candidate of least error wins, ties keep the
earlier (plain min/max first); the winner's codes are written, with their error taken value by
value against the stored parameters. The closed form is computed, the written error measured:
they can differ in their last bits, so a block whose written error comes out above plain
min/max's (taken exactly in the grid's first pass) is written again with plain min/max: the
search never loses to it (measured: 0.04% of blocks at 4 bits, 0.3% at 8). With half_scale every scale
is rounded up to float16 (a grid point's asymmetric zero point recomputed from its range's
lowest value) before any code or error is taken, so the choice is made on what is stored.

Sums: value r of a block goes to lane r % 4 (lanes summed in order, the block's sum is
(l0 + l1) + (l2 + l3)), in both layouts. Totals (sse, plain min/max's sse) add the blocks in
order within a chunk (contiguous: chunk consecutive blocks; strided: one block row's span of
chunk columns), then the chunks in order: the same for any thread count.
quantrs.reference.quantize_blocks is the numpy twin.
"""
from cython.parallel cimport prange
from cpython.array cimport array, clone
from libc.math cimport INFINITY, ceilf, fabsf

from _half cimport (KIND_BFLOAT16, KIND_FLOAT16, Weights, const_bf16_up, const_f16_up, weight_p,
                   weight_view, widen)
from _openmp cimport omp_get_thread_num
from _restrict cimport const_float_rp, const_float_up, const_int_rp, double_rp, float_rp, uchar_rp

cdef extern from *:
    ctypedef int* int_rp "int * __restrict__"

cdef extern from *:
    """
    #include <string.h>
    static inline unsigned int quantrs_block_f32_bits(float f) { unsigned int u; memcpy(&u, &f, sizeof u); return u; }
    static inline float quantrs_block_bits_f32(unsigned int u) { float f; memcpy(&f, &u, sizeof f); return f; }
    static inline int quantrs_block_f32_ibits(float f) { int u; memcpy(&u, &f, sizeof u); return u; }
    static inline float quantrs_block_ibits_f32(int u) { float f; memcpy(&f, &u, sizeof f); return f; }
    """
    unsigned int f32_bits "quantrs_block_f32_bits"(float f) noexcept nogil
    int f32_ibits "quantrs_block_f32_ibits"(float f) noexcept nogil
    float ibits_f32 "quantrs_block_ibits_f32"(int u) noexcept nogil
    float bits_f32 "quantrs_block_bits_f32"(unsigned int u) noexcept nogil

cdef extern from *:
    # Byte transposition of the transposed codes: dst[c * ds + r] = src[r * ss + c], or with
    # pack two rows per byte, low nibble first: dst[c * ds + r / 2] = src[r] | src[r + 1] << 4
    # (codes < 16, rows even). A byte at a time it took a third of the strided write pass (the
    # compiler does not vectorise it); with SSE2 (every x86-64) it goes 16 x 16 bytes at a time
    # in registers: four rounds of interleaving row i with row i + 8 transpose a 16 x 16 tile.
    # Cython has no vector types, hence C. A permutation (and packing) of bytes: both paths give
    # the same output.
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline void quantrs_block_t16(const unsigned char* s, Py_ssize_t ss, __m128i* a) {
        __m128i b[16];
        int i, k;
        for (i = 0; i < 16; i++) a[i] = _mm_loadu_si128((const __m128i*)(s + i * ss));
        for (k = 0; k < 4; k++) {
            for (i = 0; i < 8; i++) {
                b[2 * i] = _mm_unpacklo_epi8(a[i], a[i + 8]);
                b[2 * i + 1] = _mm_unpackhi_epi8(a[i], a[i + 8]);
            }
            for (i = 0; i < 16; i++) a[i] = b[i];
        }
    }
    static inline void quantrs_block_tile(const unsigned char* s, Py_ssize_t ss, unsigned char* d,
                                          Py_ssize_t ds, int pack) {
        __m128i a[16], p;
        const __m128i even = _mm_set1_epi16(0x00FF);
        int i;
        quantrs_block_t16(s, ss, a);
        if (!pack) {
            for (i = 0; i < 16; i++) _mm_storeu_si128((__m128i*)(d + i * ds), a[i]);
            return;
        }
        for (i = 0; i < 16; i++) {  /* 16-bit lanes: even row | odd row << 4, then to bytes */
            p = _mm_or_si128(_mm_and_si128(a[i], even), _mm_slli_epi16(_mm_srli_epi16(a[i], 8), 4));
            _mm_storel_epi64((__m128i*)(d + i * ds), _mm_packus_epi16(p, p));
        }
    }
    #endif
    static inline void quantrs_block_cell(const unsigned char* s, Py_ssize_t ss, unsigned char* d,
                                          Py_ssize_t ds, Py_ssize_t r, Py_ssize_t c, int pack) {
        if (!pack)
            d[c * ds + r] = s[r * ss + c];
        else if (r % 2 == 0)
            d[c * ds + r / 2] = (unsigned char)(s[r * ss + c] | (s[(r + 1) * ss + c] << 4));
    }
    static void quantrs_block_transpose(const unsigned char* s, Py_ssize_t ss, unsigned char* d,
                                        Py_ssize_t ds, Py_ssize_t rows, Py_ssize_t cols, int pack) {
        Py_ssize_t r = 0, c, c16 = 0, r16 = 0;
    #if defined(__SSE2__)
        r16 = rows - rows % 16;
        c16 = cols - cols % 16;
        for (c = 0; c < c16; c += 16)      /* a column's bytes one after the other */
            for (r = 0; r < r16; r += 16)
                quantrs_block_tile(s + r * ss + c, ss, d + c * ds + (pack ? r / 2 : r), ds, pack);
    #endif
        for (c = c16; c < cols; c++)  /* the columns right of the tiles */
            for (r = 0; r < r16; r++)
                quantrs_block_cell(s, ss, d, ds, r, c, pack);
        for (c = 0; c < cols; c++)    /* the rows below them */
            for (r = r16; r < rows; r++)
                quantrs_block_cell(s, ss, d, ds, r, c, pack);
    }
    """
    void transpose_bytes "quantrs_block_transpose"(const unsigned char* src, Py_ssize_t ss,
                                                    unsigned char* dst, Py_ssize_t ds,
                                                    Py_ssize_t rows, Py_ssize_t cols,
                                                    bint pack) noexcept nogil

cdef enum:
    CHUNK_VALUES = 131072  # about this many values per chunk (a partial sum of the totals)
    MIN_SPAN = 64          # strided layout: fewest columns per chunk
    MAX_SPAN = 4096        # strided layout: most columns per chunk
    BATCH_VALUES = 4096    # contiguous layout: values per batch of blocks (a multiple of 4)
    BATCH_BLOCKS = 128     # contiguous layout: most blocks per batch (<= SUB)
    TILE_MIN_BLOCKS = 8    # contiguous layout: fewest blocks in a batch to search them as a tile
    SUB = 128              # strided layout: columns per sub-span of the passes from cache
    TROWS = 256            # strided layout, transposed codes: rows per transposing copy
    TRANSPOSED_SPAN = 256  # strided layout, transposed codes: most columns per chunk (see _run)
    TASK_ROWS = 256        # strided layout, transposed codes: about this many rows of values per task
    MIN_TASKS_PER_THREAD = 4  # grouping block rows into tasks stops short of fewer tasks than this

# The summation order's constants, for tests to check quantrs.reference against.
LANES = 4
CHUNK_VALUES_COUNT = CHUNK_VALUES
MIN_SPAN_COLUMNS = MIN_SPAN
MAX_SPAN_COLUMNS = MAX_SPAN
TRANSPOSED_SPAN_COLUMNS = TRANSPOSED_SPAN

cdef float MAGIC = 12582912.0             # 1.5 * 2**23: float rint (see _quant.pyx)
cdef double MAGIC64 = 6755399441055744.0  # 1.5 * 2**52: double rint
cdef float FLT_MIN_NORMAL = 1.1754943508222875e-38
cdef float HALF_MIN_NORMAL = 6.103515625e-05   # 2**-14
cdef float HALF_MAX = 65504.0
cdef float TWO_24 = 16777216.0
cdef float TWO_M24 = 5.9604644775390625e-08


cdef struct Job:
    Py_ssize_t outer, L, inner, B, nb
    Py_ssize_t chunk       # blocks (contiguous) or columns (strided) per chunk
    Py_ssize_t spans       # strided: chunks (spans of columns) per block row
    Py_ssize_t block_rows  # strided: block rows per task (a chunk each; see _run)
    int qmin, qmax
    bint symmetric, half, transpose
    bint pack              # transposed 4-bit codes, two per byte (low nibble first)
    Py_ssize_t tstride     # transposed: bytes per column of codes (L, or L / 2 packed)
    int ngrid
    const float* alphas
    unsigned char* out
    float* scale
    int* zero_point
    double* part_sse
    double* part_minmax
    float* part_max
    float* part_bad
    float* scratch         # strided: per-thread scratch
    Py_ssize_t scratch_len


# ----------------------------------------------------------------------------------------------
# Parameters: plain min/max, grid points, least-squares refinement, float16 rounding.
#
# These run once per block (and grid point), across a sub-span's columns. Each is written as
# selects, without branches or early exits, so that the compiler vectorises the loops over
# columns (per value they had cost as much as a pass over the block); a candidate that does not
# apply is computed anyway and not chosen. Same operations in the same order as before: the
# same bits.

cdef inline double _rint64(double v) noexcept nogil:
    return (v + MAGIC64) - MAGIC64


cdef inline double _clamp64(double z, double qmin, double qmax) noexcept nogil:
    # z already integral; NaN (non-finite input, refused afterwards) lands on qmin.
    z = z if z >= qmin else qmin
    return z if z <= qmax else qmax


cdef inline float _half_up(float s) noexcept nogil:
    # The smallest float16 value >= s > 0 (float16 subnormals are the multiples of 2**-24), as
    # float32; inf above float16's largest value (quantrs.tensor.half_scales' rule).
    cdef unsigned int u = f32_bits(s)
    cdef unsigned int up = (u | 0x1FFF) + 1
    cdef float r = bits_f32(up if (u & 0x1FFF) != 0 else u)
    cdef float sub = ceilf(s * TWO_24) * TWO_M24
    r = r if r <= HALF_MAX else bits_f32(0x7F800000)  # inf: no float16 value is that large
    return sub if s < HALF_MIN_NORMAL else r


cdef void _params_n(const float* lo, const float* hi, float alpha, Py_ssize_t n, const Job* j,
                    float_rp s, int_rp z, float_rp lob, float_rp hib) noexcept nogil:
    # _quant.scales for n ranges shrunk by alpha (alpha * lo, alpha * hi in float32; 1.0 leaves
    # them as they are), plus the clamp bounds qmin - z, qmax - z of _q. With half_scale each
    # scale is rounded up to float16 and an asymmetric zero point computed for it, so that the
    # range's lowest value still maps to qmin: rint(qmin - low / scale), clamped.
    cdef Py_ssize_t c
    cdef double r = j.qmax - j.qmin, qmin = j.qmin, qmax = j.qmax, l, h, a, zz
    cdef float lf, hf, sf, centred
    cdef int zc
    cdef bint half = j.half
    if j.symmetric:
        zc = <int>_clamp64(_rint64((j.qmin + j.qmax) / 2.0), qmin, qmax)
        for c in range(n):
            lf = alpha * lo[c]
            hf = alpha * hi[c]
            l = lf if lf < 0 else 0.0
            h = hf if hf > 0 else 0.0
            # centred (zc == 0): the smallest scale that fits both sides (_quant.scales)
            a = l / qmin
            centred = <float>(a if a > h / qmax else h / qmax)
            a = -l if -l > h else h
            sf = centred if zc == 0 else <float>((a + a) / r)
            sf = sf if sf >= FLT_MIN_NORMAL else <float>1.0
            hf = _half_up(sf)
            s[c] = hf if half else sf
            z[c] = zc
            lob[c] = j.qmin - zc
            hib[c] = j.qmax - zc
    else:
        for c in range(n):
            lf = alpha * lo[c]
            hf = alpha * hi[c]
            l = lf if lf < 0 else 0.0
            h = hf if hf > 0 else 0.0
            sf = <float>((h - l) / r)
            sf = sf if sf >= FLT_MIN_NORMAL else <float>1.0
            hf = _half_up(sf)
            sf = hf if half else sf
            zz = _clamp64(_rint64(qmin - l / <double>sf), qmin, qmax)
            s[c] = sf
            z[c] = <int>zz
            lob[c] = <float>(qmin - zz)
            hib[c] = <float>(qmax - zz)


cdef inline double _fit_error(double srr, double srt, double sr, double stt, double st, double n,
                              double g, double d, double s) noexcept nogil:
    # sum (x - s (t + d))^2 over a block, from the sums of its codes t and of the residuals
    # r = x - g t of the grid point's own scale g: x - s (t + d) = r + a t + b, a = g - s,
    # b = -s d (reference.fit_codes, same order). Every term is of the error's size.
    cdef double a = g - s
    cdef double b = -(s * d)
    return ((((srr + (a * a) * stt) + (n * b) * b) + (2.0 * a) * srt) + (2.0 * b) * sr) + ((2.0 * a) * b) * st


cdef inline float _fit_scale(double srt, double sr, double stt, double st, double n, double g,
                             double d, bint half) noexcept nogil:
    # The least-squares scale for the codes t + d, as stored (float32, float16 with half):
    # g + (sum r (t + d) - g sum d (t + d)) / sum (t + d)^2. 0 when it is not a finite normal
    # float32 (or has no float16 value).
    cdef double qq = (stt + (2.0 * d) * st) + (n * d) * d
    cdef double num = (srt + d * sr) - g * ((d * st) + (n * d) * d)
    cdef float f = <float>(g + num / qq)
    cdef float hf
    f = f if f >= FLT_MIN_NORMAL else <float>0.0
    f = f if f - f == 0 else <float>0.0
    hf = _half_up(f)  # 0 stays 0
    f = hf if half else f
    f = f if f - f == 0 else <float>0.0
    return f if qq > 0 else <float>0.0


cdef void _fit_n(const float* st, const float* stt, const float* sr, const float* srt,
                 const double* srr, const float* cnt, const float* gs, const int* gz, Py_ssize_t n,
                 const Job* j, float_rp fs, int_rp fz, double_rp fe) noexcept nogil:
    # reference.fit_codes for n grid points' codes (t = code - gz; float32 lane sums of t, t*t,
    # and of the residuals r = x - gs t: r, r*t; srr the sum of r*r; float64 arithmetic): the
    # stored scale and zero point of least error for those codes, and that error in closed
    # form. Candidates, in order (a later one must be strictly better): (gs, gz), the
    # least-squares scale with gz, and (asymmetric) the integer zero point nearest the
    # least-squares line's with its least-squares scale. A candidate that does not apply gets
    # an infinite error, which is never less than the best so far.
    cdef Py_ssize_t c
    cdef double t1, t2, r1, rt, rr, m, g, e, den, delta, slope, zf, d, be
    cdef double qmin = j.qmin, qmax = j.qmax
    cdef double inf = INFINITY
    cdef double line_fit = 0.0 if j.symmetric else 1.0  # a double: selects on it vectorise
    cdef float sc, bs
    cdef int bz, zc
    cdef bint half = j.half
    for c in range(n):
        t1 = st[c]
        t2 = stt[c]
        r1 = sr[c]
        rt = srt[c]
        rr = srr[c]
        m = cnt[c]
        g = gs[c]
        bs = gs[c]
        bz = gz[c]
        be = rr
        # the least-squares scale, zero point kept
        sc = _fit_scale(rt, r1, t2, t1, m, g, 0.0, half)
        e = _fit_error(rr, rt, r1, t2, t1, m, g, 0.0, sc)
        e = e if sc > 0 else inf
        bs = sc if e < be else bs
        be = e if e < be else be
        # the zero point of the least-squares line (rounded), with its least-squares scale
        den = m * t2 - t1 * t1
        delta = (m * rt - t1 * r1) / den
        slope = g + delta
        zf = <double>gz[c] - ((r1 - delta * t1) / m) / slope
        zf = zf if zf > qmin else qmin
        zf = zf if zf < qmax else qmax
        d = <double>gz[c] - _rint64(zf)
        sc = _fit_scale(rt, r1, t2, t1, m, g, d, half)
        e = _fit_error(rr, rt, r1, t2, t1, m, g, d, sc)
        e = e if sc > 0 else inf
        e = e if d != 0 else inf
        e = e if den > 0 else inf
        e = e if slope >= FLT_MIN_NORMAL else inf
        e = e if slope - slope == 0 else inf
        e = e if line_fit != 0 else inf  # symmetric: the zero point is fixed
        zc = gz[c] - <int>d
        bs = sc if e < be else bs
        bz = zc if e < be else bz
        be = e if e < be else be
        fs[c] = bs
        fz[c] = bz
        fe[c] = be


cdef inline float _q(float v, float s, float lob, float hib) noexcept nogil:
    # code - zero point of QuantizeLinear(v): the quotient clamped to [qmin - z, qmax - z] (the
    # same code as saturating after rounding: the bounds are integers), then rounded half to even.
    v = v / s
    v = v if v > lob else lob
    v = v if v < hib else hib
    return (v + MAGIC) - MAGIC


# ----------------------------------------------------------------------------------------------
# Contiguous layout: one block (or a piece of a long one) at a time, vectorised along it: value
# r is lane r % 4 of the sums, and lane state is carried between the pieces of a long block
# (pieces are multiples of 4 values). Min/max and max |error| are taken on the float bits as
# integers (order-free, and integer reductions vectorise where float ones do not).

cdef inline int _key(int u) noexcept nogil:
    # The bits of a float32 as an int that orders like the float (for non-NaN values; -0.0 just
    # below +0.0). Its own inverse. Integer min/max reductions vectorise, float ones do not
    # (without -ffast-math), and which of the two zeros is the minimum never changes a scale.
    return u ^ ((u >> 31) & 0x7FFFFFFF)


cdef inline void _c_minmax(const_float_up y, Py_ssize_t n, int* st) noexcept nogil:
    # st: [min key, max key, non-finite flag], carried from piece to piece.
    cdef int lo = st[0], hi = st[1], bad = st[2], u, k
    cdef Py_ssize_t i
    for i in range(n):
        u = f32_ibits(y[i])
        k = _key(u)
        lo = k if k < lo else lo
        hi = k if k > hi else hi
        bad = bad | ((u & 0x7F800000) == 0x7F800000)
    st[0] = lo
    st[1] = hi
    st[2] = bad


cdef inline void _c_write(const_float_up y, Py_ssize_t n, float s, int z, float lob, float hib,
                          float ds, float off, uchar_rp out, float_rp d, double* acc,
                          int* mx) noexcept nogil:
    # Codes of (s, z) into out and the errors of the stored (ds, z - off) into d (one vectorised
    # loop, which also keeps the largest |error| as bits), then the errors' squares into the
    # lanes acc[4]. Plain min/max: ds = s, off = 0.
    cdef double a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3]
    cdef int m = mx[0], u
    cdef float t, e
    cdef Py_ssize_t i, k, q = n // 4
    for i in range(n):
        t = _q(y[i], s, lob, hib)
        out[i] = <unsigned char>(<int>t + z)
        e = y[i] - (t + off) * ds
        d[i] = e
        u = f32_ibits(e) & 0x7FFFFFFF
        m = u if u > m else m
    for k in range(q):
        i = 4 * k
        a0 = a0 + <double>d[i] * <double>d[i]
        a1 = a1 + <double>d[i + 1] * <double>d[i + 1]
        a2 = a2 + <double>d[i + 2] * <double>d[i + 2]
        a3 = a3 + <double>d[i + 3] * <double>d[i + 3]
    i = 4 * q
    if i < n:
        a0 = a0 + <double>d[i] * <double>d[i]
    if i + 1 < n:
        a1 = a1 + <double>d[i + 1] * <double>d[i + 1]
    if i + 2 < n:
        a2 = a2 + <double>d[i + 2] * <double>d[i + 2]
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3
    mx[0] = m


cdef inline void _c_error(const_float_up y, Py_ssize_t n, float s, float lob, float hib,
                          double* acc) noexcept nogil:
    # The error's lanes of (s, z) for its own codes: plain min/max's, beside the search.
    cdef double a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3]
    cdef float d0, d1, d2, d3
    cdef Py_ssize_t i, k, m = n // 4
    for k in range(m):
        i = 4 * k
        d0 = y[i] - _q(y[i], s, lob, hib) * s
        d1 = y[i + 1] - _q(y[i + 1], s, lob, hib) * s
        d2 = y[i + 2] - _q(y[i + 2], s, lob, hib) * s
        d3 = y[i + 3] - _q(y[i + 3], s, lob, hib) * s
        a0 = a0 + <double>d0 * <double>d0
        a1 = a1 + <double>d1 * <double>d1
        a2 = a2 + <double>d2 * <double>d2
        a3 = a3 + <double>d3 * <double>d3
    i = 4 * m
    if i < n:
        d0 = y[i] - _q(y[i], s, lob, hib) * s
        a0 = a0 + <double>d0 * <double>d0
    if i + 1 < n:
        d1 = y[i + 1] - _q(y[i + 1], s, lob, hib) * s
        a1 = a1 + <double>d1 * <double>d1
    if i + 2 < n:
        d2 = y[i + 2] - _q(y[i + 2], s, lob, hib) * s
        a2 = a2 + <double>d2 * <double>d2
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


cdef inline void _c_grid(const_float_up y, Py_ssize_t n, float s, float lob, float hib,
                         float* acc) noexcept nogil:
    # One grid point's sums over its codes t and residuals r = x - t s, lanes: sum t [0:4],
    # sum t*t [4:8], sum r [8:12], sum r*t [12:16], sum r*r [16:20].
    cdef float a[20]
    cdef float t0, t1, t2, t3, r0, r1, r2, r3
    cdef Py_ssize_t i, k, m = n // 4, l
    for l in range(20):
        a[l] = acc[l]
    for k in range(m):
        i = 4 * k
        t0 = _q(y[i], s, lob, hib)
        t1 = _q(y[i + 1], s, lob, hib)
        t2 = _q(y[i + 2], s, lob, hib)
        t3 = _q(y[i + 3], s, lob, hib)
        r0 = y[i] - t0 * s
        r1 = y[i + 1] - t1 * s
        r2 = y[i + 2] - t2 * s
        r3 = y[i + 3] - t3 * s
        a[0] = a[0] + t0
        a[1] = a[1] + t1
        a[2] = a[2] + t2
        a[3] = a[3] + t3
        a[4] = a[4] + t0 * t0
        a[5] = a[5] + t1 * t1
        a[6] = a[6] + t2 * t2
        a[7] = a[7] + t3 * t3
        a[8] = a[8] + r0
        a[9] = a[9] + r1
        a[10] = a[10] + r2
        a[11] = a[11] + r3
        a[12] = a[12] + r0 * t0
        a[13] = a[13] + r1 * t1
        a[14] = a[14] + r2 * t2
        a[15] = a[15] + r3 * t3
        a[16] = a[16] + r0 * r0
        a[17] = a[17] + r1 * r1
        a[18] = a[18] + r2 * r2
        a[19] = a[19] + r3 * r3
    for i in range(4 * m, n):
        l = i - 4 * m
        t0 = _q(y[i], s, lob, hib)
        r0 = y[i] - t0 * s
        a[l] = a[l] + t0
        a[4 + l] = a[4 + l] + t0 * t0
        a[8 + l] = a[8 + l] + r0
        a[12 + l] = a[12 + l] + r0 * t0
        a[16 + l] = a[16 + l] + r0 * r0
    for l in range(20):
        acc[l] = a[l]


cdef inline double _lanes64(const double* a) noexcept nogil:
    return (a[0] + a[1]) + (a[2] + a[3])


cdef inline float _lanes32(const float* a) noexcept nogil:
    return (a[0] + a[1]) + (a[2] + a[3])


cdef inline const_float_up _at(weight_p x, Py_ssize_t off, Py_ssize_t m, const float* whole,
                               float* piece) noexcept nogil:
    # Values [off, off + m) of a batch as float32: in place (float32 input), from the batch's
    # widened copy (whole), or widened now into piece.
    if weight_p is const_float_up:
        return x + off
    else:
        if whole != NULL:
            return whole + off
        widen(x + off, m, piece)
        return piece


cdef enum Pass:
    PASS_MINMAX
    PASS_GRID
    PASS_GRID0  # strided: PASS_GRID and PASS_ERROR at once (plain min/max's codes)
    PASS_ERROR
    PASS_WRITE


cdef inline void _c_pass(weight_p x, const float* whole, float* buf, float* dbuf, Py_ssize_t n,
                         Pass kind, float s, int z, float lob, float hib, float ds, float off,
                         uchar_rp out, float* facc, double* dacc, int* iacc) noexcept nogil:
    # One pass over a block (x: its first value), piece by piece when it is longer than a batch.
    cdef Py_ssize_t p = 0, m
    cdef const_float_up y
    while p < n:
        m = n - p if n - p < BATCH_VALUES else BATCH_VALUES
        y = _at(x, p, m, whole + p if whole != NULL else NULL, buf)
        if kind == PASS_MINMAX:
            _c_minmax(y, m, iacc)
        elif kind == PASS_GRID:
            _c_grid(y, m, s, lob, hib, facc)
        elif kind == PASS_ERROR:
            _c_error(y, m, s, lob, hib, dacc)
        else:
            _c_write(y, m, s, z, lob, hib, ds, off, out + p, dbuf, dacc, iacc)
        p += m


cdef inline void _zero64(double* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = 0


cdef inline void _zero32(float* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = 0


cdef void _c_batch(weight_p x, const float* whole, float* buf, float* dbuf, float* tile,
                   Py_ssize_t m, Py_ssize_t b, const Job* j, unsigned char* out, float* scale,
                   int* zero_point, double* sse, double* sse_minmax, int* mx_bits,
                   int* bad) noexcept nogil:
    # m <= BATCH_BLOCKS consecutive blocks of the contiguous layout, the first one block b of
    # its row; x (and whole, out) at the batch's first value. Each step runs over the whole
    # batch: the per-block loops vectorise along the block, the parameter loops across blocks.
    cdef Py_ssize_t off[BATCH_BLOCKS + 1]
    cdef Py_ssize_t k, n, r, rows
    cdef int st[3]
    cdef float lo[BATCH_BLOCKS]
    cdef float hi[BATCH_BLOCKS]
    cdef float cnt[BATCH_BLOCKS]
    cdef float ps[BATCH_BLOCKS]
    cdef float pl[BATCH_BLOCKS]
    cdef float ph[BATCH_BLOCKS]
    cdef int pz[BATCH_BLOCKS]
    cdef float cs[BATCH_BLOCKS]
    cdef float cl[BATCH_BLOCKS]
    cdef float ch[BATCH_BLOCKS]
    cdef int cz[BATCH_BLOCKS]
    cdef float bs[BATCH_BLOCKS]
    cdef int bz[BATCH_BLOCKS]
    cdef double e0[BATCH_BLOCKS]
    cdef double acc[4]
    cdef double e
    cdef int mx = mx_bits[0], mk
    cdef bint direct = j.B <= BATCH_VALUES  # every block is one piece: call the loops directly
    cdef const_float_up y
    if m < 1:
        return
    off[0] = 0
    for k in range(m):
        n = j.L - b * j.B if j.L - b * j.B < j.B else j.B
        off[k + 1] = off[k] + n
        cnt[k] = <float>n
        b = b + 1 if b + 1 < j.nb else 0
    # min/max, then the plain parameters
    for k in range(m):
        st[0] = 0x7FFFFFFF
        st[1] = -0x7FFFFFFF - 1
        st[2] = 0
        if direct:
            _c_minmax(_at(x, off[k], 0, whole, NULL), off[k + 1] - off[k], st)
        else:
            _c_pass(x + off[k], NULL, buf, dbuf, off[k + 1] - off[k], PASS_MINMAX, 0, 0, 0, 0, 0, 0,
                    NULL, NULL, NULL, st)
        lo[k] = ibits_f32(_key(st[0]))
        hi[k] = ibits_f32(_key(st[1]))
        bad[0] = bad[0] | st[2]
    _params_n(lo, hi, 1.0, m, j, ps, pz, pl, ph)
    for k in range(m):
        cs[k] = ps[k]
        cz[k] = pz[k]
        cl[k] = pl[k]
        ch[k] = ph[k]
        bs[k] = ps[k]
        bz[k] = pz[k]
    if j.ngrid > 0:
        # Each block's codes and stored parameters, chosen on sums; then written once.
        if direct and m >= TILE_MIN_BLOCKS:
            # Transposed into a tile (block k = column k, zero-padded past its end), so that the
            # search runs across blocks, as in the strided layout.
            rows = 0
            for k in range(m):
                n = off[k + 1] - off[k]
                rows = n if n > rows else rows
            for k in range(m):
                y = _at(x, off[k], 0, whole, NULL)
                n = off[k + 1] - off[k]
                for r in range(n):
                    tile[r * m + k] = y[r]
                for r in range(n, rows):
                    tile[r * m + k] = 0
            _search(<const_float_up>tile, m, NULL, m, NULL, rows, m, lo, hi, cnt, j, cs, cz, cl, ch,
                    bs, bz, e0)
        else:
            for k in range(m):
                _c_search(x + off[k], whole + off[k] if whole != NULL else NULL, buf, dbuf,
                          off[k + 1] - off[k], lo[k], hi[k], j, cs + k, cz + k, cl + k, ch + k,
                          bs + k, bz + k, e0 + k)
    for k in range(m):
        mk = 0
        _zero64(acc, 4)
        if direct:
            _c_write(_at(x, off[k], 0, whole, NULL), off[k + 1] - off[k], cs[k], cz[k], cl[k], ch[k],
                     bs[k], <float>(cz[k] - bz[k]), out + off[k], dbuf, acc, &mk)
        else:
            _c_pass(x + off[k], NULL, buf, dbuf, off[k + 1] - off[k], PASS_WRITE, cs[k], cz[k], cl[k],
                    ch[k], bs[k], <float>(cz[k] - bz[k]), out + off[k], NULL, acc, &mk)
        e = _lanes64(acc)
        if j.ngrid == 0:
            e0[k] = e
        elif e > e0[k]:
            # The closed form chose a candidate whose written error is above plain min/max's
            # (they differ in the last bits): plain min/max it is.
            bs[k] = ps[k]
            bz[k] = pz[k]
            mk = 0
            _zero64(acc, 4)
            if direct:
                _c_write(_at(x, off[k], 0, whole, NULL), off[k + 1] - off[k], ps[k], pz[k], pl[k],
                         ph[k], ps[k], 0, out + off[k], dbuf, acc, &mk)
            else:
                _c_pass(x + off[k], NULL, buf, dbuf, off[k + 1] - off[k], PASS_WRITE, ps[k], pz[k],
                        pl[k], ph[k], ps[k], 0, out + off[k], NULL, acc, &mk)
            e = _lanes64(acc)
        mx = mk if mk > mx else mx
        scale[k] = bs[k]
        zero_point[k] = bz[k]
        sse[0] = sse[0] + e
        sse_minmax[0] = sse_minmax[0] + e0[k]
    mx_bits[0] = mx


cdef void _c_search(weight_p x, const float* whole, float* buf, float* dbuf, Py_ssize_t n,
                    float lo, float hi, const Job* j, float* cs, int* cz, float* cl, float* ch,
                    float* bs, int* bz, double* e0) noexcept nogil:
    # The range search for one block along it (a long block is read piece by piece): the best
    # grid point's code parameters (cs, cz, cl, ch), its stored (bs, bz), plain min/max's error.
    cdef float gacc[20]
    cdef float gs, gl, gh, fs, cnt = <float>n, st, stt, sr, srt
    cdef int gz, fz, g
    cdef double acc[4]
    cdef double srr, e, best = 0
    for g in range(j.ngrid):
        _params_n(&lo, &hi, j.alphas[g], 1, j, &gs, &gz, &gl, &gh)
        _zero32(gacc, 20)
        _c_pass(x, whole, buf, dbuf, n, PASS_GRID, gs, gz, gl, gh, 0, 0, NULL, gacc, NULL, NULL)
        st = _lanes32(gacc)
        stt = _lanes32(gacc + 4)
        sr = _lanes32(gacc + 8)
        srt = _lanes32(gacc + 12)
        srr = _lanes32(gacc + 16)
        if g == 0:  # plain min/max: its exact error, which is also its sum r*r
            _zero64(acc, 4)
            _c_pass(x, whole, buf, dbuf, n, PASS_ERROR, gs, gz, gl, gh, 0, 0, NULL, NULL, acc, NULL)
            e0[0] = _lanes64(acc)
            srr = e0[0]
        _fit_n(&st, &stt, &sr, &srt, &srr, &cnt, &gs, &gz, 1, j, &fs, &fz, &e)
        if g == 0 or e < best:
            best = e
            cs[0] = gs
            cz[0] = gz
            cl[0] = gl
            ch[0] = gh
            bs[0] = fs
            bz[0] = fz


cdef void _contiguous_task(weight_p src, const Job* j, Py_ssize_t t, float* scratch) noexcept nogil:
    # Task t: blocks [t * chunk, (t + 1) * chunk) in (outer, block) order, a batch at a time.
    cdef float* buf = scratch
    cdef float* dbuf = scratch + BATCH_VALUES
    cdef float* tile = scratch + 2 * BATCH_VALUES
    cdef Py_ssize_t f = t * j.chunk, last = f + j.chunk
    cdef Py_ssize_t b = f % j.nb, f2, b2, start, total, n
    cdef Py_ssize_t per_batch = BATCH_VALUES // j.B
    cdef const float* whole
    cdef int mx = 0, bad = 0
    cdef double sse = 0, sse_minmax = 0
    if last > j.outer * j.nb:
        last = j.outer * j.nb
    # A batch: up to per_batch consecutive blocks (consecutive in memory too), so that even
    # padded to B values each they fit BATCH_VALUES; or one longer block (read piece by piece).
    per_batch = per_batch if per_batch < BATCH_BLOCKS else BATCH_BLOCKS
    per_batch = per_batch if per_batch > 1 else 1
    start = (f // j.nb) * j.L + b * j.B
    while f < last:
        total = 0
        f2 = f
        b2 = b
        while f2 < last and f2 - f < per_batch:
            n = j.L - b2 * j.B if j.L - b2 * j.B < j.B else j.B
            total += n
            f2 += 1
            b2 = b2 + 1 if b2 + 1 < j.nb else 0
        whole = NULL
        if weight_p is not const_float_up:
            if total <= BATCH_VALUES:
                widen(src + start, total, buf)
                whole = buf
        _c_batch(src + start, whole, buf, dbuf, tile, f2 - f, b, j, j.out + start, j.scale + f,
                 j.zero_point + f, &sse, &sse_minmax, &mx, &bad)
        f = f2
        b = b2
        start += total
    j.part_sse[t] = sse
    j.part_minmax[t] = sse_minmax
    j.part_max[t] = ibits_f32(mx)
    j.part_bad[t] = bad


# ----------------------------------------------------------------------------------------------
# Strided layout: a block row (B rows x `inner` columns, one block per column), vectorised along
# the columns. Row r of a block adds to lane r % 4 of its column's sums (lane arrays of SUB).
# The loops take four rows at a time (lanes 0-3), so that each column's parameters and sums are
# loaded and stored once per four values.

cdef inline void _rows4(weight_p x, Py_ssize_t rs, const float* cache, Py_ssize_t cs, Py_ssize_t r,
                        Py_ssize_t w, float* rowbuf, const_float_up* y) noexcept nogil:
    # Rows r .. r + 3 of a sub-span as float32: in place (float32), from the task's widened tile
    # (cache), or widened now into rowbuf (4 x MAX_SPAN floats: a block row too large to keep).
    cdef int k
    for k in range(4):
        if weight_p is const_float_up:
            y[k] = x + (r + k) * rs
        else:
            if cache != NULL:
                y[k] = cache + (r + k) * cs
            else:
                widen(x + (r + k) * rs, w, rowbuf + k * MAX_SPAN)
                y[k] = rowbuf + k * MAX_SPAN


cdef inline const_float_up _row(weight_p x, Py_ssize_t rs, const float* cache, Py_ssize_t cs,
                                Py_ssize_t r, Py_ssize_t w, float* rowbuf) noexcept nogil:
    # One row r, as _rows4.
    if weight_p is const_float_up:
        return x + r * rs
    else:
        if cache != NULL:
            return cache + r * cs
        widen(x + r * rs, w, rowbuf)
        return rowbuf


cdef inline void _s_minmax4(const_float_up y0, const_float_up y1, const_float_up y2,
                            const_float_up y3, Py_ssize_t w, float_rp lo, float_rp hi,
                            float_rp bad) noexcept nogil:
    cdef Py_ssize_t c
    cdef float v0, v1, v2, v3, a, b
    for c in range(w):
        v0 = y0[c]
        v1 = y1[c]
        v2 = y2[c]
        v3 = y3[c]
        a = lo[c]
        a = v0 if v0 < a else a
        a = v1 if v1 < a else a
        a = v2 if v2 < a else a
        a = v3 if v3 < a else a
        lo[c] = a
        b = hi[c]
        b = v0 if v0 > b else b
        b = v1 if v1 > b else b
        b = v2 if v2 > b else b
        b = v3 if v3 > b else b
        hi[c] = b
        bad[c] = bad[c] + ((v0 - v0) + (v1 - v1)) + ((v2 - v2) + (v3 - v3))


cdef inline void _s_minmax1(const_float_up y, Py_ssize_t w, float_rp lo, float_rp hi,
                            float_rp bad) noexcept nogil:
    cdef Py_ssize_t c
    cdef float v
    for c in range(w):
        v = y[c]
        lo[c] = v if v < lo[c] else lo[c]
        hi[c] = v if v > hi[c] else hi[c]
        bad[c] = bad[c] + (v - v)


cdef inline void _s_write4(const_float_up y0, const_float_up y1, const_float_up y2,
                           const_float_up y3, Py_ssize_t w, const_float_rp s, const_int_rp z,
                           const_float_rp lob, const_float_rp hib, const_float_rp ds,
                           const_float_rp off, uchar_rp o0, uchar_rp o1, uchar_rp o2, uchar_rp o3,
                           double_rp l0, double_rp l1, double_rp l2, double_rp l3,
                           float_rp mx) noexcept nogil:
    # Codes of (s, z); errors of the stored (ds, z - off).
    cdef Py_ssize_t c
    cdef float sc, lb, hb, dc, oc, t0, t1, t2, t3, d0, d1, d2, d3, m
    cdef int zc
    for c in range(w):
        sc = s[c]
        lb = lob[c]
        hb = hib[c]
        zc = z[c]
        dc = ds[c]
        oc = off[c]
        t0 = _q(y0[c], sc, lb, hb)
        t1 = _q(y1[c], sc, lb, hb)
        t2 = _q(y2[c], sc, lb, hb)
        t3 = _q(y3[c], sc, lb, hb)
        o0[c] = <unsigned char>(<int>t0 + zc)
        o1[c] = <unsigned char>(<int>t1 + zc)
        o2[c] = <unsigned char>(<int>t2 + zc)
        o3[c] = <unsigned char>(<int>t3 + zc)
        d0 = y0[c] - (t0 + oc) * dc
        d1 = y1[c] - (t1 + oc) * dc
        d2 = y2[c] - (t2 + oc) * dc
        d3 = y3[c] - (t3 + oc) * dc
        l0[c] = l0[c] + <double>d0 * <double>d0
        l1[c] = l1[c] + <double>d1 * <double>d1
        l2[c] = l2[c] + <double>d2 * <double>d2
        l3[c] = l3[c] + <double>d3 * <double>d3
        m = mx[c]
        d0 = fabsf(d0)
        d1 = fabsf(d1)
        d2 = fabsf(d2)
        d3 = fabsf(d3)
        m = d0 if d0 > m else m
        m = d1 if d1 > m else m
        m = d2 if d2 > m else m
        m = d3 if d3 > m else m
        mx[c] = m


cdef inline void _s_write1(const_float_up y, Py_ssize_t w, const_float_rp s, const_int_rp z,
                           const_float_rp lob, const_float_rp hib, const_float_rp ds,
                           const_float_rp off, uchar_rp out, double_rp lane,
                           float_rp mx) noexcept nogil:
    cdef Py_ssize_t c
    cdef float t, d
    for c in range(w):
        t = _q(y[c], s[c], lob[c], hib[c])
        out[c] = <unsigned char>(<int>t + z[c])
        d = y[c] - (t + off[c]) * ds[c]
        lane[c] = lane[c] + <double>d * <double>d
        d = fabsf(d)
        mx[c] = d if d > mx[c] else mx[c]


cdef inline void _s_grid1(const_float_up y, Py_ssize_t w, const_float_rp s, const_float_rp lob,
                          const_float_rp hib, float_rp st, float_rp stt, float_rp sr, float_rp srt,
                          float_rp srr) noexcept nogil:
    # One row's part of a grid point's sums: its codes t and residuals r = x - t s.
    cdef Py_ssize_t c
    cdef float t, r
    for c in range(w):
        t = _q(y[c], s[c], lob[c], hib[c])
        r = y[c] - t * s[c]
        st[c] = st[c] + t
        stt[c] = stt[c] + t * t
        sr[c] = sr[c] + r
        srt[c] = srt[c] + r * t
        srr[c] = srr[c] + r * r


cdef inline void _s_grid_error1(const_float_up y, Py_ssize_t w, const_float_rp s,
                                const_float_rp lob, const_float_rp hib, float_rp st, float_rp stt,
                                float_rp sr, float_rp srt, double_rp lane) noexcept nogil:
    # Grid point 0 (plain min/max): _s_grid1 with the sum of r*r in float64, which is plain
    # min/max's exact error.
    cdef Py_ssize_t c
    cdef float t, r
    for c in range(w):
        t = _q(y[c], s[c], lob[c], hib[c])
        r = y[c] - t * s[c]
        st[c] = st[c] + t
        stt[c] = stt[c] + t * t
        sr[c] = sr[c] + r
        srt[c] = srt[c] + r * t
        lane[c] = lane[c] + <double>r * <double>r


cdef inline double _col64(const double* lanes, Py_ssize_t c) noexcept nogil:
    return (lanes[c] + lanes[SUB + c]) + (lanes[2 * SUB + c] + lanes[3 * SUB + c])


cdef inline float _col32(const float* lanes, Py_ssize_t c) noexcept nogil:
    return (lanes[c] + lanes[SUB + c]) + (lanes[2 * SUB + c] + lanes[3 * SUB + c])


cdef void _s_pass(weight_p x, Py_ssize_t rs, const float* cache, Py_ssize_t cs, float* rowbuf,
                  Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t w, Pass kind, const float* s,
                  const int* z, const float* lob, const float* hib, const float* ds,
                  const float* off, unsigned char* out, Py_ssize_t ors, float* facc, double* dacc,
                  float* mx) noexcept nogil:
    # One pass over rows [r0, r1) of a sub-span (r0 a multiple of 4): out is row r0's first
    # code, facc/dacc lane arrays of SUB, 4 lanes each (PASS_GRID: sum t, t*t, r, r*t, r*r of
    # the codes t and residuals r = x - t s; PASS_GRID0: the same, r*r in dacc).
    cdef const_float_up y[4]
    cdef Py_ssize_t r = r0, l
    while r < r1:
        l = r & 3
        if kind == PASS_WRITE and l == 0 and r + 4 <= r1:
            _rows4(x, rs, cache, cs, r, w, rowbuf, y)
            _s_write4(y[0], y[1], y[2], y[3], w, s, z, lob, hib, ds, off, out, out + ors,
                      out + 2 * ors, out + 3 * ors, dacc, dacc + SUB, dacc + 2 * SUB, dacc + 3 * SUB,
                      mx)
            out += 4 * ors
            r += 4
            continue
        y[0] = _row(x, rs, cache, cs, r, w, rowbuf)
        if kind == PASS_WRITE:
            _s_write1(y[0], w, s, z, lob, hib, ds, off, out, dacc + l * SUB, mx)
            out += ors
        elif kind == PASS_GRID:
            _s_grid1(y[0], w, s, lob, hib, facc + l * SUB, facc + (4 + l) * SUB, facc + (8 + l) * SUB,
                     facc + (12 + l) * SUB, facc + (16 + l) * SUB)
        else:
            _s_grid_error1(y[0], w, s, lob, hib, facc + l * SUB, facc + (4 + l) * SUB,
                           facc + (8 + l) * SUB, facc + (12 + l) * SUB, dacc + l * SUB)
        r += 1


cdef void _s_write(weight_p x, Py_ssize_t rs, const float* cache, Py_ssize_t cs, float* rowbuf,
                   Py_ssize_t n, Py_ssize_t w, const float* s, const int* z, const float* lob,
                   const float* hib, const float* ds, const float* off, const Job* j,
                   unsigned char* out, unsigned char* tbytes, double* lanes,
                   float* mx) noexcept nogil:
    # Codes of (s, z) for a sub-span (out: its first code), error lanes and per-column max
    # |error| of the stored (ds, z - off). Codes go to rows of `inner` bytes, or (transposed)
    # through tbytes to columns of L bytes (L / 2 packed).
    cdef Py_ssize_t rp = 0, rq
    _zero64(lanes, 4 * SUB)
    _zero32(mx, w)
    if not j.transpose:
        _s_pass(x, rs, cache, cs, rowbuf, 0, n, w, PASS_WRITE, s, z, lob, hib, ds, off, out, j.inner,
                NULL, lanes, mx)
        return
    while rp < n:
        rq = rp + TROWS if rp + TROWS < n else n
        _s_pass(x, rs, cache, cs, rowbuf, rp, rq, w, PASS_WRITE, s, z, lob, hib, ds, off, tbytes, SUB,
                NULL, lanes, mx)
        transpose_bytes(tbytes, SUB, out + (rp // 2 if j.pack else rp), j.tstride, rq - rp, w, j.pack)
        rp = rq


cdef void _search(weight_p x, Py_ssize_t rs, const float* cache, Py_ssize_t cs, float* rowbuf,
                  Py_ssize_t n, Py_ssize_t w, const float* lo, const float* hi, const float* cnt,
                  const Job* j, float* bcs, int* bcz, float* bcl, float* bch, float* bs, int* bz,
                  double* e0) noexcept nogil:
    # The range search for w <= SUB blocks laid out as columns of n rows (a sub-span of a block
    # row, or a transposed batch of contiguous blocks, zero-padded past each block's cnt values:
    # zeros add nothing to any sum). bcs/bcz/bcl/bch come in as plain min/max's parameters, grid
    # point 0, whose exact error goes to e0. Out: the best grid point's code parameters (bcs,
    # bcz, bcl, bch) and its stored ones (bs, bz), chosen on the closed-form errors of _fit_n.
    cdef float gs[SUB]
    cdef float gl[SUB]
    cdef float gh[SUB]
    cdef float fs[SUB]
    cdef float st[SUB]
    cdef float stt[SUB]
    cdef float sr[SUB]
    cdef float srt[SUB]
    cdef float acc[20 * SUB]
    cdef int gz[SUB]
    cdef int fz[SUB]
    cdef double srr[SUB]
    cdef double fe[SUB]
    cdef double eb[SUB]
    cdef double lanes[4 * SUB]
    cdef Py_ssize_t c
    cdef int g
    for g in range(j.ngrid):
        if g == 0:
            _zero32(acc, 16 * SUB)
            _zero64(lanes, 4 * SUB)
            _s_pass(x, rs, cache, cs, rowbuf, 0, n, w, PASS_GRID0, bcs, bcz, bcl, bch, NULL, NULL, NULL, 0,
                    acc, lanes, NULL)
            for c in range(w):
                gs[c] = bcs[c]
                gz[c] = bcz[c]
                e0[c] = _col64(lanes, c)
                srr[c] = e0[c]
        else:
            _params_n(lo, hi, j.alphas[g], w, j, gs, gz, gl, gh)
            _zero32(acc, 20 * SUB)
            _s_pass(x, rs, cache, cs, rowbuf, 0, n, w, PASS_GRID, gs, gz, gl, gh, NULL, NULL, NULL, 0,
                    acc, NULL, NULL)
            for c in range(w):
                srr[c] = _col32(acc + 16 * SUB, c)
        for c in range(w):
            st[c] = _col32(acc, c)
            stt[c] = _col32(acc + 4 * SUB, c)
            sr[c] = _col32(acc + 8 * SUB, c)
            srt[c] = _col32(acc + 12 * SUB, c)
        _fit_n(st, stt, sr, srt, srr, cnt, gs, gz, w, j, fs, fz, fe)
        for c in range(w):
            if g == 0:
                eb[c] = fe[c]
                bs[c] = fs[c]
                bz[c] = fz[c]
            elif fe[c] < eb[c]:
                eb[c] = fe[c]
                bcs[c] = gs[c]
                bcz[c] = gz[c]
                bcl[c] = gl[c]
                bch[c] = gh[c]
                bs[c] = fs[c]
                bz[c] = fz[c]


cdef void _s_span(weight_p x, Py_ssize_t rs, const float* cache, Py_ssize_t cs, float* rowbuf,
                  Py_ssize_t n, Py_ssize_t w, const float* lo, const float* hi, const Job* j,
                  unsigned char* out, unsigned char* tbytes, Py_ssize_t pidx,
                  double* sse, double* sse_minmax, float* task_max) noexcept nogil:
    # One sub-span of w <= SUB columns of a block row: parameters, [search], codes and sums.
    # pidx: the first column's index into the scale and zero-point arrays.
    cdef float ps[SUB]
    cdef float pl[SUB]
    cdef float ph[SUB]
    cdef int pz[SUB]
    cdef float code_s[SUB]
    cdef float cl[SUB]
    cdef float ch[SUB]
    cdef int cz[SUB]
    cdef float bs[SUB]
    cdef int bz[SUB]
    cdef float off[SUB]
    cdef float mx[SUB]
    cdef float cnt[SUB]
    cdef double lanes[4 * SUB]
    cdef double one[4 * SUB]
    cdef double e0[SUB]
    cdef double e[SUB]
    cdef Py_ssize_t c
    cdef float m = task_max[0]
    cdef float zero = 0
    _params_n(lo, hi, 1.0, w, j, ps, pz, pl, ph)
    for c in range(w):
        code_s[c] = ps[c]
        cz[c] = pz[c]
        cl[c] = pl[c]
        ch[c] = ph[c]
        bs[c] = ps[c]
        bz[c] = pz[c]
    if j.ngrid > 0:
        for c in range(SUB):
            cnt[c] = <float>n
        _search(x, rs, cache, cs, rowbuf, n, w, lo, hi, cnt, j, code_s, cz, cl, ch, bs, bz, e0)
    for c in range(w):
        off[c] = <float>(cz[c] - bz[c])
    _s_write(x, rs, cache, cs, rowbuf, n, w, code_s, cz, cl, ch, bs, off, j, out, tbytes, lanes, mx)
    for c in range(w):
        e[c] = _col64(lanes, c)
        if j.ngrid == 0:
            e0[c] = e[c]
        elif e[c] > e0[c]:
            # The written error is above plain min/max's (the closed form and the written error
            # differ in their last bits): this column is written again with plain min/max.
            bs[c] = ps[c]
            bz[c] = pz[c]
            _s_write(x + c, rs, cache + c if cache != NULL else NULL, cs, rowbuf, n, 1, &ps[c], &pz[c],
                     &pl[c], &ph[c], &ps[c], &zero, j, out + (c * j.tstride if j.transpose else c), tbytes,
                     one, &mx[c])
            e[c] = _col64(one, 0)
    for c in range(w):
        sse[0] = sse[0] + e[c]
        sse_minmax[0] = sse_minmax[0] + e0[c]
        m = mx[c] if mx[c] > m else m
        j.scale[pidx + c] = bs[c]
        j.zero_point[pidx + c] = bz[c]
    task_max[0] = m


cdef void _strided_chunk(weight_p src, const Job* j, Py_ssize_t t, float* scratch) noexcept nogil:
    # Chunk t: block row t // spans (block b of outer index o), columns [c0, c0 + W).
    cdef Py_ssize_t row = t // j.spans
    cdef Py_ssize_t o = row // j.nb
    cdef Py_ssize_t b = row - o * j.nb
    cdef Py_ssize_t r0 = b * j.B
    cdef Py_ssize_t n = j.L - r0 if j.L - r0 < j.B else j.B
    cdef Py_ssize_t c0 = (t - row * j.spans) * j.chunk
    cdef Py_ssize_t W = j.inner - c0 if j.inner - c0 < j.chunk else j.chunk
    cdef Py_ssize_t rs = j.inner, r = 0, c, cc = 0, w
    cdef float* lo = scratch
    cdef float* hi = lo + MAX_SPAN
    cdef float* bad = hi + MAX_SPAN
    cdef float* rowbuf = bad + MAX_SPAN
    cdef unsigned char* tbytes = <unsigned char*>(rowbuf + 4 * MAX_SPAN)
    cdef float* tile = rowbuf + 4 * MAX_SPAN + TROWS * SUB // 4
    cdef float* cache = NULL
    cdef const_float_up y[4]
    cdef weight_p x = src + (o * j.L + r0) * j.inner + c0
    cdef unsigned char* out
    cdef double sse = 0, sse_minmax = 0
    cdef float task_max = 0, task_bad = 0
    cdef int k
    # Pass 1 walks the rows (long runs through memory): per-column min/max and non-finite
    # markers; 16-bit input is widened into the task's tile on the way when it fits.
    if weight_p is not const_float_up:
        if n * W <= CHUNK_VALUES:
            cache = tile
            for r in range(n):
                widen(x + r * rs, W, cache + r * W)
    y[0] = _row(x, rs, cache, W, 0, W, rowbuf)
    for c in range(W):
        lo[c] = y[0][c]
        hi[c] = y[0][c]
        bad[c] = 0
    r = 0
    while r + 4 <= n:
        _rows4(x, rs, cache, W, r, W, rowbuf, y)
        _s_minmax4(y[0], y[1], y[2], y[3], W, lo, hi, bad)
        r += 4
    while r < n:
        _s_minmax1(_row(x, rs, cache, W, r, W, rowbuf), W, lo, hi, bad)
        r += 1
    for c in range(W):
        task_bad = task_bad + bad[c]
    while cc < W:
        w = W - cc if W - cc < SUB else SUB
        # Codes [inner, L] when transposed (outer is 1), else x's order. The parameters are
        # (outer, nb, inner) either way: a block row's go to consecutive addresses, where
        # [inner, nb] would put each column's on its own cache line (the caller transposes).
        if j.transpose:
            out = j.out + (c0 + cc) * j.tstride + (r0 // 2 if j.pack else r0)
        else:
            out = j.out + (o * j.L + r0) * j.inner + c0 + cc
        _s_span(x + cc, rs, cache + cc if cache != NULL else NULL, W, rowbuf, n, w, lo + cc, hi + cc,
                j, out, tbytes, row * j.inner + c0 + cc, &sse, &sse_minmax, &task_max)
        cc += w
    j.part_sse[t] = sse
    j.part_minmax[t] = sse_minmax
    j.part_max[t] = task_max
    j.part_bad[t] = task_bad


cdef void _run(weight_p src, Job* j, Py_ssize_t nchunks, int n_threads):
    # Strided, a task is j.block_rows consecutive block rows of one span of columns. Transposed
    # codes go to columns L bytes apart (L / 2 packed; 2 KiB for K = 2048: every column's bytes
    # on the same few cache sets), a block row's at a time: with spans of up to 4096 columns,
    # half lines written by one block row had left the cache before the next block row filled
    # them (1.3x the pass's time on a [2048, 5632] weight). Narrow spans (TRANSPOSED_SPAN) and
    # several block rows per task write each line whole while it is in cache. Every chunk keeps
    # its own partial sums, so the totals do not depend on the grouping, nor on which thread
    # runs a task: tasks are handed out as threads come free (dynamic), so that a thread the
    # system deschedules (another process on the core) holds up only its current task.
    cdef Py_ssize_t t, k, chunk, ntasks
    if j.inner == 1:
        for t in prange(nchunks, nogil=True, schedule="dynamic", num_threads=n_threads):
            _contiguous_task(src, j, t, j.scratch + omp_get_thread_num() * j.scratch_len)
        return
    ntasks = (nchunks // j.spans + j.block_rows - 1) // j.block_rows * j.spans
    for t in prange(ntasks, nogil=True, schedule="dynamic", num_threads=n_threads):
        for k in range(j.block_rows):
            chunk = ((t // j.spans) * j.block_rows + k) * j.spans + t % j.spans
            if chunk < nchunks:
                _strided_chunk(src, j, chunk, j.scratch + omp_get_thread_num() * j.scratch_len)


def quantize_blocks(x, int kind, Py_ssize_t block_size, int qmin, int qmax, bint symmetric,
                    const float[::1] alphas, bint half_scale, bint transpose, bint pack,
                    unsigned char[::1] out, float[::1] scale, int[::1] zero_point,
                    double[::1] totals, int n_threads):
    """Block-wise codes, scales and zero points of x (viewed as (outer, L, inner), blocks of
    block_size along L), see the module docstring. x and kind as in _reduce.minmax.

    alphas: the search grid, 1.0 first (empty: no search). out: x.size code bytes, in x's order, or
    [inner, L] when transpose (outer must be 1); pack (with transpose, inner > 1, codes in
    [0, 15], L and block_size even) writes them two per byte, low nibble first: [inner, L / 2]
    bytes, onnxruntime's MatMulNBits layout. scale, zero_point: (outer, ceil(L / block_size),
    inner) in C order, also when transposed. totals: sse, sse of plain min/max, max abs error. Returns True when x holds
    a NaN or an infinity (the results are then meaningless).
    """
    cdef Weights w
    cdef Job j
    cdef Py_ssize_t nchunks, t, per_thread = 0
    cdef double[::1] part_sse, part_minmax
    cdef float[::1] part_max, part_bad, scratch
    cdef double sse = 0, sse_minmax = 0
    cdef float mx = 0, bad = 0
    keep = weight_view(x, kind, &w)
    j.outer = w.outer
    j.L = w.C
    j.inner = w.inner
    j.B = block_size
    j.nb = (w.C + block_size - 1) // block_size
    j.qmin = qmin
    j.qmax = qmax
    j.symmetric = symmetric
    j.half = half_scale
    j.transpose = transpose and w.inner > 1
    j.pack = pack
    if pack and not (j.transpose and 0 <= qmin and qmax <= 15 and w.C % 2 == 0 and block_size % 2 == 0):
        raise ValueError("pack needs transposed codes of a 2-D tensor (inner > 1) in [0, 15], "
                         "an even length and an even block size")
    j.tstride = w.C // 2 if pack else w.C
    if out.shape[0] < (w.outer * w.C * w.inner) // (2 if pack else 1):
        raise ValueError("out is too small for the codes")
    j.ngrid = alphas.shape[0]
    if j.ngrid > 0 and alphas[0] != 1.0:
        raise ValueError("the search grid starts with 1.0 (plain min/max)")
    j.alphas = &alphas[0] if alphas.shape[0] > 0 else NULL
    j.out = &out[0]
    j.scale = &scale[0]
    j.zero_point = &zero_point[0]
    if w.inner == 1:
        j.chunk = CHUNK_VALUES // block_size if CHUNK_VALUES // block_size > 1 else 1
        j.spans = 0
        j.block_rows = 1
        nchunks = (j.outer * j.nb + j.chunk - 1) // j.chunk
        per_thread = 3 * BATCH_VALUES
    else:
        j.chunk = CHUNK_VALUES // block_size
        j.chunk = j.chunk if j.chunk > MIN_SPAN else MIN_SPAN
        j.chunk = j.chunk if j.chunk < MAX_SPAN else MAX_SPAN
        if j.transpose and j.chunk > TRANSPOSED_SPAN:
            j.chunk = TRANSPOSED_SPAN
        j.spans = (j.inner + j.chunk - 1) // j.chunk
        nchunks = j.outer * j.nb * j.spans
        # Transposed: TASK_ROWS rows of values per task, but not so few tasks that threads wait
        # (a [2048, 256] weight has 64 block rows of 32: 8 tasks of 8 would idle 16 threads).
        j.block_rows = TASK_ROWS // block_size if j.transpose else 1
        if j.block_rows > j.nb * j.spans // (MIN_TASKS_PER_THREAD * n_threads):
            j.block_rows = j.nb * j.spans // (MIN_TASKS_PER_THREAD * n_threads)
        j.block_rows = j.block_rows if j.block_rows > 1 else 1
        per_thread = 7 * MAX_SPAN + TROWS * SUB // 4 + (CHUNK_VALUES if kind != 0 else 0)
    part_sse = clone(array("d"), nchunks, False)
    part_minmax = clone(array("d"), nchunks, False)
    part_max = clone(array("f"), nchunks, False)
    part_bad = clone(array("f"), nchunks, False)
    scratch = clone(array("f"), per_thread * n_threads + 1, False)
    j.part_sse = &part_sse[0]
    j.part_minmax = &part_minmax[0]
    j.part_max = &part_max[0]
    j.part_bad = &part_bad[0]
    j.scratch = &scratch[0]
    j.scratch_len = per_thread
    if w.kind == KIND_FLOAT16:
        _run(<const_f16_up>w.data, &j, nchunks, n_threads)
    elif w.kind == KIND_BFLOAT16:
        _run(<const_bf16_up>w.data, &j, nchunks, n_threads)
    else:
        _run(<const_float_up>w.data, &j, nchunks, n_threads)
    # The chunks' sums in chunk order (the order the totals are defined in).
    for t in range(nchunks):
        sse += part_sse[t]
        sse_minmax += part_minmax[t]
        mx = part_max[t] if part_max[t] > mx else mx
        bad = bad + part_bad[t]
    totals[0] = sse
    totals[1] = sse_minmax
    totals[2] = mx
    return not (bad == 0)  # NaN (strided markers) or 1 (contiguous flags)
