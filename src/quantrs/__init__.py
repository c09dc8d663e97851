"""quantrs: quantize float32 ONNX models to INT8 and INT4.

    >>> import quantrs
    >>> report = quantrs.quantize("model.onnx", "model_int8.onnx",
    ...                           quantrs.QuantizeConfig(bits=8, per_channel=True))

Heavy modules (numpy, onnx, onnxruntime) are imported on first use, so `quantrs --version`
answers at once.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import TYPE_CHECKING, Any

from quantrs._version import __version__

# Before any compiled kernel loads the OpenMP runtime, which reads this once: a kernel thread that
# waits at a barrier sleeps instead of spinning. On a machine where another process holds a core,
# spinning workers took the cycles their descheduled sibling needed (2 threads ran 2.3x slower
# than one); sleeping ones cost nothing measurable when the machine is idle (bench/busy_threads.py,
# bench/RESULTS.md). A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# public name -> module that defines it
_EXPORTS = {
    "quantize": "quantrs.pipeline",
    "dry_run": "quantrs.pipeline",
    "quantize_batch": "quantrs.batch",
    "load_config": "quantrs.configfile",
    "validate": "quantrs.validation",
    "calibrate": "quantrs.calibration",
    "CalibrationConfig": "quantrs.config",
    "auto": "quantrs.auto",
    "AutoConfig": "quantrs.config",
    "Thresholds": "quantrs.config",
    "benchmark": "quantrs.benchmarking",
    "write_html_report": "quantrs.html_report",
    "inspect_model": "quantrs.info",
    "QuantizeConfig": "quantrs.config",
    "QuantizeReport": "quantrs.report",
    "InfoReport": "quantrs.report",
    "QuantrsError": "quantrs.errors",
    "ModelLoadError": "quantrs.errors",
    "UnsupportedModelError": "quantrs.errors",
    "NonFiniteWeightError": "quantrs.errors",
    "OutputError": "quantrs.errors",
    "ConfigError": "quantrs.errors",
    "SchedulerError": "quantrs.errors",
    "PlanReport": "quantrs.report",
    "BatchReport": "quantrs.report",
    "ValidationReport": "quantrs.report",
    "BenchmarkReport": "quantrs.report",
    "CalibrationReport": "quantrs.report",
    "AutoReport": "quantrs.report",
}

# submodules reachable as attributes (`quantrs.kernels.quantize_per_channel(...)` after a plain
# `import quantrs`), imported on first use like the names above
_SUBMODULES = ("kernels", "reference")

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]

if TYPE_CHECKING:
    from quantrs import kernels, reference
    from quantrs.auto import AutoConfig, auto
    from quantrs.batch import quantize_batch
    from quantrs.benchmarking import benchmark
    from quantrs.calibration import CalibrationConfig, calibrate
    from quantrs.html_report import write_html_report
    from quantrs.validation import Thresholds, validate
    from quantrs.config import QuantizeConfig
    from quantrs.configfile import load_config
    from quantrs.errors import (
        ConfigError,
        ModelLoadError,
        NonFiniteWeightError,
        OutputError,
        QuantrsError,
        SchedulerError,
        UnsupportedModelError,
    )
    from quantrs.info import inspect_model
    from quantrs.pipeline import dry_run, quantize
    from quantrs.report import (
        AutoReport,
        BatchReport,
        BenchmarkReport,
        CalibrationReport,
        InfoReport,
        PlanReport,
        QuantizeReport,
        ValidationReport,
    )


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return import_module(f"quantrs.{name}")  # the import binds it in globals()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'quantrs' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
