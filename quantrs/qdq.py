"""Graph rewrites: weight-only QDQ insertion and the opset change it may need.

Each pass says what it does to its input: `convert_opset` returns a new model and leaves the
input alone; `insert_weight_dq` edits the model it is given (the caller owns that copy).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs import kernels
from quantrs.errors import UnsupportedModelError
from quantrs.model import default_opset
from quantrs.tensor import QuantizedTensor

__all__ = ["convert_opset", "insert_weight_dq", "required_opset", "merge_metadata"]

logger = logging.getLogger(__name__)

PER_AXIS_OPSET = 13  # DequantizeLinear gained `axis` (per-channel) in opset 13


def required_opset(tensors: Mapping[str, QuantizedTensor]) -> int:
    """The lowest ai.onnx opset whose DequantizeLinear can express every tensor."""
    need = 10
    for qt in tensors.values():
        need = max(need, qt.scheme.min_opset, PER_AXIS_OPSET if qt.axis is not None else 10)
    return need


def convert_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """A copy of `model` converted to ai.onnx opset `target` with onnx.version_converter.

    The converter serializes the whole model, so initializers are taken out first (stood in for by
    graph inputs of the same type and shape, which keeps the graph valid) and put back after: the
    weights are never copied through protobuf and models near 2 GiB convert too.
    """
    source = default_opset(model)
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    del skeleton.graph.initializer[:]
    input_names = {i.name for i in skeleton.graph.input}
    stand_ins = []
    for t in model.graph.initializer:
        if t.name not in input_names:
            stand_ins.append(t.name)
            skeleton.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    try:
        converted = onnx.version_converter.convert_version(skeleton, target)
    except Exception as exc:  # the converter raises bare RuntimeError/ValueError
        raise UnsupportedModelError(
            f"cannot convert the model from opset {source} to {target}: {str(exc).splitlines()[0]}"
        ) from None
    kept_inputs = [i for i in converted.graph.input if i.name not in set(stand_ins)]
    del converted.graph.input[:]
    converted.graph.input.extend(kept_inputs)
    converted.graph.initializer.extend(model.graph.initializer)
    converted.ir_version = max(model.ir_version, _min_ir_version(target))
    return converted


def _min_ir_version(opset: int) -> int:
    # onnx.helper.VERSION_TABLE rows: (release, ir_version, ai.onnx opset, ai.onnx.ml, training)
    candidates = [row[1] for row in helper.VERSION_TABLE if row[2] >= opset]
    return min(candidates) if candidates else onnx.IR_VERSION


def insert_weight_dq(model: onnx.ModelProto, tensors: Mapping[str, QuantizedTensor]) -> None:
    """Replace each named float initializer by integer codes, a scale, a zero point and a
    DequantizeLinear node whose output keeps the original name (consumers are untouched).

    Edits `model` in place. New names are derived from the weight's name and made unique.
    """
    graph = model.graph
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

    kept = [t for t in graph.initializer if t.name not in tensors]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    dq_nodes = []
    for name, qt in tensors.items():
        codes = TensorProto()
        codes.name = fresh(f"{name}_quantized")
        codes.data_type = qt.scheme.onnx_type
        codes.dims.extend(qt.shape)
        codes.raw_data = qt.data.tobytes()
        scale_shape = [] if qt.axis is None else [qt.scale.size]
        scale = helper.make_tensor(fresh(f"{name}_scale"), TensorProto.FLOAT, scale_shape, qt.scale.tobytes(), raw=True)
        inputs = [codes.name, scale.name]
        graph.initializer.extend([codes, scale])
        if np.any(qt.zero_point != 0):
            zp = TensorProto()
            zp.name = fresh(f"{name}_zero_point")
            zp.data_type = qt.scheme.onnx_type
            zp.dims.extend(scale_shape)
            zero_points = qt.zero_point.astype(np.uint8)  # codes as bytes, like the weights
            if qt.scheme.packed:
                zero_points = kernels.pack4(zero_points)
            zp.raw_data = zero_points.tobytes()
            graph.initializer.append(zp)
            inputs.append(zp.name)
        attrs = {} if qt.axis is None else {"axis": qt.axis}
        dq_nodes.append(helper.make_node("DequantizeLinear", inputs, [name], name=fresh(f"{name}_DequantizeLinear"), **attrs))
    # DequantizeLinear reads only initializers, so placing the new nodes first keeps the graph
    # topologically sorted.
    nodes = dq_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)


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
