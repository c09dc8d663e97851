"""Activation statistics (quantrs.ranges) and their kernels (csrc/_calib.pyx).

1. Excluded values: NaN, +-inf and masks (|x| >= 1e30) are left out of the min/max and the
   histogram, and counted. The kernels against plain numpy twins, bit for bit.
2. The range pickers against onnxruntime's calibrators, on the same values or the same
   histograms, where they are meant to agree:
   - minmax: equal to onnxruntime's MinMax;
   - entropy: onnxruntime's algorithm: on the same histogram, the same window (up to the
     float32 rounding of onnxruntime's divergences); with onnxruntime's defaults (128 bins, 128
     levels) the same range as onnxruntime's Entropy calibrator, which is the min/max range;
   - percentile: the same tails, within a bin of each histogram (the histograms differ:
     quantrs' is over [-R, R], R a power-of-two multiple of the first sample's max, and
     onnxruntime takes the lower edge of the bin where the CDF crosses, quantrs the upper);
   - mse: onnxruntime has none; its real quantization error is at most the best of
     onnxruntime's ranges'.
3. End to end: a small CNN calibrated by quantrs and by onnxruntime's quantize_static on the
   same samples, output error on held-out inputs (the bar of the entropy issue: quantrs'
   entropy <= 1.25x onnxruntime's).
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import HistogramCollector as OrtHistogramCollector
from onnxruntime.quantization.calibrate import create_calibrator

import builders
import quantrs
from quantrs import kernels as K
from quantrs.calibration import CalibrationConfig
from quantrs.errors import ConfigError
from quantrs.ranges import EXTREME, NBINS, HistogramCollector, _rebinned, entropy_range, pick_range

# Let the kernels use 2 threads on tiny arrays (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("parallel_even_when_tiny")

F32_MAX = float(np.finfo(np.float32).max)
LIMIT = np.float32(EXTREME)
SPECIALS = [
    np.nan,
    np.inf,
    -np.inf,
    F32_MAX,
    -F32_MAX,
    float(LIMIT),
    -float(LIMIT),
    float(np.nextafter(LIMIT, np.float32(0))),
    0.0,
    -0.0,
]


# ---------------------------------------------------------------------------------------------
# 1. Kernels and their numpy twins


def finite_minmax_twin(x: np.ndarray, limit: float) -> tuple[np.float32, np.float32, int, int]:
    """(lo, hi, nonfinite, extreme) of finite_minmax, in plain numpy."""
    x = np.asarray(x, np.float32).ravel()
    a = np.abs(x)
    with np.errstate(invalid="ignore"):
        ok = a < np.float32(limit)
        finite = a <= np.float32(F32_MAX)
    nonfinite = int(np.count_nonzero(~finite))
    extreme = int(np.count_nonzero(~ok)) - nonfinite
    kept = x[ok]
    if kept.size == 0:
        return np.float32(np.inf), np.float32(-np.inf), nonfinite, extreme
    return kept.min() + np.float32(0), kept.max() + np.float32(0), nonfinite, extreme  # -0 -> +0


def finite_histogram_twin(x: np.ndarray, lo: float, hi: float, nbins: int, limit: float) -> np.ndarray:
    x = np.asarray(x, np.float32).ravel()
    with np.errstate(invalid="ignore"):
        kept = x[np.abs(x) < np.float32(limit)]
    v = (kept.astype(np.float64) - lo) * (nbins / (hi - lo))
    return np.bincount(np.clip(np.floor(v), 0, nbins - 1).astype(np.int64), minlength=nbins).astype(np.int64)


def bits(v) -> bytes:
    return np.float32(v).tobytes()


def with_specials(draw_values, specials_share: float = 0.2):
    """float32 arrays of any values, some replaced by NaN, +-inf, +-3.4e38, +-1e30, +-0."""
    return st.tuples(
        draw_values,
        st.lists(st.tuples(st.floats(0, 1), st.sampled_from(SPECIALS)), max_size=40),
    ).map(lambda t: _sprinkle(*t))


def _sprinkle(x: np.ndarray, specials) -> np.ndarray:
    x = x.copy()
    for where, value in specials:
        if x.size:
            x[min(int(where * x.size), x.size - 1)] = value
    return x


ARRAYS = with_specials(
    hnp.arrays(
        np.float32,
        st.integers(0, 2000),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True) | st.floats(-10, 10, width=32),
    )
)


@settings(max_examples=150, deadline=None)
@given(x=ARRAYS, threads=st.sampled_from([1, 2]), limit=st.sampled_from([EXTREME, 1.0, math.inf, F32_MAX]))
def test_finite_minmax_equals_twin(x, threads, limit):
    got = K.finite_minmax(x, limit, n_threads=threads)
    lo, hi, nonfinite, extreme = finite_minmax_twin(x, limit)
    assert (bits(got.lo), bits(got.hi)) == (bits(lo), bits(hi))
    assert (got.nonfinite, got.extreme) == (nonfinite, extreme)
    assert got.empty == (lo > hi)


@settings(max_examples=100, deadline=None)
@given(x=ARRAYS, threads=st.sampled_from([1, 2]), bins=st.integers(1, 300))
def test_finite_histogram_equals_twin(x, threads, bins):
    lo, hi = -50.0, 75.0  # included values outside land in the end bins
    counts = K.finite_histogram(x, lo, hi, np.zeros(bins, np.int64), EXTREME, n_threads=threads)
    np.testing.assert_array_equal(counts, finite_histogram_twin(x, lo, hi, bins, EXTREME))


def test_kernels_on_large_arrays_with_two_threads():
    """Several 65,536-value tasks, excluded values in several of them, 1 and 2 threads."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(300_007).astype(np.float32)
    where = rng.choice(x.size, 500, replace=False)
    x[where] = rng.choice(np.array(SPECIALS, np.float32), where.size)
    x[x == np.nextafter(LIMIT, np.float32(0))] = 1.0  # included: it would be the maximum
    x[123] = -50.0  # the minimum sits in the first task, the maximum in the last
    x[299_999] = 60.0
    want = finite_minmax_twin(x, EXTREME)
    assert want[:2] == (-50.0, 60.0) and want[2] > 0 and want[3] > 0
    for threads in (1, 2):
        got = K.finite_minmax(x, EXTREME, n_threads=threads)
        assert (got.lo, got.hi, got.nonfinite, got.extreme) == want
        counts = K.finite_histogram(x, -60.0, 60.0, np.zeros(NBINS, np.int64), EXTREME, n_threads=threads)
        np.testing.assert_array_equal(counts, finite_histogram_twin(x, -60.0, 60.0, NBINS, EXTREME))


