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
    benchmark.pedantic(
        quantrs.calibrate, (EXAMPLE, tmp_path / "q.onnx", data, CalibrationConfig(method=method)), rounds=3, iterations=1
    )


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


# ---------------------------------------------------------------------------------------------
# Range picks (quantrs.ranges.pick_range) on a 2048-bin collector, one tensor per pick, and the
# activation kernels of calibration (csrc/_calib.pyx).
#
#     pytest bench/test_bench_calibration.py -k "pick or activation" --benchmark-only

import math  # noqa: E402

from quantrs import kernels  # noqa: E402
from quantrs.ranges import NBINS, HistogramCollector, pick_range  # noqa: E402


def _activation(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_t(3, 1 << 20).astype(np.float32)
    return np.maximum(x, 0) if kind == "relu" else x


def _collector(kind: str) -> HistogramCollector:
    stats = HistogramCollector(kind)
    for part in np.array_split(_activation(kind), 16):
        stats.add(part)
    return stats


def _old_entropy_pick(stats: HistogramCollector, levels: int = 256) -> float:
    """The entropy pick before issue 'entropy 20x onnxruntime's error' (TensorRT-style KL over
    the |x| histogram, one numpy pass per candidate), kept here to time it in the same run."""
    half = NBINS // 2
    assert stats.counts is not None
    hist = (stats.counts[half:] + stats.counts[:half][::-1]).astype(np.float64)
    width = stats.radius / half
    target = max(levels // 2, 2)
    nonzero = np.nonzero(hist)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else target
    best, best_kl = last, math.inf
    for i in range(target, max(last, target) + 1):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        starts = (np.arange(target) * i) // target
        sizes = np.diff(np.append(starts, i))
        source = hist[:i]
        used = source > 0
        level_mass = np.add.reduceat(source, starts)
        level_used = np.add.reduceat(used.astype(np.float64), starts)
        per_bin = np.divide(level_mass, level_used, out=np.zeros(target), where=level_used > 0)
        q = np.repeat(per_bin, sizes) * used
        mask = p > 0
        if not (q[mask] > 0).all() or p.sum() == 0:
            continue
        pn, qn = p / p.sum(), q / q.sum()
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
        if kl < best_kl:
            best, best_kl = i, kl
    return best * width


PICKS = {
    "entropy (before)": _old_entropy_pick,
    "entropy": lambda s: pick_range(s, "entropy"),  # onnxruntime's 128 bins / 128 levels
    "entropy, 2048 bins": lambda s: pick_range(s, "entropy", entropy_bins=2048),  # 961 windows
    "percentile": lambda s: pick_range(s, "percentile"),
    "mse": lambda s: pick_range(s, "mse"),
}


@pytest.mark.parametrize("kind", ["signed", "relu"])
@pytest.mark.parametrize("pick", list(PICKS))
def test_range_pick(benchmark, kind, pick):
    """Time of one pick on one tensor's 2048-bin histogram (Student t data, 2^20 values)."""
    benchmark.group = f"range pick, 2048-bin histogram, {kind}"
    stats = _collector(kind)
    benchmark(PICKS[pick], stats)


def _numpy_finite_minmax(x: np.ndarray):
    a = np.abs(x)
    ok = a < np.float32(1e30)
    kept = x[ok]
    return kept.min(), kept.max(), int(np.count_nonzero(~np.isfinite(x))), int(np.count_nonzero(~ok))


@pytest.fixture(scope="module")
def masked_scores():
    """2^24 attention scores (64 MB), a quarter of them masked with finfo(float32).min."""
    x = np.random.default_rng(0).standard_normal((1 << 12, 1 << 12)).astype(np.float32)
    x[:, 3 << 10 :] = np.finfo(np.float32).min
    return x


@pytest.mark.parametrize("impl", ["finite_minmax-1t", "finite_minmax-2t", "minmax-1t (raises on inf)", "numpy"])
def test_activation_minmax(benchmark, masked_scores, impl):
    benchmark.group = "activation min/max + excluded count, 2^24 float32"
    if impl == "numpy":
        benchmark(_numpy_finite_minmax, masked_scores)
    elif impl.startswith("minmax"):
        clean = np.nan_to_num(masked_scores, neginf=0.0).clip(-1e29, 1e29)
        benchmark(kernels.minmax, clean, n_threads=1)
    else:
        benchmark(kernels.finite_minmax, masked_scores, 1e30, n_threads=int(impl[-2]))


@pytest.mark.parametrize("impl", ["finite_histogram-1t", "finite_histogram-2t", "histogram-1t (no skip)"])
def test_activation_histogram(benchmark, masked_scores, impl):
    benchmark.group = "activation histogram, 2048 bins, 2^24 float32"
    counts = np.zeros(NBINS, np.int64)
    if impl.startswith("histogram"):
        benchmark(kernels.histogram, masked_scores, -8.0, 8.0, counts, n_threads=1)
    else:
        benchmark(kernels.finite_histogram, masked_scores, -8.0, 8.0, counts, 1e30, n_threads=int(impl[-2]))
