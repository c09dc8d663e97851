"""`quantrs benchmark`: size and speed of an original and a quantized model, side by side.

Load time is the median of a few onnxruntime session creations; latency is measured over `runs`
calls on one batch after `warmup` calls that are not counted.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from quantrs._ort import session
from quantrs.model import load_model
from quantrs.report import BenchmarkReport, ModelTiming
from quantrs.samples import generate_samples, input_specs, load_samples
from quantrs.compare import Steps

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
    progress: Callable[[int, int], None] | None = None,
) -> BenchmarkReport:
    """Size, load time and latency of both models; `progress(runs done, runs in all)`."""
    orig = load_model(original)
    step = Steps(progress, 2 * (runs + warmup))
    feed = load_samples(data, input_specs(orig.proto), limit=1)[0] if data is not None else generate_samples(orig.proto, 1)[0]
    return BenchmarkReport(
        original=_time_model(Path(original), feed, runs, warmup, threads, step),
        quantized=_time_model(Path(quantized), feed, runs, warmup, threads, step),
        runtime_ops=_runtime_ops(Path(quantized), threads),
        runs=runs,
        warmup=warmup,
        threads=threads,
        batch_inputs=", ".join(f"{k}{list(v.shape)}" for k, v in feed.items()),
    )


FUSION_CHECK_MAX_BYTES = 512 << 20  # above this, writing the optimized graph costs too much


ACTIVATION_DQ = "DequantizeLinear of an activation"


def _runtime_ops(path: Path, threads: int | None) -> dict[str, int] | None:
    """How onnxruntime runs the quantized weights after its graph optimizations: the counts of
    its fused integer kernels (MatMulNBits, QLinear*, ...) and of the DequantizeLinear nodes it
    still executes at every run (weights it dequantizes to compute in float). None for models
    too large to write the optimized graph of."""
    import tempfile

    import onnx

    model = load_model(path)
    if model.total_bytes > FUSION_CHECK_MAX_BYTES:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        session(path, threads=threads, optimized_path=Path(tmp) / "optimized.onnx")
        graph = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False).graph
    counts: dict[str, int] = defaultdict(int)
    stored = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] not in stored:
            counts[ACTIVATION_DQ] += 1  # an activation's Q/DQ pair left unfused: float compute around it
        elif node.op_type in (
            "DequantizeLinear",
            "MatMulNBits",
            "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul",
            "DynamicQuantizeLSTM",
            "QGemm",
            "GatherBlockQuantized",
        ) or node.op_type.startswith("QLinear"):
            counts[node.op_type] += 1
    return dict(sorted(counts.items()))


def _time_model(path: Path, feed: dict[str, np.ndarray], runs: int, warmup: int, threads: int | None, step: Steps) -> ModelTiming:
    model = load_model(path)
    by_dtype: dict[str, int] = defaultdict(int)
    for info in model.weights:
        by_dtype[info.dtype_name] += info.nbytes

    loads = []
    for _ in range(LOADS):
        started = time.perf_counter()
        timed = session(path, threads=threads)
        loads.append(time.perf_counter() - started)
    for _ in range(warmup):
        timed.run(None, feed)
        step()
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        timed.run(None, feed)
        latencies.append((time.perf_counter() - started) * 1e3)
        step()
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
