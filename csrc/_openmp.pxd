# OpenMP shim: every kernel reaches OpenMP only through this file, so one source builds with
# -fopenmp (parallel) and without it (serial, where the compiler has no OpenMP). A direct
# `cimport openmp` would need omp.h and break the serial build.
cdef extern from *:
    """
    #ifdef _OPENMP
        #include <omp.h>
        #define QUANTRS_OPENMP 1
    #else
        #define QUANTRS_OPENMP 0
        static inline int omp_get_max_threads(void) { return 1; }
        static inline int omp_get_thread_num(void) { return 0; }
    #endif
    """
    const bint QUANTRS_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
