"""Report objects: one per run, rendered as rich text for people and as JSON for programs.

Both renderings come from the same dataclasses (`to_dict`), never from scraping text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "TensorReport",
    "QuantizeReport",
    "ValueInfo",
    "InfoReport",
    "BuildInfo",
    "PlanEntry",
    "PlanReport",
    "ModelResult",
    "BatchReport",
    "Check",
    "OutputAgreement",
    "ThresholdResult",
    "LayerError",
    "ActivationError",
    "ValidationReport",
    "ModelTiming",
    "BenchmarkReport",
    "ActivationRange",
    "CalibrationReport",
    "LeftFloat",
    "AutoLayer",
    "AutoCandidate",
    "AutoReport",
]


@dataclass(frozen=True)
class TensorReport:
    name: str
    shape: list[int]
    dtype: str
    quantized: bool
    reason: str
    axis: int | None = None
    storage: str | None = None  # ONNX type of the stored codes, e.g. "INT8", "UINT4"
    mse: float | None = None
    max_abs_error: float | None = None
    kind: str = "initializer"  # or "constant": a Constant node's value
    scope: str = ""  # "" for the main graph, else the If/Loop/Scan body that holds it
    mse_minmax: float | None = None  # with a range search: the MSE plain min/max would give
    block_size: int | None = None  # blocks along `axis` (the reduction axis)
    gptq: str | None = None  # with rounding gptq: "" for compensated codes, else why they are rounded to nearest

    @property
    def search_gain(self) -> float | None:
        """How many times lower the range search made the weight's MSE (None: no search)."""
        if self.mse_minmax is None or self.mse is None:
            return None
        return self.mse_minmax / self.mse if self.mse > 0 else 1.0


@dataclass(frozen=True)
class BuildInfo:
    quantrs: str
    openmp: bool
    threads: int
    simd: str  # the weight kernels' build: "avx512", "avx2" or "baseline" (quantrs._simd)
    numpy: str
    onnx: str
    onnxruntime: str | None


@dataclass(frozen=True)
class QuantizeReport:
    input: str
    output: str
    files_written: list[str]
    bits: int
    per_channel: bool
    symmetric: bool
    storage: str
    block_size: int | None
    opset_before: int
    opset_after: int
    opset_converted: bool
    input_bytes: int
    output_bytes: int
    float_weight_bytes: int
    quantized_weight_bytes: int
    quantized_count: int
    skipped_count: int
    seconds: float
    tensors: list[TensorReport] = field(default_factory=list)
    already_quantized: str = ""  # quantized ops found in the input, e.g. "12 ConvInteger"
    rounding: str = "nearest"  # or gptq: which weights got compensated codes, and why not, is in each tensor's reason
    samples: int = 0  # the samples gptq computed its codes from
    notes: list[str] = field(default_factory=list)  # said beside the figures (e.g. weights matmulnbits wrote as QDQ)

    @property
    def compression(self) -> float:
        return self.input_bytes / self.output_bytes if self.output_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compression"] = round(self.compression, 4)
        return data


@dataclass(frozen=True)
class ValueInfo:
    name: str
    dtype: str
    shape: list[int | str | None]


@dataclass(frozen=True)
class InfoReport:
    path: str
    file_bytes: int
    ir_version: int
    opsets: dict[str, int]
    producer: str
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    node_count: int
    op_counts: dict[str, int]
    initializer_count: int
    float_weight_count: int
    float_weight_elements: int
    float_weight_bytes: int
    external_data: bool
    build: BuildInfo
    float_weight_dtypes: dict[str, int] = field(default_factory=dict)  # FLOAT, FLOAT16, BFLOAT16 -> count
    constant_weight_count: int = 0  # float tensors held in Constant nodes
    subgraph_weight_count: int = 0  # float tensors inside If/Loop/Scan bodies
    subgraph_count: int = 0
    quantized_ops: dict[str, int] = field(default_factory=dict)  # e.g. {"DequantizeLinear": 12}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PlanEntry:
    """One initializer in a dry run: what quantize would do with it, and why."""

    name: str
    shape: list[int]
    dtype: str
    quantize: bool
    reason: str
    bits: int | None = None
    axis: int | None = None
    kind: str = "initializer"
    scope: str = ""


