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
    "first_line",
]


class QuantrsError(Exception):
    """Base of every error quantrs raises on purpose (bad input, unsupported model, ...).

    The file and the tensor an error is about are data (`file`, `tensor`), filled in by
    whichever layer knows them (`about`), and rendered once, by str(): "model.onnx: w1 holds
    NaN or infinite values". Re-raising the same exception keeps its cause and traceback.
    """

    def __init__(self, message: str = "", *, file: object = None, tensor: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.tensor = tensor

    def about(self, *, file: object = None, tensor: str | None = None) -> QuantrsError:
        """Fill in the file and tensor if not known yet; returns the exception itself."""
        if self.file is None and file is not None:
            self.file = file
        if self.tensor is None and tensor is not None:
            self.tensor = tensor
        return self

    def __str__(self) -> str:
        text = f"{self.tensor} {self.message}" if self.tensor is not None else self.message
        return f"{self.file}: {text}" if self.file is not None else text


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

    def __init__(self, field: str, message: str, *, file: object = None) -> None:
        super().__init__(f"{field} {message}", file=file)
        self.field, self.detail = field, message


class UnknownNameError(ConfigError):
    """An option names a weight or node the model does not have (`exclude`, `layer_bits`).

    Carries the option's field name, so that the CLI can name its flag and a config file its
    field path.
    """

    def __init__(self, field: str, name: str, what: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"{name!r} matches no {what} of the model{hint}")
        self.field, self.name, self.what, self.suggestions = field, name, what, list(suggestions)


class AlreadyQuantizedError(UnsupportedModelError):
    """The model is already quantized and holds no float weight left to quantize."""


class SchedulerError(QuantrsError, ConnectionError):
    """The Dask scheduler given for a batch cannot be reached or used."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (another library's, about to be said as one
    line of ours), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
