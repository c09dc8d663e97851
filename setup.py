"""Build the compiled kernels in csrc/.

Everything but the extension list lives in pyproject.toml. Switches (environment variables):

- QUANTRS_NO_OPENMP=1       build the serial version even where the compiler has OpenMP;
- QUANTRS_FAIL_NO_OPENMP=1  fail instead of falling back to the serial build;
- QUANTRS_CYTHON_DEBUG=1    turn boundscheck/initializedcheck back on to hunt memory bugs;
- QUANTRS_NO_SIMD=1         skip the AVX2 and AVX-512 builds of the weight kernels (x86-64).

No host-CPU flags (-march=native) ever: a wheel must run on any x86-64 / aarch64 machine. On
x86-64 the weight kernels are built twice more, with AVX2 + F16C and with AVX-512
(SIMD_MODULES), and quantrs/_simd.py runs the widest the CPU has.
"""

import os
import platform
import sys
import tempfile
import textwrap

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_MODULES = ("_build", "_reduce", "_quant", "_pack", "_wire", "_block", "_calib", "_gptq")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _openmp_flags(compiler) -> list[str] | None:
    """Return the OpenMP compile/link flag if this compiler builds and links an OpenMP program."""
    flag = "/openmp" if compiler.compiler_type == "msvc" else "-fopenmp"
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            return n > 0 ? 0 : 1;
        }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=[flag])
        except Exception:  # any compile or link failure means: no usable OpenMP
            return None
    return [flag]


class BuildExt(build_ext):
    def build_extensions(self):
        flags = None if _flag("QUANTRS_NO_OPENMP") else _openmp_flags(self.compiler)
        if flags is None:
            if _flag("QUANTRS_FAIL_NO_OPENMP"):
                sys.exit("quantrs: OpenMP is not available and QUANTRS_FAIL_NO_OPENMP is set")
            print(
                "\n*** quantrs: building the SERIAL kernels (no OpenMP). "
                "They are correct but use one core. ***\n",
                file=sys.stderr,
            )
            flags = []
        for ext in self.extensions:
            ext.extra_compile_args += flags
            ext.extra_link_args += flags
        super().build_extensions()


debug = _flag("QUANTRS_CYTHON_DEBUG")
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "initializedcheck": debug,
    "wraparound": False,
    "nonecheck": False,
    "cdivision": True,
    "embedsignature": True,
}

# -ffp-contract=off: the kernels must round exactly as their numpy twins do, so the compiler may
# not fuse a multiply and an add into one FMA (baseline on aarch64), e.g. in x - code * scale.
# -fno-trapping-math: nothing here reads the floating-point exception flags, so the compiler may
# compute both sides of a select (a division or a conversion that might raise a flag) and
# vectorise loops of them, such as the block kernel's per-block parameter fits. It changes no
# value: rounding, contraction and reassociation stay IEEE's.
COMPILE_ARGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math"] if os.name != "nt" else []
extensions = [Extension(f"quantrs.{name}", [f"csrc/{name}.pyx"], extra_compile_args=list(COMPILE_ARGS)) for name in KERNEL_MODULES]

# The modules that read weights, again for AVX2 + F16C (csrc/NAME_avx2.pyx includes NAME.pyx):
# 256-bit vectors, and float16 widened by vcvtph2ps; and for AVX-512 (NAME_avx512.pyx), 512-bit
# vectors (GCC keeps to 256 unless told: -mprefer-vector-width=512). Without FMA
# (-ffp-contract=off holds), so every build gives the same bits (tests/test_simd.py).
SIMD_MODULES = ("_reduce", "_quant", "_block")
SIMD_BUILDS = {
    "avx2": ["-mavx2", "-mf16c"],
    "avx512": ["-mavx2", "-mf16c", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mprefer-vector-width=512"],
}
if os.name != "nt" and platform.machine().lower() in ("x86_64", "amd64") and not _flag("QUANTRS_NO_SIMD"):
    extensions += [
        Extension(f"quantrs.{name}_{build}", [f"csrc/{name}_{build}.pyx"], extra_compile_args=[*COMPILE_ARGS, *flags])
        for build, flags in SIMD_BUILDS.items()
        for name in SIMD_MODULES
    ]

setup(
    ext_modules=cythonize(extensions, include_path=["csrc"], compiler_directives=directives, quiet=True),
    cmdclass={"build_ext": BuildExt},
)
