"""The same source builds without OpenMP (as on a compiler that has none) and its serial kernels
give the same bytes as the numpy twins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import numpy as np
from quantrs import kernels as K, reference as R
assert not K.openmp_enabled() and K.default_threads() == 1 and K.simd_build() == "baseline"
x = np.random.default_rng(0).standard_normal((300, 700)).astype(np.float32)
for axis in (None, 0, 1):
    x3 = K.channel_view(x, axis)
    rng = K.minmax(x, axis, n_threads=2)
    s, z = K.scales(rng, 0, 255, symmetric=False)
    q = K.quantize(x, s, z, 0, 255, axis, n_threads=2)
    assert (q.reshape(x3.shape) == R.quantize(x3, s, z, 0, 255)).all()
    assert (K.pack4(q & 15) == R.pack4(q & 15)).all()
K.PARALLEL_MIN_ELEMENTS = 0
for axis in (0, 1):  # the block kernel (csrc/_block.pyx)
    for dtype in (np.float32, np.float16):
        for search in (False, True):
            got = K.quantize_blocks(x.astype(dtype), axis, 32, 0, 15, symmetric=False, search=search, n_threads=2)
            want = R.quantize_blocks(x.astype(dtype), axis, 32, 0, 15, symmetric=False, search=search)
            assert (got.codes == want[0]).all() and got.scale.tobytes() == want[1].tobytes()
            assert (got.sse, got.max_abs_error, got.sse_minmax) == want[3:]
print("serial ok")
"""


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_serial_build_without_openmp(tmp_path):
    pytest.importorskip("Cython")
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc", ignore=shutil.ignore_patterns("*.c", "*.html"))
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    # QUANTRS_NO_SIMD: the portable modules only, so CHECK holds them (not the AVX2 ones) to the twins.
    env = {**os.environ, "QUANTRS_NO_OPENMP": "1", "QUANTRS_NO_SIMD": "1"}
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace", "-j", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "SERIAL" in build.stderr  # the build says loudly that it is serial
    check = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path / "src")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert "serial ok" in check.stdout
