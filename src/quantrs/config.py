"""Typed, frozen configuration of every command, validated at construction.

Each option is declared once, here: its field (name, type, default) and, in the field's
metadata, how it appears on the command line (flags, help) and in config files (the type the
file's value is read as). The CLI options (quantrs.cli), the config-file schema
(quantrs.configfile) and the README's option tables (checked by a test) are derived from this
declaration, so they cannot drift apart. A bad value raises OptionError(field), which the CLI
turns into a usage error naming the flag.

QuantizeConfig (quantize, batch, config), CalibrationConfig (calibrate), AutoConfig (auto),
Thresholds (validate, and auto's budget) and BatchOptions (batch) live here, in a module that
imports nothing heavy, so that the command line is built from them without importing numpy,
onnx or onnxruntime (quantrs.calibration, quantrs.auto and quantrs.validation re-export them).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any, ClassVar, Literal

from quantrs.errors import OptionError

__all__ = [
    "QuantizeConfig",
    "CalibrationConfig",
    "AutoConfig",
    "Thresholds",
    "BatchOptions",
    "OptionSpec",
    "options",
    "BLOCK_SIZES",
]

BLOCK_SIZES = (16, 32, 64, 128, 256)
RANGES = ("minmax", "refit", "search")
QUANT_FORMATS = ("qdq", "matmulnbits")
ROUNDINGS = ("nearest", "gptq")
SMOOTH_AUTO = "auto"  # --smooth auto: each input's strength chosen on the samples (quantrs.smooth)
MATMULNBITS_BLOCK = 32  # --quant-format matmulnbits without --block-size
METHODS = ("minmax", "percentile", "entropy", "mse")  # calibration range pickers (quantrs.ranges)
TARGETS = ("ort-cpu", "tensorrt")  # runtimes static models are laid out for (quantrs.activations)
GROUP_BYTES = 128 << 20  # activations held at once per inference run (quantrs.collect)
WIDTHS = ("4", "8", "float")  # auto's width choices, narrowest first ("float": quantrs.sensitivity.FLOAT)
# A cosine of 1 is no error at all (as a relative error of 0): every quantized weight adds some,
# so only the float model meets it, and auto writes a quantized model: refused before any work.
ONLY_FLOAT = (
    "1 allows no error at all: only the float model meets it, and auto writes a quantized model; "
    "give a budget below 1 (e.g. 0.9999)"
)


@dataclass(frozen=True)
class OptionSpec:
    """How one config field is set from outside Python.

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


