"""Error-compensated rounding (GPTQ's inner loop): the rows of one batch of a weight [K, N], in
the order they are quantized, each row's rounding error spread over the rows after it.

Every column n is independent: row i's code q = saturate(rint(w / s) + z) (round half to even,
in double, w being the row's value after the earlier rows' corrections), its error
e = (w - (q - z) * s) / d_i with d_i = U[i, i], and each later row j of the batch loses
U[i, j] * e. The caller applies the batch's errors to the rows after it (one matrix product).
Columns are split among the threads; each thread runs the batch's rows over its own columns,
so the result does not depend on the thread count.
"""
from cython.parallel cimport prange
from libc.math cimport rint

from _restrict cimport const_double_rp, double_rp

cdef enum:
    COLUMNS = 256  # columns per parallel task: each task's rows stay in cache across the batch


cdef inline void _subtract_scaled(double_rp row, const_double_rp e, double h, Py_ssize_t count) noexcept nogil:
    """row -= h * e (distinct arrays: the loop vectorises)."""
    cdef Py_ssize_t c
    for c in range(count):
        row[c] = row[c] - h * e[c]


def compensate_rows(double[:, ::1] w, const double[:, ::1] u, const float[:, ::1] scale, const int[:, ::1] zero_point,
                    const int[::1] group, int qmin, int qmax, unsigned char[:, ::1] codes, double[:, ::1] err,
                    int n_threads):
    """Codes and scaled errors of the batch's rows (w: [b, N], updated in place; u: the batch's
    [b, b] block of the upper Cholesky factor of H^-1; scale/zero_point: [G, N] per group of
    rows; group: each row's group). Codes are written as bytes (a signed code's two's
    complement)."""
    cdef Py_ssize_t rows = w.shape[0], n = w.shape[1]
    cdef Py_ssize_t tasks = (n + COLUMNS - 1) // COLUMNS
    cdef Py_ssize_t t, i, j, c, c0, c1
    cdef double q, s, z, e, d, h
    for t in prange(tasks, nogil=True, num_threads=n_threads, schedule="static"):
        c0 = t * COLUMNS
        c1 = c0 + COLUMNS
        if c1 > n:
            c1 = n
        for i in range(rows):
            d = u[i, i]
            for c in range(c0, c1):
                s = scale[group[i], c]
                z = zero_point[group[i], c]
                q = rint(w[i, c] / s) + z
                if q < qmin:
                    q = qmin
                elif q > qmax:
                    q = qmax
                codes[i, c] = <unsigned char>(<int>q)
                e = (w[i, c] - (q - z) * s) / d
                err[i, c] = e
            for j in range(i + 1, rows):
                _subtract_scaled(&w[j, c0], &err[i, c0], u[i, j], c1 - c0)
