# The kernels of _reduce.pyx, compiled a third time with AVX-512 (F, BW, DQ, VL; 512-bit vectors) for
# the CPUs that have it (setup.py); quantrs/_simd.py chooses among the builds at import.
include "_reduce.pyx"
