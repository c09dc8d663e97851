# Small scratch buffers for per-task partial results (allocated with the GIL, before any
# parallel region). Inline, so no module has to import another at run time.
from cpython.array cimport array, clone

cdef inline float[::1] float_zeros(Py_ssize_t n):
    return clone(array("f"), n, True)

cdef inline double[::1] double_zeros(Py_ssize_t n):
    return clone(array("d"), n, True)

cdef inline int[::1] int_zeros(Py_ssize_t n):
    return clone(array("i"), n, True)
