"""Activation statistics folded in sample by sample, and the range pickers of calibration.

A HistogramCollector keeps, per tensor, the exact min and max and a histogram over a symmetric
range [-R, R] with a fixed number of bins. When a sample goes past R, R doubles and adjacent
bins merge in pairs: old counts are never re-binned approximately, and memory stays constant
however many samples arrive (the design of onnxruntime's histogram collector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantrs import kernels
from quantrs.errors import ConfigError

__all__ = ["HistogramCollector", "pick_range", "METHODS"]

METHODS = ("minmax", "percentile", "entropy", "mse")
NBINS = 2048  # over [-R, R]; a multiple of 4 so that doubling keeps edges aligned


@dataclass
class HistogramCollector:
    """Running statistics of one tensor."""

    name: str
    with_histogram: bool = True
    lo: float = math.inf
    hi: float = -math.inf
    radius: float = 0.0
    counts: np.ndarray | None = None
    samples: int = 0

    def add(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size == 0:
            return
        rng = kernels.minmax(x, name=f"activation {self.name!r}")
        lo, hi = float(rng.lo[0]), float(rng.hi[0])
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
        kernels.histogram(x, -self.radius, self.radius, self.counts)

    def _double(self) -> None:
        assert self.counts is not None  # add() made them before any doubling
        merged = self.counts.reshape(NBINS // 2, 2).sum(axis=1)
        self.counts = np.zeros(NBINS, dtype=np.int64)
        self.counts[NBINS // 4 : NBINS // 4 + NBINS // 2] = merged
        self.radius *= 2

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.radius, self.radius, NBINS + 1)


def pick_range(stats: HistogramCollector, method: str, *, percentile: float = 99.999, levels: int = 256) -> tuple[float, float]:
    """The [lo, hi] an activation is quantized to, by `method`:

    - minmax: the exact range seen;
    - percentile: clip the `(100 - p) / 2` % tails on each side (one side for non-negative data);
    - entropy: the clip threshold T minimising the KL divergence between the distribution of |x|
      and its `levels`-level quantization (TensorRT's calibration);
    - mse: the threshold minimising the expected squared error, rounding (step^2 / 12 per value
      inside) plus clipping (distance to T for values outside).
    The result always lies within the exact [min, max] seen.
    """
    if stats.samples == 0:
        raise ConfigError(f"activation {stats.name!r} was never computed on the samples")
    if method == "minmax" or stats.counts is None or stats.hi <= stats.lo:
        return stats.lo, stats.hi
    if method == "percentile":
        if not 50 < percentile <= 100:
            raise ConfigError(f"percentile must be in (50, 100], not {percentile}")
        lo, hi = _percentile(stats, percentile)
    elif method in ("entropy", "mse"):
        threshold = _entropy_threshold(stats, levels) if method == "entropy" else _mse_threshold(stats, levels)
        lo, hi = -float(threshold), float(threshold)
    else:
        raise ConfigError(f"unknown calibration method {method!r} (use {', '.join(METHODS)})")
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


def _abs_histogram(stats: HistogramCollector) -> tuple[np.ndarray, float]:
    """Counts of |x| over [0, R] (NBINS / 2 bins) and the bin width."""
    half = NBINS // 2
    counts = _counts(stats)
    folded = counts[half:].copy()
    folded += counts[:half][::-1]
    return folded.astype(np.float64), stats.radius / half


def _entropy_threshold(stats: HistogramCollector, levels: int) -> float:
    hist, width = _abs_histogram(stats)
    target = max(levels // 2, 2)  # |x| uses half the codes of a symmetric range
    nonzero = np.nonzero(hist)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else target
    best, best_kl = last, math.inf
    for i in range(target, max(last, target) + 1):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()  # clipped values pile up in the last bin
        # Q: the first i bins merged into `target` levels, each level's mass spread evenly over
        # its non-empty bins.
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


def _mse_threshold(stats: HistogramCollector, levels: int) -> float:
    hist, width = _abs_histogram(stats)
    centers = (np.arange(hist.size) + 0.5) * width
    nonzero = np.nonzero(hist)[0]
    last = int(nonzero[-1]) + 1 if nonzero.size else 1
    candidates = np.arange(1, last + 1)
    best, best_err = last, math.inf
    cum_counts = np.cumsum(hist)
    for i in candidates:
        threshold = i * width
        step = 2 * threshold / (levels - 1)
        inside = cum_counts[i - 1]
        outside = hist[i:]
        clip = float(np.sum(outside * (centers[i:] - threshold) ** 2))
        err = inside * step * step / 12.0 + clip
        if err < best_err:
            best, best_err = int(i), err
    return best * width
