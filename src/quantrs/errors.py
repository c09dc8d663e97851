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
    "OptionError",
    "UnknownNameError",
    "AlreadyQuantizedError",
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


class OptionError(ConfigError):
    """An option's value is invalid. Carries the option's field name, so that the CLI can name
    its flag (a usage error) and a config file the key."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field} {message}")


class UnknownNameError(ConfigError):
    """An option names a weight or node the model does not have (`exclude`, `layer_bits`).

    Carries the option's field name, so that the CLI can name its flag and a config file its
    field path.
    """

    def __init__(self, field: str, name: str, what: str, suggestions: list[str]) -> None:
        self.field, self.name, self.what, self.suggestions = field, name, what, list(suggestions)
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"{name!r} matches no {what} of the model{hint}")


class AlreadyQuantizedError(UnsupportedModelError):
    """The model is already quantized and holds no float weight left to quantize."""


class SchedulerError(QuantrsError, ConnectionError):
    """The Dask scheduler given for a batch cannot be reached or used."""
