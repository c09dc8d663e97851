#!/usr/bin/env bash
# Build the bounds-checked kernels (QUANTRS_CYTHON_DEBUG=1: boundscheck and initializedcheck on)
# for the fuzz targets, in a copy of the sources at DIR; then PYTHONPATH=DIR/src reaches them.
#
#     fuzz/build_debug.sh DIR
#
# A copy, not the checkout: the installed or in-place build stays the fast one, and no C file
# generated earlier without bounds checks is reused (cythonize keeps C files newer than their
# .pyx, whatever the directives were). The targets check the result (quantrs._wire.BOUNDS_CHECKED).
set -euo pipefail
dir="${1:?usage: fuzz/build_debug.sh DIR}"
cd "$(dirname "$0")/.."
mkdir -p "$dir"
cp -r setup.py pyproject.toml MANIFEST.in README.md LICENSE csrc src "$dir"/
rm -f "$dir"/csrc/*.c "$dir"/src/quantrs/*.so
cd "$dir"
# QUANTRS_NO_SIMD: one build of each module is enough (the AVX2 ones compile the same source).
QUANTRS_NO_SIMD=1 QUANTRS_CYTHON_DEBUG=1 python3 setup.py -q build_ext --inplace
python3 -c "import sys; sys.path.insert(0, 'src'); import quantrs._wire as w; sys.exit(0 if w.BOUNDS_CHECKED else 'not bounds-checked')"
