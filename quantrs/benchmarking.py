"""`quantrs benchmark`: size and speed of an original and a quantized model, side by side.

Load time is the median of a few onnxruntime session creations; latency is measured over `runs`
calls on one batch after `warmup` calls that are not counted.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from quantrs.model import load_model
from quantrs.report import BenchmarkReport, ModelTiming
from quantrs.samples import generate_samples, input_specs, load_samples

__all__ = ["benchmark"]

LOADS = 3


def benchmark(
    original: str | os.PathLike[str],
    quantized: str | os.PathLike[str],
    *,
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    data: str | os.PathLike[str] | None = None,
) -> BenchmarkReport:
    orig = load_model(original)
    feed = load_samples(data, input_specs(orig.proto), limit=1)[0] if data is not None else generate_samples(orig.proto, 1)[0]
    return BenchmarkReport(
        original=_time_model(Path(original), feed, runs, warmup, threads),
        quantized=_time_model(Path(quantized), feed, runs, warmup, threads),
        runs=runs,
        warmup=warmup,
        threads=threads,
        batch_inputs=", ".join(f"{k}{list(v.shape)}" for k, v in feed.items()),
    )


def _time_model(path: Path, feed: dict[str, np.ndarray], runs: int, warmup: int, threads: int | None) -> ModelTiming:
    import onnxruntime as ort

    model = load_model(path)
    by_dtype: dict[str, int] = defaultdict(int)
    for info in model.weights:
        by_dtype[info.dtype_name] += info.nbytes

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    loads = []
    for _ in range(LOADS):
        started = time.perf_counter()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        loads.append(time.perf_counter() - started)
    for _ in range(warmup):
        session.run(None, feed)
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        latencies.append((time.perf_counter() - started) * 1e3)
    deciles = statistics.quantiles(latencies, n=10) if len(latencies) >= 2 else [latencies[0]] * 9
    return ModelTiming(
        path=str(path),
        file_bytes=model.total_bytes,
        weight_bytes_by_dtype=dict(sorted(by_dtype.items(), key=lambda kv: -kv[1])),
        load_seconds=statistics.median(loads),
        latency_ms_median=statistics.median(latencies),
        latency_ms_p10=deciles[0],
        latency_ms_p90=deciles[-1],
        latency_ms_stdev=statistics.stdev(latencies) if len(latencies) >= 2 else 0.0,
    )
