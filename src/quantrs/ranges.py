"""Activation statistics folded in sample by sample, and the range pickers of calibration.

A HistogramCollector keeps, per tensor, the exact min and max and a histogram over a symmetric
range [-R, R] with a fixed number of bins. When a sample goes past R, R doubles and adjacent
bins merge in pairs: old counts are never re-binned approximately, and memory stays constant
however many samples arrive (the design of onnxruntime's histogram collector).

Excluded values. NaN, +-inf and "mask" values (finite, |x| >= EXTREME = 1e30, such as the
finfo(float32).min = -3.4e38 that attention masks add to scores) are not data: they would make
the range infinite or 1e38 wide. They are left out of lo, hi and the histogram, and counted:
`nonfinite` (NaN, +-inf) and `extreme` (finite, |x| >= 1e30). The caller decides what a tensor
with excluded values becomes (quantrs keeps such tensors in float). `samples` counts the arrays
that had at least one included value, so a tensor whose values were all excluded (or that was
never computed) has samples == 0, and pick_range refuses it.

Entropy is onnxruntime's algorithm, with its defaults. Its collector histograms the values in
128 bins over [-max|x|, max|x|] and searches windows symmetric around zero from 128 bins (its
number of quantized bins) up: with 128 bins the only window is the whole histogram, so
onnxruntime's Entropy calibration returns the min/max range, and so does quantrs'. A TensorRT-
style search over a finer histogram (quantrs' before, or onnxruntime's with num_bins=2048) clips
the tails of Relu outputs and heavy-tailed inputs and gave several times the output error on
small CNNs and MLPs; `entropy_bins` still selects it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantrs.config import METHODS  # declared with calibrate's options
from quantrs import kernels
from quantrs.errors import ConfigError

__all__ = ["HistogramCollector", "pick_range", "entropy_range", "METHODS", "EXTREME", "ENTROPY_BINS", "ENTROPY_QUANTIZED_BINS"]

NBINS = 2048  # over [-R, R]; a multiple of 4 so that doubling keeps edges aligned
EXTREME = 1e30  # |x| >= this (as float32) is a mask value, excluded from the statistics
# onnxruntime's entropy calibration defaults (EntropyCalibrater: num_bins, num_quantized_bins).
ENTROPY_BINS = 128
ENTROPY_QUANTIZED_BINS = 128


@dataclass
class HistogramCollector:
    """Running statistics of one tensor (of its included values: see the module's doc)."""

    name: str
    with_histogram: bool = True
    lo: float = math.inf
    hi: float = -math.inf
    radius: float = 0.0
    counts: np.ndarray | None = None
    samples: int = 0  # arrays with at least one included value
    nonfinite: int = 0  # NaN and +-inf values seen, all arrays together
    extreme: int = 0  # finite values with |x| >= EXTREME seen

    def add(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size == 0:
            return
        rng = kernels.finite_minmax(x, EXTREME)  # one pass: included min/max, excluded counts
        self.nonfinite += rng.nonfinite
        self.extreme += rng.extreme
        if rng.empty:  # every value excluded: lo, hi and the histogram stay as they were
            return
        lo, hi = rng.lo, rng.hi
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.samples += 1
        if not self.with_histogram:
            return
        need = max(abs(lo), abs(hi))
        if self.counts is None:
            self.radius = need if need > 0 else 1e-12
            self.counts = np.zeros(NBINS, dtype=np.int64)
        while need > self.radius:
            self._double()
        kernels.finite_histogram(x, -self.radius, self.radius, self.counts, EXTREME)

    @property
    def excluded(self) -> int:
        """Values left out of the statistics: nonfinite + extreme."""
        return self.nonfinite + self.extreme

    def _double(self) -> None:
        assert self.counts is not None  # add() made them before any doubling
        merged = self.counts.reshape(NBINS // 2, 2).sum(axis=1)
        self.counts = np.zeros(NBINS, dtype=np.int64)
        self.counts[NBINS // 4 : NBINS // 4 + NBINS // 2] = merged
        self.radius *= 2

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.radius, self.radius, NBINS + 1)


def pick_range(
    stats: HistogramCollector,
    method: str,
    *,
    percentile: float = 99.999,
    levels: int = 256,
    entropy_bins: int = ENTROPY_BINS,
    quantized_bins: int = ENTROPY_QUANTIZED_BINS,
) -> tuple[float, float]:
    """The [lo, hi] an activation is quantized to, by `method`:

    - minmax: the exact range seen;
    - percentile: clip the `(100 - p) / 2` % tails on each side (one side for non-negative data);
    - entropy: onnxruntime's entropy (KL) calibration: the collector's histogram re-binned to
      `entropy_bins` bins over [-T, T] (T = max |x|), the window symmetric around zero whose
      `quantized_bins`-level quantization loses the least information (see entropy_range).
      With onnxruntime's defaults (128 bins, 128 levels) the only window is the whole range, so
      the result is the min/max range, as onnxruntime's; more bins clip (TensorRT-style);
    - mse: the threshold T minimising the expected squared error of quantizing the values to
      [max(-T, min), min(T, max)] with `levels` codes: rounding (step^2 / 12 per value inside)
      plus clipping (squared distance to the range for values outside).
    The result always lies within the exact [min, max] seen. Values excluded by the collector
    (NaN, inf, |x| >= EXTREME) take no part. `levels` is mse's only (entropy's levels are
    `quantized_bins`, as onnxruntime's).
    """
    if stats.samples == 0:
        why = (
            f": all its values were NaN/inf ({stats.nonfinite}) or masks with |x| >= {EXTREME:g} ({stats.extreme})"
            if stats.nonfinite or stats.extreme
            else ""
        )
        raise ConfigError(f"activation {stats.name!r} was never computed on the samples{why}")
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r} (use {', '.join(METHODS)})")
    if method == "minmax" or stats.counts is None or stats.hi <= stats.lo:
        return stats.lo, stats.hi
    if method == "percentile":
        if not 50 < percentile <= 100:
            raise ConfigError(f"percentile must be in (50, 100], not {percentile}")
        lo, hi = _percentile(stats, percentile)
    elif method == "entropy":
        lo, hi = _entropy(stats, entropy_bins, quantized_bins)
    else:
        threshold = _mse_threshold(stats, levels)
        lo, hi = -float(threshold), float(threshold)
    return max(lo, stats.lo), min(hi, stats.hi)


def _counts(stats: HistogramCollector) -> np.ndarray:
    if stats.counts is None:  # pick_range returns min/max before any histogram method runs
        raise ConfigError(f"activation {stats.name!r} has no histogram (collected with method minmax)")
    return stats.counts


def _percentile(stats: HistogramCollector, p: float) -> tuple[float, float]:
    counts, edges = _counts(stats), stats.edges
    cdf = np.cumsum(counts) / counts.sum()
    tail = (100.0 - p) / 100.0
    if stats.lo >= 0:  # one-sided data (after Relu): clip only the top
        hi = edges[1:][np.searchsorted(cdf, 1.0 - tail)]
        return stats.lo, float(hi)
    lo = edges[:-1][np.searchsorted(cdf, tail / 2, side="right")]
    hi = edges[1:][np.searchsorted(cdf, 1.0 - tail / 2)]
    return float(lo), float(hi)


def _rebinned(stats: HistogramCollector, nbins: int) -> tuple[np.ndarray, np.float32]:
    """The collector's counts as `nbins` equal bins over [-T, T], T = max |x| as float32: the
    histogram onnxruntime's collector makes of the same values. Each fine bin's count is spread
    evenly over its width (the cumulative count is interpolated linearly at the new edges and
    rounded), so the counts stay integers and add up to the same total."""
    counts = _counts(stats)
    threshold = np.float32(max(abs(stats.lo), abs(stats.hi)))
    edges = np.linspace(-threshold, threshold, nbins + 1, dtype=np.float32).astype(np.float64)
    fine = np.concatenate(([0], np.cumsum(counts))).astype(np.float64)
    position = (edges + stats.radius) * (NBINS / (2 * stats.radius))  # in fine bins
    cumulative = np.rint(np.interp(position, np.arange(NBINS + 1, dtype=np.float64), fine))
    cumulative[0], cumulative[-1] = 0, fine[-1]  # every value lies in [-T, T]
    return np.diff(cumulative).astype(np.int64), threshold


def entropy_range(
    hist: np.ndarray, threshold: float, lo: float, hi: float, quantized_bins: int = ENTROPY_QUANTIZED_BINS
) -> tuple[float, float]:
    """onnxruntime's entropy pick (HistogramCollector.get_entropy_threshold) on `hist`: int64
    counts of N equal bins over [-threshold, threshold] of values whose min and max are lo, hi.

    Candidate windows are symmetric around the zero bin z = N // 2: bins [z - i, min(z + i + 1,
    N)) for quantized_bins // 2 <= i <= z. p is the window's counts, the values outside piled
    into its end bins; q is the window merged into `quantized_bins` levels, each level's mass
    spread over its non-zero bins (as onnxruntime: an integer per bin, the remainder bins of
    an uneven split left empty, both smoothed with eps = 1e-4). The window with the smallest
    KL(p || q) wins (the first on ties); its edges, as float32 values of np.histogram's edges,
    clamped to [lo, hi], are the range. N == quantized_bins leaves one window: [lo, hi].
    """
    hist = np.ascontiguousarray(hist, dtype=np.int64)
    nbins = hist.size
    divergences = kernels.entropy_divergences(hist, quantized_bins)
    i = quantized_bins // 2 + int(np.argmin(divergences))
    zero = nbins // 2
    start, stop = zero - i, min(zero + i + 1, nbins)
    threshold32 = np.float32(threshold)
    edges = np.linspace(-threshold32, threshold32, nbins + 1, dtype=np.float32)
    return max(float(edges[start]), lo), min(float(edges[stop]), hi)


def _entropy(stats: HistogramCollector, entropy_bins: int, quantized_bins: int) -> tuple[float, float]:
    if not isinstance(entropy_bins, int) or isinstance(entropy_bins, bool) or entropy_bins < quantized_bins:
        raise ConfigError(f"entropy_bins must be an integer >= quantized_bins={quantized_bins}, not {entropy_bins!r}")
    hist, threshold = _rebinned(stats, entropy_bins)
    return entropy_range(hist, float(threshold), stats.lo, stats.hi, quantized_bins)


def _mse_threshold(stats: HistogramCollector, levels: int) -> float:
    """The threshold T (a multiple of the histogram's bin width, up to the largest |x|) whose
    range [max(-T, lo), min(T, hi)], cut into `levels` codes as UINT8 asymmetric quantization
    does, gives the least expected squared error: the values inside round (step^2 / 12 each),
    those outside clip (squared distance to the range). Every candidate at once, from prefix and
    suffix sums of the signed histogram: sum h (c - T)^2 = S2 - 2 T S1 + T^2 S0."""
    counts = _counts(stats).astype(np.float64)
    half = NBINS // 2
    width = stats.radius / half
    centers = (np.arange(NBINS) - half + 0.5) * width
    folded = counts[half:] + counts[:half][::-1]  # |x| bins
    nonzero = np.nonzero(folded)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else 1
    i = np.arange(1, last + 1)
    threshold = i * width
    # Right of T: bins half + i and above; left of -T: bins below half - i.
    right = [np.append(np.cumsum(a[::-1])[::-1], 0.0)[half + i] for a in (counts, counts * centers, counts * centers**2)]
    left = [np.concatenate(([0.0], np.cumsum(a)))[half - i] for a in (counts, counts * centers, counts * centers**2)]
    clip_right = right[2] - 2 * threshold * right[1] + threshold**2 * right[0]
    clip_left = left[2] + 2 * threshold * left[1] + threshold**2 * left[0]
    clip = np.maximum(clip_right, 0.0) + np.maximum(clip_left, 0.0)
    inside = counts.sum() - right[0] - left[0]
    step = (np.minimum(threshold, max(stats.hi, 0.0)) - np.maximum(-threshold, min(stats.lo, 0.0))) / (levels - 1)
    err = inside * step * step / 12.0 + clip
    return float(i[int(np.argmin(err))] * width)
