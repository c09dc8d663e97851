"""Static quantization's part of the graph: which activations get QuantizeLinear/DequantizeLinear,
for which runtime, and the edit that puts them in (with the INT32 biases and Relu folding).

Two targets:

- `ort-cpu`: onnxruntime's QDQ form. Activations at the inputs and outputs of the ops
  onnxruntime keeps in integer form between Q/DQ pairs (QUANTIZED_OPS), UINT8 asymmetric by
  default; Conv/Gemm biases as INT32 at input scale x weight scale; Conv/MatMul/Gemm -> Relu
  folded into the quantizer (a UINT8 zero point of 0 saturates exactly like Relu).
- `tensorrt`: NVIDIA's explicit-quantization rules. Signed symmetric INT8 activations, Q/DQ on
  the activation inputs of weighted ops (Conv, MatMul, Gemm) and of residual Adds, never on
  their outputs; biases stay float; no Relu folding.

Decisions are made by value name on the float graph (before any opset conversion, which may
renumber but keeps names) and applied by `StaticEdit` after the weights' DequantizeLinear nodes
are in. The names follow onnxruntime's quantizer (`<t>_QuantizeLinear_Output`,
`<t>_DequantizeLinear_Output`, `<t>_scale`, `<t>_zero_point`), so its debugging tools
(`onnxruntime.quantization.qdq_loss_debug`) pair activations of quantrs' models with the float
model's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs.config import QuantizeConfig
from quantrs.graph import GraphIndex
from quantrs.pipeline import WeightStream
from quantrs.qdq import DQSpec
from quantrs.writer import OutTensor, Payload

__all__ = ["TARGETS", "COMPUTE_OPS", "QUANTIZED_OPS", "ActivationParams", "StaticEdit", "choose_activations", "excluded_outputs"]

TARGETS = ("ort-cpu", "tensorrt")
COMPUTE_OPS = {"Conv", "MatMul", "Gemm"}  # with quantized weights: the integer kernels
# Ops onnxruntime keeps in integer form between QDQ nodes (its QDQ selectors and propagation).
# Softmax and Sigmoid are left out: their outputs live in [0, 1] and usually end the model, where
# 8 bits cost accuracy and buy no integer kernel.
QUANTIZED_OPS = COMPUTE_OPS | {
    "Add", "Mul", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Resize", "LeakyRelu", "Split",
    "Slice", "Gather",
}  # fmt: skip
_ALL_INPUTS = {"Add", "Mul", "Concat", "MatMul"}  # every input is data; the other ops' data is input 0
QDQ_OPSET = 13  # per-axis DequantizeLinear for the weights


@dataclass(frozen=True)
class ActivationParams:
    scale: float
    zero_point: int


def _key(node: onnx.NodeProto) -> str:
    """A node's identity across the rewrite: its first output (names survive opset conversion)."""
    return node.output[0] if node.output else node.name


def excluded_outputs(graph: onnx.GraphProto, options: QuantizeConfig) -> set[str]:
    """Keys of the main graph's nodes left in float: by op type, by name (the node's or one of its
    inputs'), or by regex over those names."""
    patterns = [re.compile(p) for p in options.exclude_regex]
    names = set(options.exclude)
    out = set()
    for node in graph.node:
        labels = {node.name} | {n for n in node.input if n}
        if node.op_type in options.exclude_op_types or labels & names or any(p.search(label) for p in patterns for label in labels if label):
            out.add(_key(node))
    return out


def choose_activations(graph: onnx.GraphProto, excluded: set[str], target: str) -> list[str]:
    """The main graph's values to calibrate, in graph order: data inputs of the ops the target
    quantizes (and, for ort-cpu, their first output). Stored tensors are not activations; values
    that turn out not to be float32 are dropped when the samples run."""
    stored = {t.name for t in graph.initializer}
    chosen: dict[str, None] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or _key(node) in excluded:
            continue
        if target == "tensorrt":
            names = _tensorrt_inputs(node, stored)
        elif node.op_type in QUANTIZED_OPS:
            names = _data_inputs(node) + list(node.output[:1])
        else:
            continue
        for name in names:
            if name and name not in stored:
                chosen.setdefault(name, None)
    return list(chosen)


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    return list(node.input) if node.op_type in _ALL_INPUTS else list(node.input[:1])


