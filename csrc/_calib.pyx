"""Kernels of activation calibration (quantrs.ranges).

- finite_minmax / finite_histogram: the min, max and histogram of the *included* values of a
  float32 activation, |x| < limit. NaN, +-inf and "mask" values (|x| >= limit, e.g. the
  -3.4e38 = finfo(float32).min that attention masks add to scores) are excluded and counted,
  in the same single pass that finds the min and max.
- entropy_divergences: onnxruntime's entropy (KL) threshold search, every candidate window's
  divergence in O(quantized bins) from prefix sums instead of O(bins).

Inputs are validated by quantrs.kernels before anything here runs; kernels never raise (but on
allocation failure).
"""
from cython.parallel cimport prange
from libc.float cimport FLT_MAX
from libc.math cimport INFINITY, fabsf, floor, log
from libc.stdlib cimport calloc, free, malloc

from _openmp cimport omp_get_thread_num
from _restrict cimport float_u
from _scratch cimport float_zeros, int_zeros

cdef enum:
    CHUNK = 65536  # values per parallel task
    LANES = 8      # independent min/max accumulators per task (the loop body vectorises)


cdef inline void _finite_run(const float_u* x, Py_ssize_t n, float limit, float* lo_out,
                             float* hi_out, int* excluded_out, int* nonfinite_out) noexcept nogil:
    # Branch-free: an excluded value becomes +inf for the min and -inf for the max, and adds 1
    # to the lane's counters (int: a task holds at most CHUNK values). `a < limit` is false for
    # NaN, so NaN is excluded; `a <= FLT_MAX` is false exactly for NaN and +-inf.
    cdef float lo[LANES]
    cdef float hi[LANES]
    cdef int bad[LANES]
    cdef int nonfinite[LANES]
    cdef float v, a, w, u
    cdef bint ok
    cdef Py_ssize_t i = 0, k
    for k in range(LANES):
        lo[k] = INFINITY
        hi[k] = -INFINITY
        bad[k] = 0
        nonfinite[k] = 0
    while i + LANES <= n:
        for k in range(LANES):
            v = x[i + k]
            a = fabsf(v)
            ok = a < limit
            w = v if ok else INFINITY
            u = v if ok else -INFINITY
            lo[k] = w if w < lo[k] else lo[k]
            hi[k] = u if u > hi[k] else hi[k]
            bad[k] += 0 if ok else 1
            nonfinite[k] += 0 if a <= FLT_MAX else 1
        i += LANES
    while i < n:
        v = x[i]
        a = fabsf(v)
        ok = a < limit
        w = v if ok else INFINITY
        u = v if ok else -INFINITY
        lo[0] = w if w < lo[0] else lo[0]
        hi[0] = u if u > hi[0] else hi[0]
        bad[0] += 0 if ok else 1
        nonfinite[0] += 0 if a <= FLT_MAX else 1
        i += 1
    for k in range(1, LANES):
        lo[0] = lo[k] if lo[k] < lo[0] else lo[0]
        hi[0] = hi[k] if hi[k] > hi[0] else hi[0]
        bad[0] += bad[k]
        nonfinite[0] += nonfinite[k]
    lo_out[0] = lo[0]
    hi_out[0] = hi[0]
    excluded_out[0] = bad[0]
    nonfinite_out[0] = nonfinite[0]


