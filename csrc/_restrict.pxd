# Pointer types for the kernels' inner loops.
#
# - restrict: kernels that write bytes (unsigned char may alias anything) or read per-channel
#   parameter arrays tell the C compiler that arrays do not overlap, so the loops vectorise.
# - unaligned float input: weights are read in place from memory-mapped ONNX files, where a
#   tensor's bytes start wherever protobuf put them (not on a 4-byte boundary). Declaring the
#   float type with alignment 1 makes gcc/clang emit unaligned loads instead of assuming one.
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    typedef float quantrs_float_u __attribute__((aligned(1)));
    #else
    typedef float quantrs_float_u;
    #endif
    """
    ctypedef float float_u "quantrs_float_u"
    ctypedef const float_u* const_float_up "const quantrs_float_u * __restrict__"
    ctypedef const float* const_float_rp "const float * __restrict__"
    ctypedef const int* const_int_rp "const int * __restrict__"
    ctypedef float* float_rp "float * __restrict__"
    ctypedef double* double_rp "double * __restrict__"
    ctypedef unsigned char* uchar_rp "unsigned char * __restrict__"
    ctypedef const double* const_double_rp "const double * __restrict__"