@pytest.mark.parametrize(
    "values, nonfinite, extreme",
    [
        ([], 0, 0),
        ([np.nan, np.inf, -np.inf], 3, 0),
        ([-F32_MAX, F32_MAX, 1e30, -1e31], 0, 4),
        ([np.nan, -F32_MAX, -np.inf, 3e38], 2, 2),
    ],
)
def test_all_excluded_or_empty(values, nonfinite, extreme):
    x = np.array(values, np.float32)
    got = K.finite_minmax(x, EXTREME)
    assert got.empty and got.lo == math.inf and got.hi == -math.inf
    assert (got.nonfinite, got.extreme) == (nonfinite, extreme)
    counts = K.finite_histogram(x, -1.0, 1.0, np.zeros(8, np.int64), EXTREME)
    assert counts.sum() == 0


def test_negative_zero_is_reported_as_positive_zero():
    for x in ([-0.0, 0.0], [0.0, -0.0], [-0.0] * 9, [-0.0, 1.0], [-1.0, -0.0]):
        got = K.finite_minmax(np.array(x, np.float32), EXTREME)
        assert all(bits(v) != bits(-0.0) for v in (got.lo, got.hi) if v == 0)


def test_kernel_fronts_check_their_arguments():
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="float32"):
        K.finite_minmax(x.astype(np.float64), EXTREME)
    with pytest.raises(ConfigError, match="limit"):
        K.finite_minmax(x, 0.0)
    with pytest.raises(ConfigError, match="limit"):
        K.finite_minmax(x, 1e39)
    with pytest.raises(ValueError, match="counts"):
        K.finite_histogram(x, 0, 1, np.zeros(4, np.int32), EXTREME)
    with pytest.raises(ValueError, match="range"):
        K.finite_histogram(x, 1, 1, np.zeros(4, np.int64), EXTREME)
    with pytest.raises(ConfigError, match="quantized_bins"):
        K.entropy_divergences(np.ones(8, np.int64), 1)
    with pytest.raises(ConfigError, match="fewer than"):
        K.entropy_divergences(np.ones(8, np.int64), 16)
    with pytest.raises(ValueError, match="non-negative"):
        K.entropy_divergences(np.array([1, -1, 2, 3], np.int64), 2)
    # Non-contiguous input is copied, not refused.
    y = np.arange(20, dtype=np.float32)[::2]
    assert (K.finite_minmax(y, EXTREME).lo, K.finite_minmax(y, EXTREME).hi) == (0.0, 18.0)