def _option(
    default: Any, *flags: str, help: str, cli_type: Any = None, parse: Callable[[Any], Any] | None = None, file_type: Any = None
) -> Any:
    spec = OptionSpec(flags, help, cli_type, parse, file_type)
    return field(default=default, metadata={"option": spec})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _smooth(value: str) -> float | str:
    if value == SMOOTH_AUTO:
        return value
    try:
        return float(value)
    except ValueError:
        raise OptionError("smooth", f"{value!r} is not a strength in [0, 1] or {SMOOTH_AUTO}") from None


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
        False,
        "--symmetric/--asymmetric",
        help="Signed codes with zero point 0 (INT8 in [-127, 127], INT4 in [-8, 7]); default asymmetric unsigned.",
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
            "How each channel's or block's scale is chosen: minmax; "
            "refit (the min/max codes, with their least-squares scale and zero point); "
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
        help="For --quant-format matmulnbits: onnxruntime's compute type for MatMulNBits, 0-4 "
        "(default 0: float, the faster on every model measured; 4: int8 activations).",
    )
    dynamic: bool = _option(
        False,
        "--dynamic",
        help="Dynamic INT8: MatMul weights as INT8 codes read by MatMulInteger, activations quantized at run time "
        "(DynamicQuantizeLinear; onnxruntime's integer kernels, no samples needed), LSTMs as DynamicQuantizeLSTM. "
        "Other weights weight-only, each report line says why.",
    )
    rounding: str = _option(
        "nearest",
        "--rounding",
        help="nearest (each value to its nearest code), "
        "or gptq: codes chosen to keep MatMul/Gemm/Conv outputs on the samples of --data "
        "(error-compensated rounding, GPTQ; the scales are unchanged).",
    )
    smooth: float | str | None = _option(
        None,
        "--smooth",
        help="With --dynamic and --data: SmoothQuant, each MatMul input's scale per channel migrated into its weight's rows "
        "(folded into the norm before it, else a Mul), at this strength in [0, 1], or auto: chosen per input on the samples.",
        cli_type=str,
        parse=_smooth,
        file_type=float | Literal["auto"],
    )
    native_int4: bool = _option(
        True,
        "--native-int4/--int4-as-int8",
        help="Store 4-bit codes as ONNX INT4/UINT4, two per byte (opset 21); "
        "--int4-as-int8 keeps one code per INT8/UINT8 byte (opset 13) for runtimes without opset 21.",
    )
    min_elements: int = _option(1024, "--min-elements", help="Leave tensors with fewer values in float (default 1024).")
    exclude: tuple[str, ...] = _option(
        (),
        "--exclude",
        help="A weight, or a node whose weights, to leave in float (repeatable; checked against the model).",
        cli_type=list[str],
        file_type=list[str],
    )
    exclude_op_types: tuple[str, ...] = _option(
        (),
        "--exclude-op-type",
        help="Leave the weights of this op type in float, e.g. Gemm (repeatable; checked against the model).",
        cli_type=list[str],
        file_type=list[str],
    )
    exclude_regex: tuple[str, ...] = _option(
        (),
        "--exclude-regex",
        help="Leave weights whose name matches this regular expression in float (repeatable).",
        cli_type=list[str],
        file_type=list[str],
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
        if self.smooth is not None:
            self._check_smooth()
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
                "dynamic",
                "takes INT8 weights: 4-bit weights with INT8 activations at run time are MatMulNBits at accuracy level 4 "
                "(--quant-format matmulnbits --bits 4 --accuracy-level 4)",
            )  # fmt: skip
        if self.quant_format != "qdq":
            raise OptionError("dynamic", f"writes MatMulInteger, not {self.quant_format}: leave --quant-format at qdq")
        if self.block_size is not None:
            raise OptionError("dynamic", "reads INT8 weights per channel (or per tensor): --block-size has no integer kernel")

    def _check_smooth(self) -> None:
        """--smooth: a strength in [0, 1] or auto, for dynamic INT8 only (static activations
        have their own ranges; weight-only has no activation to smooth)."""
        if self.smooth != SMOOTH_AUTO and (not _is_number(self.smooth) or not 0 <= self.smooth <= 1):  # type: ignore[operator]
            raise OptionError("smooth", f"must be a strength in [0, 1] or {SMOOTH_AUTO}, not {self.smooth!r}")
        if not self.dynamic:
            raise OptionError("smooth", "migrates the activations' scale into MatMulInteger's weights: it needs --dynamic")
        if self.rounding != "nearest":
            raise OptionError("smooth", f"does not combine with --rounding {self.rounding} (the codes are rounded to nearest)")

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


