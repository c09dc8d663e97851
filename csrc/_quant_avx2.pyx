# The kernels of _quant.pyx, compiled a second time with -mavx2 -mf16c (setup.py) for the CPUs that
# have them; quantrs/_simd.py chooses between the two builds at import.
include "_quant.pyx"