# ---------------------------------------------------------------------------------------------
# 1b. The collector


def test_collector_leaves_masks_out_and_counts_them():
    rng = np.random.default_rng(1)
    parts = []
    for k in range(6):
        scores = rng.standard_normal((4, 64)).astype(np.float32) * (k + 1)
        scores[:, 48:] = np.finfo(np.float32).min  # an additive attention mask
        scores[0, 0] = -np.inf
        if k == 3:
            scores[1, 1] = np.nan
        parts.append(scores)
    masked = HistogramCollector("scores")
    for part in parts:
        masked.add(part)
    plain = HistogramCollector("scores")
    for part in parts:
        kept = part[np.abs(part) < np.float32(EXTREME)]
        plain.add(kept)
    assert (masked.lo, masked.hi, masked.radius, masked.samples) == (plain.lo, plain.hi, plain.radius, plain.samples)
    np.testing.assert_array_equal(masked.counts, plain.counts)
    assert (masked.nonfinite, masked.extreme, masked.excluded) == (7, 6 * 4 * 16, 7 + 6 * 4 * 16)
    assert (plain.nonfinite, plain.extreme) == (0, 0)
    for method in ("minmax", "percentile", "entropy", "mse"):
        lo, hi = pick_range(masked, method)
        assert math.isfinite(lo) and math.isfinite(hi) and masked.lo <= lo < hi <= masked.hi


def test_an_array_with_no_included_value_changes_nothing_but_the_counts():
    collector = HistogramCollector("t")
    collector.add(np.array([np.nan, -np.inf, -3.4e38], np.float32))
    assert (collector.samples, collector.lo, collector.hi, collector.counts) == (0, math.inf, -math.inf, None)
    assert (collector.nonfinite, collector.extreme) == (2, 1)
    with pytest.raises(ConfigError, match=r"never computed on the samples: all its values were NaN/inf \(2\) or masks"):
        pick_range(collector, "entropy")
    collector.add(np.array([1.0, -2.0], np.float32))
    before = (collector.lo, collector.hi, collector.radius, collector.counts.copy())
    collector.add(np.array([np.inf, 1e35], np.float32))  # all excluded: lo, hi, histogram as they were
    collector.add(np.array([], np.float32))  # empty: nothing at all
    assert (collector.lo, collector.hi, collector.radius) == before[:3]
    np.testing.assert_array_equal(collector.counts, before[3])
    assert (collector.samples, collector.nonfinite, collector.extreme) == (1, 3, 2)
    assert pick_range(collector, "minmax") == (-2.0, 1.0)


def test_a_collector_that_never_saw_a_value():
    with pytest.raises(ConfigError, match="was never computed on the samples$"):
        pick_range(HistogramCollector("t"), "minmax")


# ---------------------------------------------------------------------------------------------
# 2. Entropy: the divergences against a plain twin, the pick against onnxruntime's

EPS = 1e-4


def _smooth(a: np.ndarray) -> np.ndarray | None:
    nonzero = a != 0
    if not nonzero.any():
        return None
    return a + EPS * ~nonzero - EPS * (a.size - nonzero.sum()) / nonzero.sum() * nonzero


