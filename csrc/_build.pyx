"""What the compiled kernels were built with (reported by `quantrs info`)."""
from _openmp cimport QUANTRS_OPENMP, omp_get_max_threads


def openmp_enabled() -> bool:
    """True when the kernels were compiled with OpenMP (parallel), False for the serial build."""
    return bool(QUANTRS_OPENMP)


def max_threads() -> int:
    """OpenMP's default thread count (honours OMP_NUM_THREADS); 1 in the serial build."""
    return omp_get_max_threads()
