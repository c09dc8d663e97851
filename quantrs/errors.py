"""One exception hierarchy. The CLI prints any QuantrsError as one line and exits 1; anything
else escaping the library is a bug."""

from __future__ import annotations

__all__ = [
    "QuantrsError",
    "ModelLoadError",
    "UnsupportedModelError",
    "NonFiniteWeightError",
    "OutputError",
    "ConfigError",
    "SchedulerError",
]


class QuantrsError(Exception):
    """Base of every error quantrs raises on purpose (bad input, unsupported model, ...)."""


class ModelLoadError(QuantrsError, OSError):
    """The input file is missing, unreadable, not ONNX, or truncated."""


class UnsupportedModelError(QuantrsError, ValueError):
    """The model is valid ONNX but quantrs cannot quantize it (no float weights, ...)."""


class NonFiniteWeightError(QuantrsError, ValueError):
    """A weight holds NaN or infinity: no scale can represent it, so quantrs refuses it."""


class OutputError(QuantrsError, OSError):
    """The output cannot be written where asked (same path as the input, unwritable folder)."""


class ConfigError(QuantrsError, ValueError):
    """An option or configuration value is invalid."""


class SchedulerError(QuantrsError, ConnectionError):
    """The Dask scheduler given for a batch cannot be reached or used."""
