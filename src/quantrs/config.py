"""Typed, frozen configuration of a quantization run, validated at construction.

Each option is declared once, here: its field (name, type, default) and, in the field's
metadata, how it appears on the command line (flags, help) and in config files (the type the
file's value is read as). The CLI options (quantrs.cli), the config-file schema
(quantrs.configfile) and the README's option table (checked by a test) are derived from this
declaration, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from quantrs.errors import OptionError

__all__ = ["QuantizeConfig", "OptionSpec", "options", "BLOCK_SIZES"]

BLOCK_SIZES = (16, 32, 64, 128, 256)
RANGES = ("minmax", "refit", "search")
QUANT_FORMATS = ("qdq", "matmulnbits")
ROUNDINGS = ("nearest", "gptq")
MATMULNBITS_BLOCK = 32  # --quant-format matmulnbits without --block-size


@dataclass(frozen=True)
class OptionSpec:
    """How one QuantizeConfig field is set from outside Python.

    flags: typer's spelling, e.g. ("--bits", "-b") or ("--per-channel/--per-tensor",).
    cli_type: the type typer parses (list[str] for repeatable options); None: the field's.
    parse: turns the parsed command-line value into the field's value (e.g. NAME=BITS pairs).
    file_type: the type a config file's value is validated as; None: the field's.
    """

    flags: tuple[str, ...]
    help: str
    cli_type: Any = None
    parse: Callable[[Any], Any] | None = None
    file_type: Any = None

    @property
    def flag(self) -> str:
        """The long flag that sets the field (the first spelling), for error messages."""
        return self.flags[0].split("/")[0]


def _option(default: Any, *flags: str, help: str, cli_type: Any = None, parse=None, file_type: Any = None) -> Any:
    spec = OptionSpec(flags, help, cli_type, parse, file_type)
    return field(default=default, metadata={"option": spec})


def _layer_bits(values: list[str]) -> dict[str, int]:
    out = {}
    for value in values:
        name, sep, bits = value.rpartition("=")
        if not sep or not name or bits not in ("4", "8"):
            raise OptionError("layer_bits", f"{value!r} is not NAME=4 or NAME=8")
        out[name] = int(bits)
    return out


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """How `quantrs.quantize` treats the weights of a model (see each field's help below, or
    `quantrs quantize -h`). `layer_bits` is kept as sorted (name, bits) pairs so that the config
    stays hashable and picklable; a mapping is accepted."""

    bits: int = _option(8, "--bits", "-b", help="8 (INT8, the default) or 4 (INT4).", file_type=Literal[4, 8])
    per_channel: bool = _option(
        True,
        "--per-channel/--per-tensor",
        help=(
            "One scale per output channel, the axis taken from how the graph uses the weight (the default); "
            "--per-tensor: one scale for the whole tensor (coarser; INT8 per tensor keeps a model's opset below 13)."
        ),
    )
    symmetric: bool = _option(
        False, "--symmetric/--asymmetric", help="Signed codes with zero point 0 (INT8 in [-127, 127], INT4 in [-8, 7]); default asymmetric unsigned."
    )
    block_size: int | None = _option(
        None,
        "--block-size",
        help="One scale per block of N values along each weight's input (reduction) axis: 16, 32, 64, 128 or 256 (opset 21).",
    )
    range: str | None = _option(
        None,
        "--range",
        help=(
            "How each channel's or block's scale is chosen: minmax; refit (the min/max codes, with their least-squares scale and zero point); "
            "search (also tries clipping the range, lowest weight error). Default: refit for 4-bit blocks, else minmax."
        ),
    )
    quant_format: str = _option(
        "qdq",
        "--quant-format",
        help=(
            "qdq (standard DequantizeLinear) or matmulnbits: MatMul weights as onnxruntime's com.microsoft.MatMulNBits "
            "and embedding tables as GatherBlockQuantized (packed blocks, fused kernels; onnxruntime only). Default qdq."
        ),
    )
    accuracy_level: int | None = _option(
        None,
        "--accuracy-level",
        help="For --quant-format matmulnbits: onnxruntime's compute type for MatMulNBits, 0-4 (4: int8 activations, the CPU default).",
    )
    dynamic: bool = _option(
        False,
        "--dynamic",
        help="Dynamic INT8: MatMul weights as INT8 codes read by MatMulInteger, activations quantized at run time "
        "(DynamicQuantizeLinear; onnxruntime's integer kernels, no samples needed). Other weights weight-only, each report line says why.",
    )
    rounding: str = _option(
        "nearest",
        "--rounding",
        help="nearest (each value to its nearest code), or gptq: codes chosen to keep MatMul/Gemm/Conv outputs on the samples of --data "
        "(error-compensated rounding, GPTQ; the scales are unchanged).",
    )
    native_int4: bool = _option(
        True,
        "--native-int4/--int4-as-int8",
        help="Store 4-bit codes as ONNX INT4/UINT4, two per byte (opset 21); --int4-as-int8 keeps one code per INT8/UINT8 byte (opset 13) for runtimes without opset 21.",
    )
    min_elements: int = _option(1024, "--min-elements", help="Leave tensors with fewer values in float (default 1024).")
    exclude: tuple[str, ...] = _option(
        (), "--exclude", help="A weight, or a node whose weights, to leave in float (repeatable; checked against the model).", cli_type=list[str], file_type=list[str]
    )
    exclude_op_types: tuple[str, ...] = _option(
        (), "--exclude-op-type", help="Leave the weights of this op type in float, e.g. Gemm (repeatable; checked against the model).", cli_type=list[str], file_type=list[str]
    )
    exclude_regex: tuple[str, ...] = _option(
        (), "--exclude-regex", help="Leave weights whose name matches this regular expression in float (repeatable).", cli_type=list[str], file_type=list[str]
    )
    layer_bits: tuple[tuple[str, int], ...] = _option(
        (),
        "--layer-bits",
        help="NAME=4|8: this weight's bit width, INT4 and INT8 mixed in one model (repeatable; checked).",
        cli_type=list[str],
        parse=_layer_bits,
        file_type=dict[str, Literal[4, 8]],
    )
    n_threads: int | None = _option(None, "--threads", help="Kernel threads (default: the CPUs this process may use).")
    external_data: bool = _option(
        False, "--external-data", help="Write the weights to OUTPUT.data beside the model even when a single file would do."
    )
    check_output: bool = True  # run onnx.checker on the rewritten graph (Python only)

    def __post_init__(self) -> None:
        """Check every option (an OptionError names the field) and store the lists as tuples."""
        self._check_scalars()
        self._check_name_lists()
        layer_bits = self._check_layer_bits()
        if self.dynamic:
            self._check_dynamic(layer_bits)
        if self.n_threads is not None and (
            not isinstance(self.n_threads, int) or isinstance(self.n_threads, bool) or self.n_threads < 1
        ):
            raise OptionError("n_threads", f"must be a positive integer, not {self.n_threads!r}")

    def _check_scalars(self) -> None:
        """The widths, flags and choices: each one of its allowed values."""
        if self.bits not in (4, 8) or isinstance(self.bits, bool):
            raise OptionError("bits", f"must be 4 or 8, not {self.bits!r}")
        for name in ("per_channel", "symmetric", "native_int4", "check_output", "external_data", "dynamic"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be true or false, not {getattr(self, name)!r}")
        if self.block_size is not None and (isinstance(self.block_size, bool) or self.block_size not in BLOCK_SIZES):
            raise OptionError("block_size", f"must be one of {', '.join(map(str, BLOCK_SIZES))}, not {self.block_size!r}")
        if self.quant_format not in QUANT_FORMATS:
            raise OptionError("quant_format", f"must be one of {', '.join(QUANT_FORMATS)}, not {self.quant_format!r}")
        if self.accuracy_level is not None and (isinstance(self.accuracy_level, bool) or self.accuracy_level not in range(5)):
            raise OptionError("accuracy_level", f"must be 0, 1, 2, 3 or 4, not {self.accuracy_level!r}")
        if self.accuracy_level is not None and self.quant_format != "matmulnbits":
            raise OptionError("accuracy_level", "is read only by --quant-format matmulnbits (MatMulNBits' compute type)")
        if self.rounding not in ROUNDINGS:
            raise OptionError("rounding", f"must be one of {', '.join(ROUNDINGS)}, not {self.rounding!r}")
        if self.range is not None and self.range not in RANGES:
            raise OptionError("range", f"must be one of {', '.join(RANGES)}, not {self.range!r}")
        if not isinstance(self.min_elements, int) or isinstance(self.min_elements, bool) or self.min_elements < 0:
            raise OptionError("min_elements", f"must be a non-negative integer, not {self.min_elements!r}")

    def _check_name_lists(self) -> None:
        """--exclude, --exclude-op-type, --exclude-regex: lists of strings (stored as tuples),
        the patterns valid regular expressions."""
        for name in ("exclude", "exclude_op_types", "exclude_regex"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(n, str) for n in value):
                raise OptionError(name, f"must be a list of strings, not {value!r}")
            object.__setattr__(self, name, tuple(value))
        for pattern in self.exclude_regex:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise OptionError("exclude_regex", f"{pattern!r} is not a valid regular expression ({exc})") from None

    def _check_layer_bits(self) -> dict[str, int]:
        """--layer-bits: names to 4 or 8 (a mapping or pairs), stored as sorted pairs."""
        try:
            pairs = dict(self.layer_bits.items() if isinstance(self.layer_bits, Mapping) else self.layer_bits)
        except (TypeError, ValueError):
            raise OptionError("layer_bits", f"must map weight names to 4 or 8, not {self.layer_bits!r}") from None
        for name, bits in pairs.items():
            if not isinstance(name, str) or bits not in (4, 8) or isinstance(bits, bool):
                raise OptionError("layer_bits", f"{name!r} must map to 4 or 8, not {bits!r}")
        object.__setattr__(self, "layer_bits", tuple(sorted(pairs.items())))
        return pairs

    def _check_dynamic(self, layer_bits: Mapping[str, int]) -> None:
        """--dynamic reads INT8 weights through MatMulInteger: each refusal says what to use."""
        if self.bits != 8 or 4 in layer_bits.values():
            raise OptionError(
                "dynamic", "takes INT8 weights: 4-bit weights with INT8 activations at run time are MatMulNBits at accuracy level 4 "
                "(--quant-format matmulnbits --bits 4 --accuracy-level 4)"
            )  # fmt: skip
        if self.quant_format != "qdq":
            raise OptionError("dynamic", f"writes MatMulInteger, not {self.quant_format}: leave --quant-format at qdq")
        if self.block_size is not None:
            raise OptionError("dynamic", "reads INT8 weights per channel (or per tensor): --block-size has no integer kernel")

    @property
    def blocks(self) -> int | None:
        """The block size weights are quantized in: --block-size, or 32 with --quant-format
        matmulnbits (a block format); None: per channel or per tensor."""
        if self.block_size is None and self.quant_format == "matmulnbits":
            return MATMULNBITS_BLOCK
        return self.block_size

    def range_for(self, bits: int, blocked: bool) -> str:
        """The range method for a weight of `bits` bits: the option, or refit for 4-bit blocks
        and minmax otherwise (a channel is not a block: refitting a whole channel reads it from
        memory again, 1.5x the end-to-end time of 4-bit per channel at 400M parameters, where a
        block is refitted while it is in cache). Not search by default: on all-MiniLM-L6-v2,
        4-bit blocks of 32, it lowers the weights' squared error by 7% (refit: 3%) and the
        sentence embeddings' cosine not at all (0.973 with each), at twice refit's cost."""
        return self.range or ("refit" if bits == 4 and blocked else "minmax")


def options() -> list[tuple[dataclasses.Field, OptionSpec]]:
    """The QuantizeConfig fields that are options (command line and config files), in order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(QuantizeConfig) if "option" in f.metadata]


def _check_unique() -> None:
    flags = [flag for _, spec in options() for spelling in spec.flags for flag in spelling.split("/")]
    if len(flags) != len(set(flags)):
        raise RuntimeError(f"duplicate option flags in QuantizeConfig: {sorted(flags)}")


_check_unique()
