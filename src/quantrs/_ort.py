"""The one way quantrs opens onnxruntime sessions: CPU provider, quiet logs, and the thread
policy of the kernels (the CPUs this process may use, cgroup quota included) unless a count is
given. onnxruntime is imported here, on first use, never at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from quantrs._cpus import available_cpus

if TYPE_CHECKING:  # onnxruntime ships no type information: to mypy these are Any, named for the reader
    from onnxruntime import InferenceSession, SessionOptions

__all__ = ["options", "session"]


def options(*, threads: int | None = None, optimize: bool = True, lean: bool = False) -> SessionOptions:
    """onnxruntime.SessionOptions with quantrs' policy. `optimize=False` keeps every tensor of
    the graph (no fusion). `lean`: for sessions that live side by side (calibration groups,
    single-node sensitivity runs): no arena and no memory pattern (each session would keep its
    last run's peak reserved, and the reservations add up) and no pre-packing (a packed copy of
    every weight)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: errors reach quantrs as exceptions, said once as one line
    opts.intra_op_num_threads = threads if threads is not None else available_cpus()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if lean:
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        opts.add_session_config_entry("session.disable_prepacking", "1")
    return opts


def session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    optimize: bool = True,
    optimized_path: str | os.PathLike[str] | None = None,
    lean: bool = False,
    config: Mapping[str, str] | None = None,
) -> InferenceSession:
    """An onnxruntime.InferenceSession on the CPU (see options); `optimized_path` writes the
    optimized graph; `config` adds session configuration entries."""
    import onnxruntime as ort

    opts = options(threads=threads, optimize=optimize, lean=lean)
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
