"""Typed, frozen configuration of a quantization run, validated at construction."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from quantrs.errors import ConfigError

__all__ = ["QuantizeConfig"]


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """How `quantrs.quantize` treats the weights of a model.

    Attributes:
        bits: 8 (INT8/UINT8) or 4 (INT4/UINT4).
        per_channel: one scale per output channel (axis chosen from the graph) instead of one
            per tensor.
        symmetric: signed codes with zero point 0 and range [-(2**(bits-1) - 1), 2**(bits-1) - 1];
            otherwise unsigned codes with a zero point (asymmetric).
        native_int4: store 4-bit codes as ONNX INT4/UINT4 (opset 21, two per byte). False keeps
            each 4-bit code in its own INT8/UINT8 byte, for runtimes without opset 21.
        min_elements: tensors with fewer elements stay float (the scale, zero point and extra
            node would cost more than they save).
        exclude: initializer names that stay float.
        exclude_op_types: op types (e.g. "Gemm") whose weights stay float.
        exclude_regex: regular expressions; initializers whose name matches one (re.search)
            stay float.
        layer_bits: per-initializer bit width overriding `bits`, e.g. {"head.weight": 8} (kept
            as sorted (name, bits) pairs, so that the config stays hashable and picklable).
        n_threads: threads for the kernels; None uses every CPU available (OMP_NUM_THREADS).
        check_output: run onnx.checker on the rewritten graph before writing.
        external_data: write the weights to `<output>.data` beside the model even when a single
            file would do (inputs with external data and outputs over 2 GiB always get it).
    """

    bits: int = 8
    per_channel: bool = False
    symmetric: bool = False
    native_int4: bool = True
    min_elements: int = 1024
    exclude: tuple[str, ...] = field(default=())
    exclude_op_types: tuple[str, ...] = field(default=())
    exclude_regex: tuple[str, ...] = field(default=())
    layer_bits: tuple[tuple[str, int], ...] = field(default=())
    n_threads: int | None = None
    check_output: bool = True
    external_data: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8) or isinstance(self.bits, bool):
            raise ConfigError(f"bits must be 4 or 8, not {self.bits!r}")
        for name in ("per_channel", "symmetric", "native_int4", "check_output", "external_data"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, not {getattr(self, name)!r}")
        if not isinstance(self.min_elements, int) or isinstance(self.min_elements, bool) or self.min_elements < 0:
            raise ConfigError(f"min_elements must be a non-negative integer, not {self.min_elements!r}")
        for name in ("exclude", "exclude_op_types", "exclude_regex"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(n, str) for n in value):
                raise ConfigError(f"{name} must be a list of strings, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        for pattern in self.exclude_regex:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"exclude_regex {pattern!r} is not a valid regular expression ({exc})") from None
        try:
            pairs = dict(self.layer_bits.items() if isinstance(self.layer_bits, Mapping) else self.layer_bits)
        except (TypeError, ValueError):
            raise ConfigError(f"layer_bits must map initializer names to 4 or 8, not {self.layer_bits!r}") from None
        for name, bits in pairs.items():
            if not isinstance(name, str) or bits not in (4, 8) or isinstance(bits, bool):
                raise ConfigError(f"layer_bits: {name!r} must map to 4 or 8, not {bits!r}")
        object.__setattr__(self, "layer_bits", tuple(sorted(pairs.items())))
        if self.n_threads is not None and (
            not isinstance(self.n_threads, int) or isinstance(self.n_threads, bool) or self.n_threads < 1
        ):
            raise ConfigError(f"n_threads must be a positive integer, not {self.n_threads!r}")