def _tensorrt_inputs(node: onnx.NodeProto, stored: set[str]) -> list[str]:
    if node.op_type in ("Conv", "Gemm"):
        return list(node.input[:1])
    if node.op_type == "MatMul":
        return list(node.input[:2])
    if node.op_type == "Add" and len(node.input) == 2 and not (set(node.input) & stored):
        return list(node.input)  # a residual Add: two activations
    return []


@dataclass
class StaticEdit:
    """The static rewrite, applied after the weights' DequantizeLinear nodes (a GraphEdit)."""

    params: dict[str, ActivationParams]
    signed: bool
    target: str
    excluded: set[str]
    weight_specs: dict[str, DQSpec]
    min_opset: int = QDQ_OPSET
    biases: dict[str, tuple[str, str]] = field(default_factory=dict)  # bias -> (weight, input) once applied
    folded: list[str] = field(default_factory=list)  # Relu outputs folded into their producer

    def apply(self, graph: onnx.GraphProto, stream: WeightStream) -> list[OutTensor]:
        taken = GraphIndex(graph).all_names()

        def fresh(base: str) -> str:
            name, k = base, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            taken.add(name)
            return name

        extra: list[OutTensor] = []
        if self.target == "ort-cpu":
            extra = self._biases(graph, stream, fresh)
            if not self.signed:
                self._fold_relus(graph)
        self._insert(graph, fresh)
        return extra

    def _quantizes(self, node: onnx.NodeProto) -> bool:
        if _key(node) in self.excluded or node.domain not in ("", "ai.onnx"):
            return False
        return node.op_type in (("Conv", "Gemm", "MatMul", "Add") if self.target == "tensorrt" else QUANTIZED_OPS)

    def _biases(self, graph: onnx.GraphProto, stream: WeightStream, fresh) -> list[OutTensor]:
        """Conv and Gemm biases as INT32 at scale = input scale x weight scale, zero point 0,
        read through a DequantizeLinear that keeps the bias's name."""
        stored = {t.name: t for t in graph.initializer}
        uses: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                uses[name] = uses.get(name, 0) + 1
        chosen: dict[str, tuple[str, str]] = {}
        for node in graph.node:
            if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not self._quantizes(node):
                continue
            x, w, b = node.input[0], node.input[1], node.input[2]
            spec = self.weight_specs.get(w)
            bias = stored.get(b)
            if spec is None or spec.nested or spec.block_size is not None or bias is None or x not in self.params:
                continue
            if uses.get(b) != 1 or bias.data_type != TensorProto.FLOAT or len(bias.dims) != 1:
                continue
            if spec.axis is not None and spec.channels != bias.dims[0]:
                continue
            chosen[b] = (w, x)
        if not chosen:
            return []
        kept = [t for t in graph.initializer if t.name not in chosen]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes, out = [], []
        for b, (w, x) in chosen.items():
            length = int(stored[b].dims[0])
            codes, scale = fresh(f"{b}_quantized"), fresh(f"{b}_scale")
            nodes.append(helper.make_node("DequantizeLinear", [codes, scale], [b], name=fresh(f"{b}_DequantizeLinear"), axis=0))
            stream.keep_scales.add(w)
            bias_values = _BiasValues(stream, b, w, self.params[x].scale, length)
            out += [
                OutTensor(_header(codes, TensorProto.INT32, [length]), Payload(4 * length, bias_values.codes)),
                OutTensor(_header(scale, TensorProto.FLOAT, [length]), Payload(4 * length, bias_values.scale)),
            ]
        self.biases = chosen
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)
        return out

    def _fold_relus(self, graph: onnx.GraphProto) -> None:
        """Conv/MatMul/Gemm -> Relu becomes Conv -> QuantizeLinear when the Relu's output is UINT8
        with zero point 0 and only quantized ops read it: the quantizer saturates negatives to
        code 0, i.e. dequantized 0, which is exactly Relu. onnxruntime then fuses the pair into
        one integer kernel."""
        producers = {out: n for n in graph.node for out in n.output}
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        outputs = {o.name for o in graph.output}
        drop = []
        for node in graph.node:
            if node.op_type != "Relu" or not self._quantizes(node):
                continue
            source, result = node.input[0], node.output[0]
            producer = producers.get(source)
            if producer is None or len(readers.get(source, [])) != 1 or source in outputs:
                continue
            # After folding, `result` holds the producer's raw output and only its dequantized
            # copy is Relu'd: every reader must read that copy.
            if result in outputs or not all(self._quantizes(r) for r in readers.get(result, [])):
                continue
            if producer.op_type not in COMPUTE_OPS or not self._quantizes(producer):
                continue
            if result not in self.params or self.params[result].zero_point != 0:
                continue
            producer.output[0] = result
            self.params.pop(source, None)
            self.folded.append(result)
            drop.append(node)
        for node in drop:
            graph.node.remove(node)

    def _insert(self, graph: onnx.GraphProto, fresh) -> None:
        """QuantizeLinear -> DequantizeLinear after each activation; the quantized ops read the
        dequantized tensor (so onnxruntime can fuse them into integer kernels), the others keep
        reading the float one."""
        zp_type = TensorProto.INT8 if self.signed else TensorProto.UINT8
        pairs: dict[str, list[onnx.NodeProto]] = {}
        dequantized: dict[str, str] = {}
        for name, p in self.params.items():
            scale, zero_point = fresh(f"{name}_scale"), fresh(f"{name}_zero_point")
            graph.initializer.append(helper.make_tensor(scale, TensorProto.FLOAT, [], [p.scale]))
            graph.initializer.append(helper.make_tensor(zero_point, zp_type, [], [p.zero_point]))
            q_out, dq_out = fresh(f"{name}_QuantizeLinear_Output"), fresh(f"{name}_DequantizeLinear_Output")
            pairs[name] = [
                helper.make_node("QuantizeLinear", [name, scale, zero_point], [q_out], name=fresh(f"{name}_QuantizeLinear")),
                helper.make_node("DequantizeLinear", [q_out, scale, zero_point], [dq_out], name=fresh(f"{name}_DequantizeLinear")),
            ]
            dequantized[name] = dq_out
        produced = {out for node in graph.node for out in node.output}
        nodes = [n for name in self.params if name not in produced for n in pairs[name]]  # graph inputs
        for node in list(graph.node):
            if self._quantizes(node) and node.op_type != "DequantizeLinear":
                for k, name in enumerate(node.input):
                    if name in dequantized and (self.target != "tensorrt" or k in _reads(node)):
                        node.input[k] = dequantized[name]
            nodes.append(node)
            nodes += [n for out in node.output if out in pairs for n in pairs[out]]
        del graph.node[:]
        graph.node.extend(nodes)


def _reads(node: onnx.NodeProto) -> Iterable[int]:
    """The input positions a tensorrt Q/DQ feeds: weighted ops' data inputs, both of an Add."""
    return range(2) if node.op_type in ("MatMul", "Add") else range(1)


@dataclass
class _BiasValues:
    """An INT32 bias's codes and scales, computed when the writer reaches them (after the weight,
    whose scales the stream kept)."""

    stream: WeightStream
    bias: str
    weight: str
    input_scale: float
    length: int

    def scale(self) -> np.ndarray:
        w_scale = self.stream.scales[self.weight].reshape(-1)
        scale = (np.float32(self.input_scale) * w_scale).astype(np.float32)
        return np.broadcast_to(scale, (self.length,)).copy() if scale.size == 1 else scale

    def codes(self) -> np.ndarray:
        values = self.stream.model.weights.array(self.bias).astype(np.float64)
        codes = np.rint(values / self.scale().astype(np.float64))
        return np.clip(codes, -(2**31), 2**31 - 1).astype(np.int32)


def _header(name: str, data_type: int, dims: list[int]) -> TensorProto:
    t = TensorProto()
    t.name, t.data_type = name, data_type
    t.dims.extend(dims)
    return t