def finite_minmax(const float[::1] x, float limit, int n_threads):
    """(lo, hi, nonfinite, extreme) over x: the min and max of the values with |v| < limit, how
    many values are NaN or +-inf, and how many are finite with |v| >= limit.

    lo = +inf and hi = -inf when no value is included. A zero min or max is +0.0 (never -0.0),
    so the result does not depend on the order the values are visited in.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t ntasks = (n + CHUNK - 1) // CHUNK, t, start, stop
    cdef float[::1] part = float_zeros(2 * ntasks + 2)  # lo, hi of each task
    cdef int[::1] counts = int_zeros(2 * ntasks + 2)  # excluded, non-finite of each task
    cdef const float_u* src
    cdef float lo = INFINITY, hi = -INFINITY
    cdef long long excluded = 0, nonfinite = 0
    if n == 0:
        return lo, hi, 0, 0
    src = <const float_u*>&x[0]
    for t in prange(ntasks, nogil=True, schedule="static", num_threads=n_threads if n_threads > 0 else 1):
        start = t * CHUNK
        stop = start + CHUNK
        if stop > n:
            stop = n
        _finite_run(src + start, stop - start, limit, &part[2 * t], &part[2 * t + 1],
                    &counts[2 * t], &counts[2 * t + 1])
    for t in range(ntasks):
        if part[2 * t] < lo:
            lo = part[2 * t]
        if part[2 * t + 1] > hi:
            hi = part[2 * t + 1]
        excluded += counts[2 * t]
        nonfinite += counts[2 * t + 1]
    lo = lo + 0.0  # -0.0 -> +0.0
    hi = hi + 0.0
    return lo, hi, nonfinite, excluded - nonfinite


def finite_histogram(const float[::1] x, double lo, double hi, float limit, long long[::1] counts,
                     int n_threads):
    """counts[b] += how many values of x with |v| < limit fall in bin b of [lo, hi) split into
    len(counts) bins; NaN, +-inf and |v| >= limit are skipped.

    b = floor((v - lo) * (nbins / (hi - lo))) in double precision, clamped to [0, nbins - 1]
    (as _hist.histogram). Each thread counts into its own bins, added in thread order: integer
    sums, the same for any thread count.
    """
    cdef Py_ssize_t n = x.shape[0], nbins = counts.shape[0]
    cdef Py_ssize_t ntasks = (n + CHUNK - 1) // CHUNK, t, i, b, stop
    cdef int nthreads = n_threads if n_threads > 0 else 1
    cdef double scale
    cdef double v
    cdef float f
    cdef long long* local
    cdef long long* mine
    cdef const float_u* src
    if n == 0:
        return
    if not (hi > lo):
        raise ValueError("histogram range must have hi > lo")
    scale = nbins / (hi - lo)
    src = <const float_u*>&x[0]
    local = <long long*>calloc(nthreads * nbins, sizeof(long long))
    if local == NULL:
        raise MemoryError()
    try:
        for t in prange(ntasks, nogil=True, schedule="static", num_threads=nthreads):
            mine = local + omp_get_thread_num() * nbins
            stop = (t + 1) * CHUNK
            if stop > n:
                stop = n
            for i in range(t * CHUNK, stop):
                f = src[i]
                if not (fabsf(f) < limit):
                    continue
                v = (<double>f - lo) * scale
                if v < 0:
                    b = 0
                elif v >= nbins:
                    b = nbins - 1
                else:
                    b = <Py_ssize_t>floor(v)
                mine[b] += 1
        for t in range(nthreads):
            for b in range(nbins):
                counts[b] += local[t * nbins + b]
    finally:
        free(local)


# --------------------------------------------------------------------------------------------
# Entropy: onnxruntime's HistogramCollector.get_entropy_threshold, divergence by divergence.
#
# The histogram h has N bins over [-T, T]; z = N // 2. Candidate i (nq // 2 <= i <= z) is the
# window [s, e) = [z - i, min(z + i + 1, N)) of L = e - s bins. Its distributions, as
# onnxruntime builds them:
#   p = h[s:e] with everything left of s added to p[0] and right of e to p[L - 1];
#   the window cut into nq levels of m = L // nq bins (the L - nq m remainder bins are in the
#   last level's mass but get no q), level k's mass Q_k spread as the *integer* floor(Q_k /
#   n_k) over all m bins of the level, n_k = non-zero p bins of the level (q = 0 when n_k = 0);
#   both smoothed: zeros -> EPS, non-zeros -= EPS * zeros / non-zeros (sums unchanged);
#   KL(p || q) of the normalised smoothed distributions.
# With P = sum p (all the values) and S = sum q, KL = (A - B) / P - log P + log S, where
# A = sum p~ log p~ and B = sum p~ log q~. q~ is constant on a level, so B takes one log per
# level; A takes the interior bins' sum of f(h - e1) (f(x) = x log x, e1 = EPS * zeros /
# non-zeros) from prefix sums of f(h), f'(h), f''(h) and f'''(h) (Taylor, error < e1^4 / (12
# h^3) per bin, below 1e-13 when e1 <= TAYLOR_MAX) or, for sparse windows (larger e1), bin by bin
# over the window's non-zero bins. Everything is float64; onnxruntime computes in float32.

cdef double EPS = 0.0001  # onnxruntime's smooth_distribution default
cdef double TAYLOR_MAX = 0.001


cdef inline double _xlogx(double v) noexcept nogil:
    return v * log(v)


def entropy_divergences(const long long[::1] hist, int nq, double[::1] out):
    """out[i - nq // 2] = the KL divergence of candidate window i (nq // 2 <= i <= N // 2), inf
    where onnxruntime's smoothing gives up (a distribution of zeros). hist: non-negative counts,
    N = len(hist) >= nq >= 2; len(out) == N // 2 - nq // 2 + 1."""
    cdef Py_ssize_t N = hist.shape[0], z = N // 2, half = nq // 2
    cdef Py_ssize_t ncand = z - half + 1
    cdef Py_ssize_t j, c, i, s, e, L, m, k, a, b, rem, nzcount
    cdef double* H = <double*>malloc((N + 1) * 6 * sizeof(double))
    cdef Py_ssize_t* Z = <Py_ssize_t*>malloc((N + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* nzi = <Py_ssize_t*>malloc((N + 1) * sizeof(Py_ssize_t))
    cdef double* F0
    cdef double* F1
    cdef double* F2
    cdef double* F3
    cdef double* HV
    cdef double hv, total, left, right, p0, pL, e1, e1q, A, B, Q, P, v, qs, S, logeps
    cdef Py_ssize_t nz_p, zc_p, nz_k, nz_q, nz_rem, rem_bins
    cdef bint last_in_levels
    if H == NULL or Z == NULL or nzi == NULL:
        free(H)
        free(Z)
        free(nzi)
        raise MemoryError()
    F0 = H + (N + 1)
    F1 = F0 + (N + 1)
    F2 = F1 + (N + 1)
    F3 = F2 + (N + 1)
    HV = F3 + (N + 1)  # the counts as doubles
    logeps = log(EPS)
    with nogil:
        H[0] = 0
        F0[0] = 0
        F1[0] = 0
        F2[0] = 0
        F3[0] = 0
        Z[0] = 0
        nzcount = 0
        for j in range(N):
            hv = <double>hist[j]
            HV[j] = hv
            H[j + 1] = H[j] + hv
            if hv != 0:
                nzi[nzcount] = j
                nzcount += 1
                F0[j + 1] = F0[j] + _xlogx(hv)
                F1[j + 1] = F1[j] + log(hv) + 1.0
                F2[j + 1] = F2[j] + 1.0 / hv
                F3[j + 1] = F3[j] + 1.0 / (hv * hv)
            else:
                F0[j + 1] = F0[j]
                F1[j + 1] = F1[j]
                F2[j + 1] = F2[j]
                F3[j + 1] = F3[j]
            Z[j + 1] = nzcount
        total = H[N]
        for c in range(ncand):
            i = half + c
            s = z - i
            e = z + i + 1
            if e > N:
                e = N
            L = e - s
            m = L // nq
            if total <= 0:
                out[c] = INFINITY
                continue
            left = H[s]
            right = total - H[e]
            p0 = HV[s] + left
            pL = HV[e - 1] + right
            # Non-zero bins of p: h's in the window, its two end bins replaced by p0 and pL.
            nz_p = (Z[e] - Z[s]) - (HV[s] != 0) - (HV[e - 1] != 0) + (p0 != 0) + (pL != 0)
            zc_p = L - nz_p
            e1 = EPS * zc_p / nz_p
            # A: the zeros, the two end bins, the interior's non-zero bins.
            A = zc_p * (EPS * logeps)
            if p0 != 0:
                A += _xlogx(p0 - e1)
            if pL != 0:
                A += _xlogx(pL - e1)
            if e1 <= TAYLOR_MAX:
                A += ((F0[e - 1] - F0[s + 1]) - e1 * (F1[e - 1] - F1[s + 1])
                      + (e1 * e1 / 2.0) * (F2[e - 1] - F2[s + 1])
                      + (e1 * e1 * e1 / 6.0) * (F3[e - 1] - F3[s + 1]))
            else:
                for k in range(Z[s + 1], Z[e - 1]):
                    A += _xlogx(HV[nzi[k]] - e1)
            # Levels: integer q per level, non-zero q bins, S = sum q.
            rem = s + nq * m  # first remainder bin (== e when there is none)
            last_in_levels = rem == e
            nz_q = 0
            S = 0
            for k in range(nq):
                a = s + k * m
                b = a + m
                Q = H[b] - H[a]
                if k == nq - 1:
                    Q += H[e] - H[rem]
                nz_k = Z[b] - Z[a]
                if k == 0:
                    nz_k += (p0 != 0) - (HV[s] != 0)
                if k == nq - 1 and last_in_levels:
                    nz_k += (pL != 0) - (HV[e - 1] != 0)
                v = floor(Q / nz_k) if nz_k > 0 else 0.0
                if v > 0:
                    nz_q += m
                    S += m * v
            if nz_q == 0:
                out[c] = INFINITY
                continue
            e1q = EPS * (L - nz_q) / nz_q
            # B: each level's smoothed p mass times log of its smoothed q (second pass: e1q
            # needs every level's q first).
            B = 0
            for k in range(nq):
                a = s + k * m
                b = a + m
                Q = H[b] - H[a]
                P = Q
                if k == nq - 1:
                    Q += H[e] - H[rem]
                nz_k = Z[b] - Z[a]
                if k == 0:
                    nz_k += (p0 != 0) - (HV[s] != 0)
                    P += left
                if k == nq - 1 and last_in_levels:
                    nz_k += (pL != 0) - (HV[e - 1] != 0)
                    P += right
                v = floor(Q / nz_k) if nz_k > 0 else 0.0
                qs = (v - e1q) if v > 0 else EPS
                B += (P + EPS * (m - nz_k) - e1 * nz_k) * log(qs)
            if not last_in_levels:
                rem_bins = e - rem
                P = (H[e] - H[rem]) + right
                nz_rem = (Z[e] - Z[rem]) + (pL != 0) - (HV[e - 1] != 0)
                B += (P + EPS * (rem_bins - nz_rem) - e1 * nz_rem) * logeps
            out[c] = (A - B) / total - log(total) + log(S)
    free(H)
    free(Z)
    free(nzi)