def entropy_divergences_twin(hist: np.ndarray, nq: int) -> np.ndarray:
    """onnxruntime's get_entropy_threshold distributions, window by window, in float64."""
    hist = np.asarray(hist, np.int64)
    n, zero = hist.size, hist.size // 2
    out = []
    for i in range(nq // 2, zero + 1):
        start, stop = zero - i, min(zero + i + 1, n)
        window = hist[start:stop].astype(np.float64)
        p = window.copy()
        p[0] += hist[:start].sum()
        p[-1] += hist[stop:].sum()
        merged = window.size // nq
        levels = [window[k * merged : (k + 1) * merged].sum() for k in range(nq)]
        levels[-1] += window[nq * merged :].sum()
        q = np.zeros(p.size)
        for k in range(nq):
            used = np.count_nonzero(p[k * merged : (k + 1) * merged])
            if used:
                q[k * merged : (k + 1) * merged] = math.floor(levels[k] / used)
        ps, qs = _smooth(p), _smooth(q)
        if ps is None or qs is None:
            out.append(math.inf)
            continue
        ps, qs = ps / ps.sum(), qs / qs.sum()
        out.append(float(np.sum(ps * np.log(ps / qs))))
    return np.array(out)


@st.composite
def histograms(draw):
    n = draw(st.integers(2, 200))
    nq = draw(st.integers(2, n))
    kind = draw(st.sampled_from(["small", "sparse", "large", "spike"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "small":
        hist = rng.integers(0, 4, n)
    elif kind == "sparse":  # few non-zero bins: the smoothing's correction is large
        hist = (rng.random(n) < 0.05) * rng.integers(1, 1000, n)
    elif kind == "large":
        hist = rng.integers(0, 10**7, n) * (rng.random(n) < 0.7)
    else:  # a Relu-like spike at zero over a tail
        hist = np.histogram(np.maximum(rng.standard_t(3, 5000), 0), n, range=(-8, 8))[0]
    return hist.astype(np.int64), nq


@settings(max_examples=200, deadline=None)
@given(case=histograms())
def test_entropy_divergences_equal_twin(case):
    hist, nq = case
    got, want = K.entropy_divergences(hist, nq), entropy_divergences_twin(hist, nq)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-12)


def ort_entropy(hist, edges, lo, hi, nq):
    collector = OrtHistogramCollector("entropy", False, hist.size, nq, 99.999, "same")
    return collector.get_entropy_threshold((hist, edges, np.float32(lo), np.float32(hi)), nq)


def windows_of(pick, hist, threshold, lo, hi, nq) -> list[int]:
    """The indices of the candidate windows whose range is `pick`: more than one when windows
    reach past the data's min or max and clip to the same range (the picks cannot tell them
    apart: the pick is the range)."""
    n = hist.size
    edges = np.linspace(-np.float32(threshold), np.float32(threshold), n + 1, dtype=np.float32)
    found = []
    for k in range(n // 2 - nq // 2 + 1):
        i = nq // 2 + k
        if (max(float(edges[n // 2 - i]), lo), min(float(edges[min(n // 2 + i + 1, n)]), hi)) == pick:
            found.append(k)
    assert found, f"{pick} is no candidate window"
    return found


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.sampled_from([128, 130, 256, 400]),
    nq=st.sampled_from([2, 16, 64, 128]),
    dist=st.sampled_from(["t1.5", "t3", "normal", "relu", "skewed"]),
)
@example(seed=7589, n=400, nq=64, dist="normal")  # windows 167 and 168 clip to the same range
def test_entropy_pick_is_onnxruntimes_on_the_same_histogram(seed, n, nq, dist):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(50, 20_000))
    x = {
        "t1.5": lambda: rng.standard_t(1.5, size),
        "t3": lambda: rng.standard_t(3, size),
        "normal": lambda: rng.standard_normal(size),
        "relu": lambda: np.maximum(rng.standard_t(3, size), 0),
        "skewed": lambda: rng.lognormal(0, 1, size) - 1,
    }[dist]().astype(np.float32)
    threshold = np.float32(np.abs(x).max())
    hist, edges = np.histogram(x, n, range=(-threshold, threshold))  # onnxruntime's collect_value
    lo, hi = float(x.min()), float(x.max())
    ours = entropy_range(hist, float(threshold), lo, hi, nq)
    theirs = tuple(float(v) for v in ort_entropy(hist, edges, lo, hi, nq))
    if ours != theirs:
        # onnxruntime sums its divergences in float32: near-ties may fall the other way. Its
        # window must then be as good as ours to float32 precision, which for a divergence of
        # 5e-4 summed from larger terms of both signs is ~1e-3 relative (a t1.5 draw measured
        # 3.7e-4).
        divergences = entropy_divergences_twin(hist, nq)
        d_ours, d_theirs = (min(divergences[k] for k in windows_of(p, hist, threshold, lo, hi, nq)) for p in (ours, theirs))
        best = divergences.min()
        assert d_ours <= best * (1 + 1e-9) + 1e-12  # ours is the minimum (see the twin test)
        assert d_theirs <= best * (1 + 1e-3) + 1e-9


def ort_collect(method: str, x: np.ndarray, **options):
    """onnxruntime's HistogramCollector on the values x (as its calibrators use it), quietly."""
    settings_ = {"symmetric": False, "num_bins": 128, "num_quantized_bins": 128, "percentile": 99.999} | options
    collector = OrtHistogramCollector(
        method, settings_["symmetric"], settings_["num_bins"], settings_["num_quantized_bins"], settings_["percentile"], "same"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        collector.collect({"t": x})
        result = collector.compute_collection_result()["t"]
    return float(result[0]), float(result[1])


def collect(x: np.ndarray, parts: int = 7) -> HistogramCollector:
    collector = HistogramCollector("t")
    for part in np.array_split(x, parts):
        collector.add(part)
    return collector


def sample_values(dist: str, n: int = 60_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = {
        "normal": lambda: rng.standard_normal(n),
        "t3": lambda: rng.standard_t(3, n),
        "relu": lambda: np.maximum(rng.standard_t(3, n), 0),
        "skewed": lambda: rng.lognormal(0, 1, n) - 1,
    }[dist]()
    return x.astype(np.float32)


@pytest.mark.parametrize("dist", ["normal", "t3", "relu", "skewed"])
def test_entropy_with_onnxruntimes_defaults_is_its_range(dist):
    """onnxruntime's Entropy calibrator (128 bins, 128 levels): one candidate window, the whole
    [-T, T], clamped to [min, max]. quantrs' entropy gives the same range, bit for bit."""
    x = sample_values(dist)
    assert pick_range(collect(x), "entropy") == ort_collect("entropy", x) == (float(x.min()), float(x.max()))


@pytest.mark.parametrize("dist", ["t3", "relu", "skewed"])
@pytest.mark.parametrize("bins", [256, 512])
def test_entropy_with_more_bins_is_near_onnxruntimes(dist, bins):
    """With more bins than levels the search clips. quantrs re-bins its own histogram to
    onnxruntime's [-max|x|, max|x|] grid (spreading each fine bin evenly): the window lands
    within 2 bins of onnxruntime's, on its exact histogram of the same values."""
    x = sample_values(dist, seed=1)
    stats = collect(x)
    hist, threshold = _rebinned(stats, bins)
    exact, _ = np.histogram(x, bins, range=(-threshold, threshold))
    # The re-binned histogram is close. (Exact zeros, half of Relu's output, fall on either side
    # of np.histogram's middle edge, depending on its float32 rounding: merge those two bins.)
    middle = bins // 2
    hist[middle - 1 : middle + 1] = hist[middle - 1 : middle + 1].sum(), 0
    exact[middle - 1 : middle + 1] = exact[middle - 1 : middle + 1].sum(), 0
    assert np.abs(hist - exact).sum() <= 0.02 * x.size
    ours = pick_range(stats, "entropy", entropy_bins=bins)
    theirs = ort_collect("entropy", x, num_bins=bins)
    width = 2 * float(threshold) / bins
    assert abs(ours[0] - theirs[0]) <= 2 * width and abs(ours[1] - theirs[1]) <= 2 * width
    assert ours[1] < float(x.max()) or dist == "skewed"  # it does clip the heavy tails


def test_entropy_argument_checks():
    stats = collect(sample_values("t3"))
    with pytest.raises(ConfigError, match="entropy_bins"):
        pick_range(stats, "entropy", entropy_bins=64)
    with pytest.raises(ConfigError, match="unknown calibration method"):
        pick_range(stats, "kl")


# ---------------------------------------------------------------------------------------------
# 2b. minmax, percentile, mse against onnxruntime's calibrators


def relu_model(path):
    """y = Relu(x): onnxruntime's calibrators then calibrate x (signed) and y (one-sided)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class Reader(CalibrationDataReader):
    def __init__(self, samples):
        self.samples = iter(samples)

    def get_next(self):
        return next(self.samples, None)


def test_minmax_is_onnxruntimes(tmp_path):
    rng = np.random.default_rng(2)
    samples = [{"x": (rng.standard_t(3, (16, 64)) * (k + 1)).astype(np.float32)} for k in range(5)]
    calibrator = create_calibrator(
        relu_model(tmp_path / "relu.onnx"),
        augmented_model_path=str(tmp_path / "aug.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )
    calibrator.collect_data(Reader(samples))
    ranges = calibrator.compute_data()
    for name, fn in (("x", lambda v: v), ("y", lambda v: np.maximum(v, 0))):
        ours = HistogramCollector(name, with_histogram=False)
        for s in samples:
            ours.add(fn(s["x"]))
        assert pick_range(ours, "minmax") == tuple(float(np.ravel(v)[0]) for v in ranges[name].range_value)


@pytest.mark.parametrize("dist", ["normal", "t3", "relu", "skewed"])
@pytest.mark.parametrize("p", [99.0, 99.99])
def test_percentile_is_onnxruntimes_within_a_bin(dist, p):
    """Signed data: onnxruntime's two-sided percentile (symmetric=False: (100 - p) / 2 % off each
    side, as quantrs). One-sided data: onnxruntime's default (symmetric=True: a histogram of |x|,
    which for x >= 0 clips only the top, as quantrs). The same cut within a bin of each
    histogram, or, in a sparse tail where bins hold one value or none, within one value: no more
    than one value lies between the two cuts."""
    x = sample_values(dist, seed=3)
    stats = collect(x)
    one_sided = dist == "relu"
    theirs = ort_collect("percentile", x, num_bins=2048, percentile=p, symmetric=one_sided)
    ours = pick_range(stats, "percentile", percentile=p)
    t = float(np.abs(x).max())
    tolerance = 2 * stats.radius / NBINS + (1 if one_sided else 2) * t / 2048  # a bin of each histogram
    for a, b in zip(ours, theirs):
        between = np.count_nonzero((x > min(a, b)) & (x < max(a, b)))
        assert abs(a - b) <= tolerance or between <= 1, (ours, theirs, between)
    if one_sided:
        assert ours[0] == theirs[0] == 0.0


def quantization_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """The real error of UINT8 asymmetric quantization of x over [lo, hi] (0 included)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255
    zero_point = np.clip(np.rint(-lo / scale), 0, 255)
    codes = np.clip(np.rint(x / scale) + zero_point, 0, 255)
    return float(np.mean((x - (codes - zero_point) * scale) ** 2))


@pytest.mark.parametrize("dist", ["normal", "t3", "skewed"])
def test_mse_is_at_least_as_good_as_onnxruntimes_ranges(dist):
    """onnxruntime has no MSE calibrator: mse's range must quantize the values with no more
    error than onnxruntime's minmax, percentile and entropy ranges of the same values."""
    x = sample_values(dist, seed=4).astype(np.float64)
    ours = quantization_mse(x, *pick_range(collect(x.astype(np.float32)), "mse"))
    x32 = x.astype(np.float32)
    theirs = [
        (float(x32.min()), float(x32.max())),
        ort_collect("percentile", x32, num_bins=2048),
        ort_collect("entropy", x32),
    ]
    assert ours <= 1.02 * min(quantization_mse(x, *r) for r in theirs)


# ---------------------------------------------------------------------------------------------
# 3. End to end: quantrs.calibrate and onnxruntime's quantize_static on the same samples


def relative_l2(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.linalg.norm(got - reference) / np.linalg.norm(reference))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """tests/builders.conv_net (Conv-Relu-Conv-Relu-GlobalAveragePool-Gemm) fed heavy-tailed
    images (Student t, 3 degrees of freedom): 16 calibration samples, 64 held-out images."""
    folder = tmp_path_factory.mktemp("ranges_cnn")
    model, feeds = builders.conv_net(0)
    path = folder / "float.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(1)
    shape = feeds["x"].shape[1:]
    samples = [{"x": rng.standard_t(3, (1, *shape)).astype(np.float32)} for _ in range(16)]
    held_out = {"x": rng.standard_t(3, (64, *shape)).astype(np.float32)}
    return path, samples, held_out, run(path, held_out)


def run(path, feeds) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def ort_error(cnn, tmp_path, method: CalibrationMethod) -> float:
    path, samples, held_out, reference = cnn
    dst = tmp_path / f"ort_{method.name}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(path), str(dst), Reader(samples), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
        )  # fmt: skip
    return relative_l2(reference, run(dst, held_out))


def quantrs_error(cnn, tmp_path, method: str) -> float:
    path, samples, held_out, reference = cnn
    dst = tmp_path / f"quantrs_{method}.onnx"
    quantrs.calibrate(path, dst, samples, CalibrationConfig(method=method))
    return relative_l2(reference, run(dst, held_out))


@pytest.mark.parametrize(
    "method, against",
    [
        ("entropy", CalibrationMethod.Entropy),  # the bar
        ("minmax", CalibrationMethod.MinMax),
        ("percentile", CalibrationMethod.Percentile),
        ("mse", CalibrationMethod.MinMax),  # onnxruntime has no MSE: its best plain range
    ],
)
def test_output_error_is_at_most_onnxruntimes(cnn, tmp_path, method, against):
    ours, theirs = quantrs_error(cnn, tmp_path, method), ort_error(cnn, tmp_path, against)
    assert ours <= 1.25 * theirs, f"quantrs {method}: {ours:.4f}, onnxruntime {against.name}: {theirs:.4f}"