@dataclass(frozen=True)
class PlanReport:
    input: str
    output: str | None
    tensors: list[PlanEntry]

    @property
    def quantized_count(self) -> int:
        return sum(t.quantize for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quantized_count"] = self.quantized_count
        return data


@dataclass(frozen=True)
class ModelResult:
    """The outcome of one model in a batch. status: ok, failed, skipped (the output existed, or
    the model is already quantized: `error` says which), or cancelled (the batch stopped at an
    earlier failure)."""

    input: str
    output: str
    status: str
    error: str | None = None
    input_bytes: int = 0
    output_bytes: int = 0
    quantized_count: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class BatchReport:
    results: list[ModelResult]
    jobs: int
    scheduler: str | None
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count("cancelled") == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {s: self.count(s) for s in ("ok", "failed", "skipped", "cancelled")}
        return data


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class OutputAgreement:
    """How closely one output of the quantized model follows the original, over all samples."""

    name: str
    cosine: float
    max_abs_error: float
    relative_l2: float
    top1_agreement: float | None  # classifier-like outputs (float, last axis >= 2) only


@dataclass(frozen=True)
class ThresholdResult:
    name: str  # min_cosine, max_relative_error (the flag's name; max_relative_l2 before 24.7), min_top1
    limit: float
    output: str
    value: float
    passed: bool


@dataclass(frozen=True)
class LayerError:
    """One quantized weight: its own error, and the error it causes at its consumer's output
    when that node alone runs on the original model's activations ("local" error)."""

    name: str
    storage: str
    consumer: str  # "MatMul 'fc1'"
    weight_mse: float
    weight_sqnr_db: float
    local_relative_l2: float | None
    local_sqnr_db: float | None
    note: str = ""


@dataclass(frozen=True)
class ActivationError:
    """One quantized activation of a static model: the error its QuantizeLinear/DequantizeLinear
    grid puts on the original model's values (finite values; masks left out)."""

    name: str
    storage: str  # UINT8 or INT8
    scale: float
    zero_point: int
    relative_l2: float
    sqnr_db: float
    clipped: float  # share of the values outside the grid's range


@dataclass(frozen=True)
class ValidationReport:
    original: str
    quantized: str
    original_bytes: int
    quantized_bytes: int
    samples: int
    samples_source: str  # a path, or "generated from the model's inputs"
    checks: list[Check]
    outputs: list[OutputAgreement]
    thresholds: list[ThresholdResult]
    layers: list[LayerError] | None = None  # ranked, worst first (--detailed)
    activations: list[ActivationError] | None = None  # static models, ranked, worst first (--detailed)
    suggested_exclude: list[str] | None = None
    suggested_outputs: list[OutputAgreement] | None = None
    suggestion_note: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(t.passed for t in self.thresholds)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


@dataclass(frozen=True)
class ModelTiming:
    path: str
    file_bytes: int
    weight_bytes_by_dtype: dict[str, int]
    load_seconds: float  # median of session creations
    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    latency_ms_stdev: float


@dataclass(frozen=True)
class BenchmarkReport:
    original: ModelTiming
    quantized: ModelTiming
    runs: int
    warmup: int
    threads: int | None
    batch_inputs: str
    # onnxruntime's ops for the quantized weights after optimization: fused integer kernels
    # (e.g. MatMulNBits) and the DequantizeLinear nodes it still runs (None: not measured)
    runtime_ops: dict[str, int] | None = None

    @property
    def compression(self) -> float:
        return self.original.file_bytes / self.quantized.file_bytes if self.quantized.file_bytes else 0.0

    @property
    def speedup(self) -> float:
        q = self.quantized.latency_ms_median
        return self.original.latency_ms_median / q if q else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compression"] = round(self.compression, 4)
        data["speedup"] = round(self.speedup, 4)
        return data


@dataclass(frozen=True)
class ActivationRange:
    name: str
    lo: float
    hi: float
    scale: float
    zero_point: int


@dataclass(frozen=True)
class LeftFloat:
    """An activation calibration looked at and left in float."""

    name: str
    reason: str


@dataclass(frozen=True)
class CalibrationReport:
    input: str
    output: str
    files_written: list[str]
    method: str
    target: str
    samples: int
    activations: list[ActivationRange]
    left_float: list[LeftFloat]  # activations calibrated but kept in float, with the reason
    folded_relus: list[str]  # Relu (and Clip) outputs quantized by their producer's QuantizeLinear
    quantized_weights: list[str]
    quantized_biases: list[str]
    input_bytes: int
    output_bytes: int
    fidelity: list[OutputAgreement]  # float vs quantized on the last calibration samples
    fidelity_samples: int
    inference_groups: int  # onnxruntime runs per sample (activations held at once are bounded)
    inference_seconds: float  # of `seconds`, spent inside onnxruntime's float inference
    collection_seconds: float  # of `seconds`, collecting statistics (inference included)
    fidelity_seconds: float  # of `seconds`, running the quantized model on the held-out samples
    seconds: float
    rounding: str = "nearest"  # or gptq: the weights' codes compensated on the samples
    compensated: list[str] = field(default_factory=list)  # with gptq: the weights it reached

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AutoLayer:
    """One weight's width in the chosen model, and why: its local relative squared error and
    its bytes at each width (quantrs.sensitivity)."""

    name: str
    consumer: str
    width: str
    errors: dict[str, float]
    bytes: dict[str, int]
    note: str = ""


@dataclass(frozen=True)
class AutoCandidate:
    """One model `auto` built and ran on the held-out samples."""

    index: int
    widths: dict[str, int]  # width -> number of weights
    weight_bytes: int  # of the weights auto chose widths for
    file_bytes: int
    predicted_cosine: float
    predicted_relative_error: float
    outputs: list[OutputAgreement]
    met: bool


@dataclass(frozen=True)
class AutoReport:
    input: str
    output: str
    files_written: list[str]
    budget: dict[str, float]
    choices: list[str]
    block_size: int | None
    static: bool
    met: bool
    miss: float  # how far the written model is from the budget (0 when met)
    chosen: int  # the candidate written
    candidates: list[AutoCandidate]
    layers: list[AutoLayer]
    fixed: list[str]  # not measured (inside If/Loop/Scan bodies): at the widest integer width
    weight_bytes: int
    float_weight_bytes: int
    uniform_int8_weight_bytes: int | None
    narrowest_weight_bytes: int
    input_bytes: int
    output_bytes: int
    tuning_samples: int
    sensitivity_samples: int  # of the tuning samples, those whose activations the sensitivity pass held (64 MiB)
    held_out_samples: int
    evaluations: int
    sensitivity_seconds: float
    gain: float  # the error model's fitted gain k (see quantrs.auto)
    floor: float  # and its floor r_0
    seconds: float
    quant_format: str = "qdq"
    rounding: str = "nearest"  # or gptq: codes compensated on the tuning samples
    compensated: int = 0  # with gptq: the weights it reaches (the others are rounded to nearest)
    closest: str | None = None  # budget missed: where the closest model is (nothing is at `output`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
