"""Histograms for calibration: many activations, folded in sample by sample.

Each thread counts into its own bins (no atomics), and the per-thread bins are added in thread
order at the end: integer sums, so the result is the same for any thread count.
"""
from cython.parallel cimport prange
from libc.math cimport floor
from libc.stdlib cimport calloc, free

from _openmp cimport omp_get_thread_num
from _restrict cimport const_float_up, float_u

cdef enum:
    CHUNK = 65536  # values per parallel task


def histogram(const float[::1] x, double lo, double hi, long long[::1] counts, int n_threads):
    """counts[b] += how many values of x fall in bin b of [lo, hi) split into len(counts) bins.

    b = floor((x - lo) * (nbins / (hi - lo))) in double precision, clamped to [0, nbins - 1], so
    values below lo count in the first bin and values at or above hi in the last. NaN is not
    counted (the caller refuses it before).
    """
    cdef Py_ssize_t n = x.shape[0], nbins = counts.shape[0]
    cdef Py_ssize_t ntasks = (n + CHUNK - 1) // CHUNK, t, i, b, stop
    cdef int nthreads = n_threads if n_threads > 0 else 1
    cdef double scale = nbins / (hi - lo)
    cdef double v
    cdef long long* local
    cdef long long* mine
    cdef const float_u* src
    if n == 0:
        return
    if not (hi > lo):
        raise ValueError("histogram range must have hi > lo")
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
                v = (<double>src[i] - lo) * scale
                if v != v:
                    continue
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
