"""What the compiled kernels were built with (reported by `quantrs info`), and what this CPU has."""
from _openmp cimport QUANTRS_OPENMP, omp_get_max_threads

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    #include <cpuid.h>
    /* AVX2 and F16C, and an OS that saves the YMM registers (XCR0 bits 1-2, read only when
       CPUID says OSXSAVE): what the _avx2 builds of the weight kernels need. */
    static int quantrs_cpu_avx2_f16c(void) {
        unsigned a, b, c, d, xcr0, high;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
        if (!((c >> 27) & 1) || !((c >> 28) & 1) || !((c >> 29) & 1)) return 0;  /* OSXSAVE, AVX, F16C */
        __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(high) : "c"(0));
        if ((xcr0 & 6u) != 6u) return 0;
        if (__get_cpuid_max(0, 0) < 7) return 0;
        __cpuid_count(7, 0, a, b, c, d);
        return (b >> 5) & 1;  /* AVX2 */
    }
    #endif
    /* AVX-512 F, DQ, BW and VL (CPUID leaf 7 EBX bits 16, 17, 30, 31), and an OS that saves the
       YMM, opmask and ZMM registers (XCR0 bits 1-2 and 5-7): what the _avx512 builds need. */
    static int quantrs_avx512_usable(unsigned ebx7, unsigned xcr0) {
        if ((xcr0 & 0xE6u) != 0xE6u) return 0;
        return ((ebx7 >> 16) & 1) && ((ebx7 >> 17) & 1) && ((ebx7 >> 30) & 1) && ((ebx7 >> 31) & 1);
    }
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    static int quantrs_cpu_avx512(void) {
        unsigned a, b, c, d, xcr0, high;
        if (!quantrs_cpu_avx2_f16c()) return 0;  /* also: OSXSAVE (xgetbv may run), leaf 7 exists */
        __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(high) : "c"(0));
        __cpuid_count(7, 0, a, b, c, d);
        return quantrs_avx512_usable(b, xcr0);
    }
    #else
    static int quantrs_cpu_avx2_f16c(void) { return 0; }
    static int quantrs_cpu_avx512(void) { return 0; }
    #endif
    """
    int quantrs_cpu_avx2_f16c() noexcept nogil
    int quantrs_cpu_avx512() noexcept nogil
    int quantrs_avx512_usable(unsigned int ebx7, unsigned int xcr0) noexcept nogil


def openmp_enabled() -> bool:
    """True when the kernels were compiled with OpenMP (parallel), False for the serial build."""
    return bool(QUANTRS_OPENMP)


def max_threads() -> int:
    """OpenMP's default thread count (honours OMP_NUM_THREADS); 1 in the serial build."""
    return omp_get_max_threads()


def cpu_has_avx2_f16c() -> bool:
    """True when this CPU (and its OS) can run the _avx2 builds of the weight kernels."""
    return bool(quantrs_cpu_avx2_f16c())


def cpu_has_avx512() -> bool:
    """True when this CPU (and its OS) can run the _avx512 builds of the weight kernels."""
    return bool(quantrs_cpu_avx512())


def avx512_usable(ebx7: int, xcr0: int) -> bool:
    """The AVX-512 decision on given CPUID leaf 7 EBX and XCR0 values (for tests)."""
    return bool(quantrs_avx512_usable(ebx7, xcr0))
