# Restrict-qualified pointer types. Kernels that write bytes (unsigned char may alias anything)
# or read per-channel parameter arrays take these, so the C compiler knows the arrays do not
# overlap and can vectorise the loops.
cdef extern from *:
    ctypedef const float* const_float_rp "const float * __restrict__"
    ctypedef const int* const_int_rp "const int * __restrict__"
    ctypedef float* float_rp "float * __restrict__"
    ctypedef unsigned char* uchar_rp "unsigned char * __restrict__"
