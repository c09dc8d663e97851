"""Report objects: one per run, rendered as rich text for people and as JSON for programs.

Both renderings come from the same dataclasses (`to_dict`), never from scraping text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TensorReport", "QuantizeReport", "ValueInfo", "InfoReport", "BuildInfo"]


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


@dataclass(frozen=True)
class BuildInfo:
    quantrs: str
    openmp: bool
    threads: int
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