def _positive_int(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise OptionError(name, f"must be a positive integer, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """How `calibrate` chooses ranges and quantizes (see each field's help below, or
    `quantrs calibrate -h`).

    reduce_range: 7-bit weights ([-63, 63]) avoid the saturation of onnxruntime's u8s8 integer
    kernels on x86 CPUs without VNNI (AVX2-only), for a little accuracy. target "tensorrt":
    NVIDIA's explicit quantization (symmetric INT8 activations, per-channel weights, float
    biases, Q/DQ on the inputs of weighted ops and residual Adds only; quantrs.activations).
    group_bytes: activations held at once per inference run (quantrs.collect). weights: the
    weight options shared with `quantize` (exclusions, min_elements; bits, blocks and
    layer_bits for ort-cpu); weights are symmetric. WEIGHT_OPTIONS: the QuantizeConfig fields
    `calibrate` takes as flags (declared there, with quantize's help).
    """

    WEIGHT_OPTIONS: ClassVar[tuple[str, ...]] = ("rounding", "exclude", "exclude_op_types", "exclude_regex", "dynamic")
    HIDDEN: ClassVar[tuple[str, ...]] = ("dynamic",)  # accepted only to be refused saying what to use

    target: str = _option(
        "ort-cpu",
        "--target",
        help="ort-cpu (onnxruntime's QDQ form, the default) or tensorrt: NVIDIA's explicit-quantization rules "
        "(symmetric INT8, float biases, Q/DQ on inputs only).",
    )
    method: str = _option(
        "minmax", "--method", help="How each activation's range is chosen: minmax (the default), percentile, entropy or mse."
    )
    percentile: float = _option(
        99.999, "--percentile", help="For --method percentile: the share of values kept, in (50, 100] (default 99.999)."
    )
    per_channel: bool = _option(
        True, "--per-channel/--per-tensor", help="One weight scale per output channel (the default), or one per tensor."
    )
    symmetric_activations: bool = _option(
        False, "--symmetric-activations", help="INT8 activations with zero point 0 (default UINT8)."
    )
    reduce_range: bool = _option(False, "--reduce-range", help="7-bit weights, for x86 CPUs without VNNI (see README).")
    max_samples: int | None = _option(None, "--max-samples", help="Use at most this many samples (default: all).")
    min_samples: int = _option(1, "--min-samples", help="Refuse to calibrate on fewer samples (default 1).")
    group_bytes: int = GROUP_BYTES
    weights: QuantizeConfig = field(default_factory=lambda: QuantizeConfig(min_elements=0))

    def __post_init__(self) -> None:
        if self.weights.dynamic:
            raise OptionError(
                "dynamic", "calibrate writes static INT8 (activation ranges from samples); dynamic INT8 is quantize's: "
                "'quantrs quantize MODEL -o OUT --dynamic' (no samples needed)"
            )  # fmt: skip
        if self.method not in METHODS:
            raise OptionError("method", f"must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not _is_number(self.percentile) or not 50 < self.percentile <= 100:
            raise OptionError("percentile", f"must be in (50, 100], not {self.percentile}")
        if self.target not in TARGETS:
            raise OptionError("target", f"must be one of {', '.join(TARGETS)}, not {self.target!r}")
        for name in ("per_channel", "symmetric_activations", "reduce_range"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be true or false, not {getattr(self, name)!r}")
        if self.max_samples is not None:
            _positive_int("max_samples", self.max_samples)
        _positive_int("min_samples", self.min_samples)
        if self.max_samples is not None and self.min_samples > self.max_samples:
            raise OptionError("min_samples", f"must be between 1 and max_samples ({self.max_samples}), not {self.min_samples}")
        _positive_int("group_bytes", self.group_bytes)
        if self.target == "tensorrt" and self.reduce_range:
            raise OptionError("reduce_range", "is not for target tensorrt (INT8 weights, [-127, 127])")
        if self.target == "tensorrt" and not self.per_channel:
            raise OptionError("per_channel", "must be true for target tensorrt (its weights are per channel, not --per-tensor)")

    @property
    def signed_activations(self) -> bool:
        return self.symmetric_activations or self.target == "tensorrt"


def _fraction(name: str, value: object, interval: str = "(0, 1]") -> None:
    if value is not None and (not _is_number(value) or not 0 < value <= 1):  # type: ignore[operator]
        raise OptionError(name, f"must be in {interval}, not {value}")


@dataclass(frozen=True)
class Thresholds:
    """What `validate` requires of every output (None: not checked), and auto's budget.

    `max_relative_l2=`, the old keyword (and attribute) for max_relative_error, is still accepted."""

    min_cosine: float | None = _option(
        None, "--min-cosine", help="Cosine similarity to the float model's outputs, at least this on every output, in (0, 1]."
    )
    max_relative_error: float | None = _option(
        None, "--max-relative-error", help="Relative L2 error of the outputs, at most this on every output (e.g. 0.05)."
    )
    min_top1: float | None = _option(None, "--min-top1", help="Top-1 agreement of classifier outputs, at least this, in (0, 1].")
    max_relative_l2: InitVar[float | None] = None

    def __post_init__(self, max_relative_l2: float | None) -> None:
        if max_relative_l2 is not None:
            if self.max_relative_error is not None and self.max_relative_error != max_relative_l2:
                raise OptionError("max_relative_error", "and max_relative_l2 (its old name) differ: give one")
            object.__setattr__(self, "max_relative_error", max_relative_l2)
        object.__setattr__(self, "max_relative_l2", self.max_relative_error)  # the old name, read
        _fraction("min_cosine", self.min_cosine)
        if self.max_relative_error is not None and (not _is_number(self.max_relative_error) or not self.max_relative_error > 0):
            raise OptionError("max_relative_error", f"must be positive, not {self.max_relative_error}")
        _fraction("min_top1", self.min_top1)

    def evaluate(self, outputs: list) -> list:
        """One ThresholdResult per output and threshold given (top-1: classifier outputs only)."""
        from quantrs.report import ThresholdResult

        results = []
        for out in outputs:
            if self.min_cosine is not None:
                results.append(
                    ThresholdResult("min_cosine", self.min_cosine, out.name, out.cosine, out.cosine >= self.min_cosine)
                )
            if self.max_relative_error is not None:
                results.append(
                    ThresholdResult(
                        "max_relative_error",
                        self.max_relative_error,
                        out.name,
                        out.relative_l2,
                        out.relative_l2 <= self.max_relative_error,
                    )
                )
            if self.min_top1 is not None and out.top1_agreement is not None:
                results.append(
                    ThresholdResult("min_top1", self.min_top1, out.name, out.top1_agreement, out.top1_agreement >= self.min_top1)
                )
        return results


def _shared(cls: type, name: str) -> Any:
    """A field declared as `cls`'s field `name` is (default, flags, help): one declaration."""
    declared = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field(default=declared.default, metadata=declared.metadata)


def _widths(value: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in value.split(",") if c.strip())


def _block_size(value: int) -> int | None:
    return value or None  # 0: per channel


def error_budget(min_cosine: float | None, max_relative_error: float | None) -> float | None:
    """The output's relative squared error a budget allows (the tighter of cosine and relative
    error), or None without either."""
    allowed = []
    if min_cosine is not None:
        allowed.append(1 / min_cosine**2 - 1)
    if max_relative_error is not None:
        allowed.append(max_relative_error**2)
    return min(allowed) if allowed else None


@dataclass(frozen=True, kw_only=True)
class AutoConfig:
    """The budget and the room `auto` has (see each field's help below, or `quantrs auto -h`).

    The budget (min_cosine, max_relative_error, min_top1, declared by Thresholds) holds on every
    model output over the held-out samples, as `validate` measures them; a cosine or a relative
    error is required, and a cosine of 1 is refused, as a relative error of 0: only the float
    model meets it. block_size None: 4-bit weights per channel. weights: further quantize
    options (exclusions, min_elements, threads, quant_format: matmulnbits writes onnxruntime's
    MatMulNBits / GatherBlockQuantized at 4 and 8 bits; rounding: gptq compensates the codes on
    the tuning samples, in the sensitivity pass as in every candidate). WEIGHT_OPTIONS: the
    QuantizeConfig fields `auto` takes as flags (declared there, with quantize's help).
    """

    WEIGHT_OPTIONS: ClassVar[tuple[str, ...]] = ("exclude", "exclude_regex", "quant_format", "rounding")
    HIDDEN: ClassVar[tuple[str, ...]] = ()

    min_cosine: float | None = _shared(Thresholds, "min_cosine")
    max_relative_error: float | None = _shared(Thresholds, "max_relative_error")
    min_top1: float | None = _shared(Thresholds, "min_top1")
    choices: tuple[str, ...] = _option(
        WIDTHS,
        "--choices",
        help="Widths a weight may get: a comma-separated list from 4, 8, float (default 4,8,float).",
        cli_type=str,
        parse=_widths,
    )
    block_size: int | None = _option(
        32,
        "--block-size",
        help="4-bit weights in blocks of N values, as quantize's --block-size (16-256, default 32); 0: per channel. "
        "8-bit weights are per channel (with --quant-format matmulnbits, MatMul weights in these blocks).",
        cli_type=int,
        parse=_block_size,
    )
    static: bool = _option(
        False, "--static", help="Also quantize activations (calibrated INT8); the budget is measured on that model."
    )
    max_evaluations: int = _option(6, "--max-evaluations", help="Candidates built and run, at most (default 6).")
    max_samples: int | None = _option(
        None, "--max-samples", help="Samples read from --data and --eval-data, at most (default: all)."
    )
    weights: QuantizeConfig = field(default_factory=QuantizeConfig)

    def __post_init__(self) -> None:
        if self.min_cosine == 1:
            raise OptionError("min_cosine", ONLY_FLOAT)
        self.thresholds  # noqa: B018  (their own checks)
        _fraction("min_cosine", self.min_cosine, "(0, 1)")
        _fraction("max_relative_error", self.max_relative_error)
        if self.min_cosine is None and self.max_relative_error is None:
            raise OptionError(
                "min_cosine", "a budget is needed: --min-cosine or --max-relative-error (--min-top1 is checked besides)"
            )
        if isinstance(self.choices, str):
            object.__setattr__(self, "choices", _widths(self.choices))
        unknown = [c for c in self.choices if c not in WIDTHS]
        if unknown or not self.choices:
            raise OptionError("choices", f"must be among {', '.join(WIDTHS)}, not {', '.join(map(str, unknown)) or 'none'}")
        if set(self.choices) == {"float"}:
            raise OptionError("choices", "must include an integer width (4 or 8)")
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.block_size is not None and (not _is_int(self.block_size) or self.block_size not in BLOCK_SIZES):
            raise OptionError(
                "block_size",
                f"must be one of {', '.join(map(str, BLOCK_SIZES))} (or 0/None: per channel), not {self.block_size!r}",
            )
        if not isinstance(self.static, bool):
            raise OptionError("static", f"must be true or false, not {self.static!r}")
        if self.static and self.weights.quant_format != "qdq":
            raise OptionError(
                "quant_format",
                f"{self.weights.quant_format}: static (calibrated activations) writes QDQ; matmulnbits is weight-only",
            )
        if self.weights.quant_format == "matmulnbits" and self.block_size is None:
            raise OptionError("block_size", "per channel is not a MatMulNBits layout: matmulnbits stores weights in blocks")
        _positive_int("max_evaluations", self.max_evaluations)
        if self.max_samples is not None:
            _positive_int("max_samples", self.max_samples)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(min_cosine=self.min_cosine, max_relative_error=self.max_relative_error, min_top1=self.min_top1)

    @property
    def error_budget(self) -> float:
        allowed = error_budget(self.min_cosine, self.max_relative_error)
        assert allowed is not None  # __post_init__ requires one of them
        return allowed

    @property
    def widths(self) -> list[str]:
        return [w for w in WIDTHS if w in self.choices]


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """How `batch` (and `config`, over a file's batch section) runs many models."""

    jobs: int = _option(1, "--jobs", "-j", help="Models quantized at once, in local processes (default 1).")
    skip_existing: bool = _option(
        False,
        "--skip-existing/--no-skip-existing",
        help="Skip models whose output exists (rerun after an interruption); default: redo them.",
    )
    continue_on_error: bool = _option(
        False, "--continue-on-error/--stop-on-error", help="Go on with the other models when one fails; default: stop."
    )
    scheduler: str | None = _option(
        None, "--scheduler", help="Run on this Dask scheduler (tcp://host:8786); needs quantrs\\[dask]."
    )

    def __post_init__(self) -> None:
        _positive_int("jobs", self.jobs)
        for name in ("skip_existing", "continue_on_error"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(name, f"must be true or false, not {getattr(self, name)!r}")
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise OptionError("scheduler", f"must be an address (tcp://host:8786), not {self.scheduler!r}")


CONFIGS: tuple[type, ...] = (QuantizeConfig, CalibrationConfig, AutoConfig, Thresholds, BatchOptions)


def options(cls: type = QuantizeConfig) -> list[tuple[dataclasses.Field, OptionSpec]]:
    """The fields of `cls` that are options (command line and config files), in order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def flag_of(field_name: str) -> str | None:
    """The long flag that sets a field of any command's config (a field's flag is the same in
    every config that has it), or None."""
    return next((spec.flag for cls in CONFIGS for f, spec in options(cls) if f.name == field_name), None)


def _check_unique() -> None:
    seen: dict[str, str] = {}
    for cls in CONFIGS:
        flags = [flag for _, spec in options(cls) for spelling in spec.flags for flag in spelling.split("/")]
        if len(flags) != len(set(flags)):
            raise RuntimeError(f"duplicate option flags in {cls.__name__}: {sorted(flags)}")
        for f, spec in options(cls):
            if seen.setdefault(f.name, spec.flag) != spec.flag:
                raise RuntimeError(f"{cls.__name__}.{f.name} is set by {spec.flag}, elsewhere by {seen[f.name]}")


_check_unique()
