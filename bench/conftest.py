from __future__ import annotations

import numpy as np
import pytest

from quantrs import kernels

# Realistic weight shapes: a transformer projection, a ResNet conv, and 1e8 values.
SHAPES = {
    "matmul-4096x4096": ((4096, 4096), 1),
    "conv-256x256x3x3": ((256, 256, 3, 3), 0),
    "matmul-10000x10000": ((10000, 10000), 1),
}


@pytest.fixture(scope="session")
def weights():
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> tuple[np.ndarray, int]:
        shape, axis = SHAPES[name]
        if name not in cache:
            cache[name] = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return cache[name], axis

    return get


@pytest.fixture
def force_threads():
    """Let a kernel use the requested thread count even below PARALLEL_MIN_ELEMENTS."""
    saved = kernels.PARALLEL_MIN_ELEMENTS
    kernels.PARALLEL_MIN_ELEMENTS = 0
    yield
    kernels.PARALLEL_MIN_ELEMENTS = saved
