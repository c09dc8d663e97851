from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from typer import rich_utils

# Stable CLI output in tests: no terminal escapes, no wrapping.
rich_utils.FORCE_TERMINAL = False
rich_utils.MAX_WIDTH = 3000


@pytest.fixture
def save(tmp_path: Path):
    """Save a model into the test's temporary folder and return its path."""

    def _save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return _save


@pytest.fixture(scope="module")
def parallel_even_when_tiny():
    """Let the kernels use the requested threads even on arrays below PARALLEL_MIN_ELEMENTS, so
    that tiny hypothesis examples run the parallel code paths too."""
    from quantrs import kernels

    saved = kernels.PARALLEL_MIN_ELEMENTS
    kernels.PARALLEL_MIN_ELEMENTS = 0
    yield
    kernels.PARALLEL_MIN_ELEMENTS = saved


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
