"""Static INT8 (issue 4): calibration throughput, and inference latency of the float and the
quantized CNN in onnxruntime, side by side in one group.

    pytest bench/test_bench_calibration.py --benchmark-only --benchmark-json=bench/calibration.json
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import quantrs
from quantrs import CalibrationConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "small_cnn.onnx"
SAMPLES = 64


def samples(n=SAMPLES):
    rng = np.random.default_rng(0)
    return [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_calibration_throughput(benchmark, tmp_path, method):
    """Samples per second = 64 / the time shown (model load and writing included)."""
    benchmark.group = f"calibrate small_cnn, {SAMPLES} samples"
    data = samples()
    benchmark.extra_info["samples"] = SAMPLES
    benchmark.pedantic(quantrs.calibrate, (EXAMPLE, tmp_path / "q.onnx", data, CalibrationConfig(method=method)), rounds=3, iterations=1)


@pytest.fixture(scope="module")
def static_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("static") / "small_cnn_static.onnx"
    quantrs.calibrate(EXAMPLE, path, samples(32), CalibrationConfig(method="percentile", percentile=99.99))
    return path


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("model", ["float", "static int8"])
def test_inference_latency(benchmark, static_model, model, batch):
    benchmark.group = f"small_cnn inference, batch {batch}"
    session = ort.InferenceSession(str(EXAMPLE if model == "float" else static_model), providers=["CPUExecutionProvider"])
    feed = {"image": np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32)}
    for _ in range(5):
        session.run(None, feed)
    benchmark(session.run, None, feed)
