"""The one way quantrs opens onnxruntime sessions: CPU provider, quiet logs, and the thread
policy of the kernels (the CPUs this process may use, cgroup quota included) unless a count is
given. onnxruntime is imported here, on first use, never at start-up."""

from __future__ import annotations

import os
from typing import Any

from quantrs._cpus import available_cpus

__all__ = ["session"]


def session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    optimize: bool = True,
    optimized_path: str | os.PathLike[str] | None = None,
) -> Any:
    """An onnxruntime.InferenceSession on the CPU. `optimize=False` keeps every tensor of the
    graph (no fusion), as calibration needs; `optimized_path` writes the optimized graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads if threads is not None else available_cpus()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
