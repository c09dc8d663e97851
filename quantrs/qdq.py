"""Graph rewrites: weight-only QDQ insertion and the opset change it may need.

The passes work on the model's skeleton (initializers without their bytes) and say what they do
to their input: `convert_opset` returns a new model and leaves its input alone;
`insert_weight_dq` edits the graph it is given (the caller owns that copy) and returns the
headers of the tensors it introduced, whose bytes the writer streams later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from quantrs.errors import UnsupportedModelError
from quantrs.model import default_opset
from quantrs.tensor import Scheme

__all__ = [
    "DQSpec",
    "DQTensors",
    "convert_opset",
    "insert_weight_dq",
    "required_opset",
    "merge_metadata",
    "initializers_as_inputs",
]

logger = logging.getLogger(__name__)

PER_AXIS_OPSET = 13  # DequantizeLinear gained `axis` (per-channel) in opset 13


@dataclass(frozen=True)
class DQSpec:
    """How one weight will be stored: decided by the plan, before any value is read."""

    name: str
    shape: tuple[int, ...]
    scheme: Scheme
    axis: int | None

    @property
    def channels(self) -> int:
        return 1 if self.axis is None else self.shape[self.axis]

    @property
    def has_zero_point(self) -> bool:
        return not self.scheme.symmetric  # symmetric codes have zero point 0, the default

    @property
    def param_dims(self) -> list[int]:
        return [] if self.axis is None else [self.channels]


@dataclass(frozen=True)
class DQTensors:
    """The initializers that replace one float weight (headers: no bytes yet)."""

    codes: TensorProto
    scale: TensorProto
    zero_point: TensorProto | None


def required_opset(specs: Iterable[DQSpec]) -> int:
    """The lowest ai.onnx opset whose DequantizeLinear can express every spec."""
    need = 10
    for spec in specs:
        need = max(need, spec.scheme.min_opset, PER_AXIS_OPSET if spec.axis is not None else 10)
    return need


@contextmanager
def initializers_as_inputs(model: onnx.ModelProto):
    """Temporarily replace the initializers by graph inputs of the same type and shape.

    Lets onnx's C++ tools (checker, version converter), which serialize the whole model, run on
    a model whose weights are not in memory (or near 2 GiB). Yields the edited model and
    restores it afterwards.
    """
    graph = model.graph
    saved = list(graph.initializer)
    input_names = {i.name for i in graph.input}
    added = [t for t in saved if t.name not in input_names]
    added_names = {t.name for t in added}
    del graph.initializer[:]
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in added)
    try:
        yield model
    finally:
        kept = [i for i in graph.input if i.name not in added_names]
        del graph.input[:]
        graph.input.extend(kept)
        graph.initializer.extend(saved)


def convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """A copy of `model` converted to ai.onnx opset `target` with onnx.version_converter.

    Runs with the initializers stood in for by graph inputs (see initializers_as_inputs), so the
    weights are never copied through protobuf.
    """
    source = default_opset(model)
    stand_ins = {t.name for t in model.graph.initializer} - {i.name for i in model.graph.input}
    with initializers_as_inputs(model) as skeleton:
        try:
            converted = onnx.version_converter.convert_version(skeleton, target)
        except Exception as exc:  # the converter raises bare RuntimeError/ValueError
            raise UnsupportedModelError(
                f"cannot convert the model from opset {source} to {target}: {str(exc).splitlines()[0]}"
            ) from None
    kept_inputs = [i for i in converted.graph.input if i.name not in stand_ins]
    del converted.graph.input[:]
    converted.graph.input.extend(kept_inputs)
    converted.graph.initializer.extend(model.graph.initializer)
    converted.ir_version = max(model.ir_version, _min_ir_version(target))
    return converted


def _min_ir_version(opset: int) -> int:
    # onnx.helper.VERSION_TABLE rows: (release, ir_version, ai.onnx opset, ai.onnx.ml, training)
    candidates = [row[1] for row in helper.VERSION_TABLE if row[2] >= opset]
    return min(candidates) if candidates else onnx.IR_VERSION


def insert_weight_dq(graph: onnx.GraphProto, specs: Mapping[str, DQSpec]) -> dict[str, DQTensors]:
    """Add, for each spec, a DequantizeLinear whose output keeps the weight's name (consumers are
    untouched), and return the headers of its codes, scale and zero point.

    Edits `graph` in place: removes the float initializers named in `specs` and puts the new
    nodes first (they read only initializers, so the graph stays topologically sorted). New names
    are derived from the weight's name and made unique.
    """
    taken = {t.name for t in graph.initializer} | {n.name for n in graph.node}
    for node in graph.node:
        taken.update(node.input)
        taken.update(node.output)

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    kept = [t for t in graph.initializer if t.name not in specs]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    tensors: dict[str, DQTensors] = {}
    dq_nodes = []
    for name, spec in specs.items():
        codes = _header(fresh(f"{name}_quantized"), spec.scheme.onnx_type, list(spec.shape))
        scale = _header(fresh(f"{name}_scale"), TensorProto.FLOAT, spec.param_dims)
        zero_point = _header(fresh(f"{name}_zero_point"), spec.scheme.onnx_type, spec.param_dims) if spec.has_zero_point else None
        inputs = [codes.name, scale.name] + ([zero_point.name] if zero_point is not None else [])
        attrs = {} if spec.axis is None else {"axis": spec.axis}
        dq_nodes.append(helper.make_node("DequantizeLinear", inputs, [name], name=fresh(f"{name}_DequantizeLinear"), **attrs))
        tensors[name] = DQTensors(codes, scale, zero_point)
    nodes = dq_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return tensors


def _header(name: str, data_type: int, dims: list[int]) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    return t


def merge_metadata(model: onnx.ModelProto, entries: Mapping[str, str]) -> None:
    """Add or update metadata_props, keeping every existing entry (helper.set_model_props would
    delete them)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        if key in existing:
            existing[key].value = value
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
