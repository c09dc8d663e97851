"""Static quantization's part of the graph: which activations get QuantizeLinear/DequantizeLinear,
for which runtime, and the edit that puts them in (with the INT32 biases and Relu/Clip folding).

Two targets:

- `ort-cpu`: onnxruntime's QDQ form, Q/DQ only where onnxruntime gets an integer kernel out of
  it: the data inputs of Conv, MatMul and Gemm (MatMulIntegerToFloat, QGemm, QLinearConv), the
  outputs of Conv (QLinearConv needs them; every reader reads them dequantized), and the ops
  onnxruntime keeps in integer form between them (QUANTIZED_OPS: Relu, Add, pools, Concat,
  Reshape...) when every activation they read is already quantized, so that CNN chains stay
  integer from Conv to Conv.
  MatMul/Gemm outputs stay float (their kernels give float), as do the inputs of a MatMul
  that reads softmax probabilities or a gated activation (GELU, SiLU): see ort_cpu_selection
  for the measurements. UINT8 asymmetric by default; Conv/Gemm biases (and a MatMul's bias
  Add on 2-D inputs) as INT32 at input scale x weight scale; Conv -> Relu and Conv -> Clip
  (ReLU6) folded into the quantizer (a UINT8 zero point of 0 saturates exactly like Relu).
- `tensorrt`: NVIDIA's explicit-quantization rules. Signed symmetric INT8 activations, Q/DQ on
  the activation inputs of weighted ops (Conv, MatMul, Gemm) and of residual Adds, never on
  their outputs; biases stay float; no Relu folding.

Decisions are made by value name on the float graph (before any opset conversion, which may
renumber but keeps names) and applied by `StaticEdit` after the weights' DequantizeLinear nodes
are in (for ort-cpu, StaticEdit finds the nodes that read dequantized values with the same
function, on that graph, where the weights are DequantizeLinear outputs under their names).
The names follow onnxruntime's quantizer (`<t>_QuantizeLinear_Output`,
`<t>_DequantizeLinear_Output`, `<t>_scale`, `<t>_zero_point`), so its debugging tools
(`onnxruntime.quantization.qdq_loss_debug`) pair activations of quantrs' models with the float
model's.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs.config import TARGETS, QuantizeConfig  # TARGETS: declared with calibrate's options
from quantrs.graph import FreshName, GraphIndex, constant_tensor, name_maker, walk_graphs
from quantrs.edit import EditContext
from quantrs.qdq import DQSpec, tensor_header
from quantrs.writer import OutTensor, Payload

__all__ = [
    "TARGETS", "COMPUTE_OPS", "QUANTIZED_OPS", "ActivationParams", "StaticEdit", "choose_activations", "excluded_outputs",
    "ort_cpu_selection",
]  # fmt: skip

COMPUTE_OPS = {"Conv", "MatMul", "Gemm"}  # with quantized weights: the integer kernels
# Producers a following Relu folds into (their quantized output saturates at zero point 0): the
# integer kernels, and a residual Add (QLinearAdd), as onnxruntime's own quantizer folds them.
RELU_FOLDS = COMPUTE_OPS | {"Add"}
FOLDED_ACTIVATIONS = {"Relu", "Clip"}  # (Clip: ReLU6 and friends, within its bounds)
# Ops onnxruntime keeps in integer form between QDQ nodes (its QDQ selectors and propagation).
# Softmax and Sigmoid are left out: their outputs live in [0, 1] and usually end the model, where
# 8 bits cost accuracy and buy no integer kernel. For ort-cpu, the ops beyond COMPUTE_OPS are
# quantized only inside integer chains (see ort_cpu_selection).
QUANTIZED_OPS = COMPUTE_OPS | {
    "Add", "Mul", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Resize", "LeakyRelu", "Split",
    "Slice", "Gather",
}  # fmt: skip
_ALL_INPUTS = {"Add", "Mul", "Concat", "MatMul"}  # every input is data; the other ops' data is input 0
# What a MatMul reading softmax probabilities may read them through.
_PASS_THROUGH = {"Dropout", "Identity", "Cast"}
# Gated activations x * gate(x): the fused ops, and the gates of their decomposed forms (exact
# GELU: x * (1 + Erf(x / sqrt 2)) / 2; tanh GELU; SiLU: x * Sigmoid(x)), reached from the
# product through at most _GATE_DEPTH elementwise ops.
_GATED_OPS = {"Gelu", "FastGelu", "BiasGelu", "QuickGelu"}
_GATES = {"Erf", "Tanh", "Sigmoid"}
_ELEMENTWISE = {"Mul", "Div", "Add", "Sub"}
_GATE_DEPTH = 4
QDQ_OPSET = 13  # per-axis DequantizeLinear for the weights

logger = logging.getLogger(__name__)


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
        if (
            node.op_type in options.exclude_op_types
            or labels & names
            or any(p.search(label) for p in patterns for label in labels if label)
        ):
            out.add(_key(node))
    return out


def choose_activations(graph: onnx.GraphProto, excluded: set[str], target: str) -> list[str]:
    """The main graph's values to calibrate, in graph order. Stored tensors are not activations;
    values that turn out not to be float32 are dropped when the samples run.

    tensorrt: the activation inputs of weighted ops and residual Adds. ort-cpu: see
    `ort_cpu_selection`."""
    if target == "tensorrt":
        stored = {t.name for t in graph.initializer}
        producers = {out: node for node in graph.node for out in node.output if out}
        chosen: dict[str, None] = {}
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or _key(node) in excluded:
                continue
            for name in _tensorrt_inputs(node, stored, producers):
                if name and name not in stored:
                    chosen.setdefault(name, None)
        return list(chosen)
    return ort_cpu_selection(graph, excluded, _stored(graph))[0]


def ort_cpu_selection(graph: onnx.GraphProto, excluded: set[str], stored: set[str]) -> tuple[list[str], set[str]]:
    """onnxruntime CPU's activations: (the values to quantize, in graph order; the keys of the
    nodes that read them dequantized). `stored`: the weights and constants (not activations).

    1. Conv, MatMul, Gemm: their data inputs (both of an activation x activation MatMul such as
       Q @ K^T); a Conv's output too, whatever reads it (QLinearConv needs it: onnxruntime fuses
       a Conv only when a QuantizeLinear is its one reader; an op read in float, PRelu say,
       reads the dequantized copy, see StaticEdit). MatMulIntegerToFloat and QGemm give float
       outputs, so MatMul/Gemm outputs stay float.
    2. The other QUANTIZED_OPS (Relu, Add, pools, Concat, Reshape...) join when every activation
       they read is quantized, in graph order: a CNN stays integer from Conv to Conv; a residual
       Add reading one float branch stays float.
    3. Left float (the MatMul keeps INT8 weights and reads float activations):
       - a MatMul reading softmax probabilities, and its other input (P @ V). With 256 levels over
         [0, 1] every probability under 1/510 becomes 0: long sequences lose their spread-out
         attention (MiniLM on ~80-token paragraphs: min cosine 0.9887 quantized, 0.9912 float);
       - a MatMul or Gemm reading a gated activation (GELU, SiLU: `_gated`), the transformer FFN's
         down projection: one-sided values whose rare channels reach 20-25 while the bulk sits
         in [-0.17, 1], 20-22 dB SQNR at 8 bits per tensor; on all-MiniLM-L6-v2 the worst
         activations (min cosine over 32 sentences 0.989 quantized, 0.993 float).
    Measured on all-MiniLM-L6-v2 (tests/test_static_transformer.py), min cosine to the float
    embeddings: MatMul outputs quantized too (QLinearMatMul) 0.92, residual Adds 0.81, all that
    QUANTIZED_OPS read and write 0.89; these rules 0.9938, and faster than float (the
    projections run as MatMulIntegerToFloat)."""
    producers = {out: node for node in graph.node for out in node.output if out}
    positions = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    chosen: set[str] = set()
    readers: set[str] = set()
    conv_outputs: set[str] = set()

    def eligible(node: onnx.NodeProto) -> bool:
        return node.domain in ("", "ai.onnx") and _key(node) not in excluded

    def activations(node: onnx.NodeProto) -> list[str]:
        return [n for n in _data_inputs(node) if n and n not in stored]

    for node in graph.node:
        if node.op_type not in COMPUTE_OPS or not eligible(node):
            continue
        data = activations(node)
        if not data or _keeps_float(node, data, producers):
            continue
        readers.add(_key(node))
        chosen.update(data)
        if node.op_type == "Conv" and node.output:
            chosen.add(node.output[0])
            conv_outputs.add(node.output[0])
    for node in graph.node:
        if node.op_type in COMPUTE_OPS or node.op_type not in QUANTIZED_OPS or not eligible(node) or not node.output:
            continue
        data = activations(node)
        if node.op_type == "Mul" and len(data) > 1:
            continue  # a product of activations (x * x, gates): its range is the square of theirs
        if data and all(n in chosen for n in data):
            readers.add(_key(node))
            chosen.add(node.output[0])
    # A value no reader takes dequantized (a Relu output read only by float ops, a graph output)
    # would get a QuantizeLinear/DequantizeLinear pair nothing reads; a Conv's output is read
    # dequantized by every reader.
    read = {name for node in graph.node if _key(node) in readers for name in node.input} | conv_outputs
    inputs = {v.name: i for i, v in enumerate(graph.input)}
    order = sorted(chosen & read, key=lambda n: (positions.get(n, -1), inputs.get(n, 0), n))
    return order, readers


def _stored(graph: onnx.GraphProto) -> set[str]:
    """Weights and constants: the initializers and the Constant nodes' outputs."""
    return {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def _keeps_float(node: onnx.NodeProto, data: list[str], producers: dict[str, onnx.NodeProto]) -> bool:
    """A MatMul/Gemm whose activations stay float (ort_cpu_selection, rule 3)."""
    if node.op_type == "Conv":
        return False
    for name in data:
        producer = producers.get(name)
        while producer is not None and producer.op_type in _PASS_THROUGH and producer.input:
            producer = producers.get(producer.input[0])
        if producer is not None and producer.op_type == "Softmax":
            return True
    return any(_gated(name, producers) for name in data)


def _gated(name: str, producers: dict[str, onnx.NodeProto]) -> bool:
    """`name` is a gated activation: made by Gelu/FastGelu/BiasGelu/QuickGelu, or a product (Mul)
    with an Erf, Tanh or Sigmoid among its elementwise ancestors (GELU, tanh GELU, SiLU, and
    gated FFNs that multiply one by another branch). A plain Tanh or Sigmoid output (bounded)
    is not."""
    node = producers.get(name)
    if node is None:
        return False
    if node.op_type in _GATED_OPS:
        return True
    if node.op_type != "Mul":
        return False
    frontier, seen = [node], {id(node)}
    for _ in range(_GATE_DEPTH):
        above = []
        for current in frontier:
            for value in current.input:
                parent = producers.get(value)
                if parent is None or id(parent) in seen:
                    continue
                if parent.op_type in _GATES or parent.op_type in _GATED_OPS:
                    return True
                if parent.op_type in _ELEMENTWISE:
                    seen.add(id(parent))
                    above.append(parent)
        frontier = above
    return False


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    return list(node.input) if node.op_type in _ALL_INPUTS else list(node.input[:1])


_RESIDUAL_SOURCES = {"Conv", "MatMul", "Gemm", "BatchNormalization"}


def _tensorrt_inputs(node: onnx.NodeProto, stored: set[str], producers: dict[str, onnx.NodeProto]) -> list[str]:
    if node.op_type in ("Conv", "Gemm"):
        return list(node.input[:1])
    if node.op_type == "MatMul":
        return list(node.input[:2])
    if node.op_type == "Add" and _residual(node, stored, producers):
        return list(node.input)
    return []


def _residual(node: onnx.NodeProto, stored: set[str], producers: dict[str, onnx.NodeProto]) -> bool:
    """A residual Add, as NVIDIA's rules mean it: two activations, one straight from a weighted
    op (a block's last Conv, or its BatchNormalization) joining the skip. Not any Add of two
    activations: an LSTM's state arithmetic or a transformer's bias-then-residual (measured on
    all-MiniLM-L6-v2: cosine 0.81 with those quantized) are not what TensorRT fuses."""
    if len(node.input) != 2 or set(node.input) & stored:
        return False
    return any(producers.get(name) is not None and producers[name].op_type in _RESIDUAL_SOURCES for name in node.input)


@dataclass
class StaticEdit:
    """The static rewrite, applied after the weights' DequantizeLinear nodes (a GraphEdit)."""

    params: dict[str, ActivationParams]
    signed: bool
    target: str
    excluded: set[str]
    weight_specs: dict[str, DQSpec]
    min_opset: int = QDQ_OPSET
    ranks: dict[str, int] = field(default_factory=dict)  # the activations' ranks on the samples (Statistics.ranks)
    biases: dict[str, tuple[str, str]] = field(default_factory=dict)  # bias -> (weight, input) once applied
    folded: list[str] = field(default_factory=list)  # Relu outputs folded into their producer
    prelus: list[str] = field(default_factory=list)  # PRelu outputs computed by elementwise ops
    _readers: set[str] | None = field(default=None, init=False, repr=False)  # set by apply

    def apply(self, graph: onnx.GraphProto, stream: EditContext) -> list[OutTensor]:
        fresh = name_maker(GraphIndex(graph).all_names())

        extra: list[OutTensor] = []
        stored = _stored(graph) | set(self.weight_specs)  # the weights are DequantizeLinear outputs now
        if self.target == "tensorrt":
            producers = {out: node for node in graph.node for out in node.output if out}
            self._readers = {
                _key(n)
                for n in graph.node
                if n.op_type in ("Conv", "Gemm", "MatMul") or (n.op_type == "Add" and _residual(n, stored, producers))
            }
        else:
            self._readers = ort_cpu_selection(graph, self.excluded, stored)[1]
            extra = self._biases(graph, stream, fresh)
            if not self.signed:
                self._fold_relus(graph, stream)
        self._insert(graph, fresh)
        if self.target != "tensorrt":
            self._rewrite_prelus(graph, stream, fresh)
        return extra

    def _quantizes(self, node: onnx.NodeProto) -> bool:
        """Whether `node` reads its quantized inputs dequantized: the readers of the target's
        selection, computed on the graph `apply` edits (where the weights are DequantizeLinear
        outputs under their own names)."""
        if _key(node) in self.excluded or node.domain not in ("", "ai.onnx"):
            return False
        return self._readers is not None and _key(node) in self._readers

    def _biases(self, graph: onnx.GraphProto, stream: EditContext, fresh: FreshName) -> list[OutTensor]:
        """Conv and Gemm biases, and the bias Add after a MatMul (a 1-D [N] tensor added to
        x @ W), as INT32 at scale = input scale x weight scale, zero point 0, read through a
        DequantizeLinear that keeps the bias's name. onnxruntime fuses MatMul -> Add into a Gemm
        (MatMulAddFusion, on 2-D inputs: a CNN's dense layers after Flatten) before it looks
        for integer kernels, and makes a QGemm of that Gemm only when all three of its inputs
        are dequantized: with a float bias the Gemm ran in float (MTCNN's O-Net as keras2onnx
        exports it). Only a MatMul whose input was 2-D on the samples: on others (a
        transformer's [batch, tokens, width]) onnxruntime keeps MatMulIntegerToFloat and a float
        Add, which an INT32 bias would only slow."""
        stored = {t.name: t for t in graph.initializer}
        uses: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                uses[name] = uses.get(name, 0) + 1
        chosen: dict[str, tuple[str, str]] = {}
        graph_inputs = {v.name for v in graph.input}
        dense = _DenseLayers(graph, uses)
        for node in graph.node:
            if node.op_type == "Add":
                found = self._dense_bias(node, dense)
                if found is None:
                    continue
                x, w, b = found
            elif node.op_type in ("Conv", "Gemm") and len(node.input) >= 3 and self._quantizes(node):
                x, w, b = node.input[0], node.input[1], node.input[2]
            else:
                continue
            spec = self.weight_specs.get(w)
            bias = stored.get(b)
            if spec is None or spec.nested or spec.block_size is not None or bias is None or x not in self.params:
                continue
            if uses.get(b) != 1 or bias.data_type != TensorProto.FLOAT or not _bias_shape(bias.dims) or b in graph_inputs:
                continue  # (a bias that is also a graph input may be overridden at run time: kept float)
            if spec.axis is not None and spec.channels != bias.dims[-1]:
                continue
            chosen[b] = (w, x)
        if not chosen:
            return []
        kept = [t for t in graph.initializer if t.name not in chosen]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes, out = [], []
        for b, (w, x) in chosen.items():
            dims = list(stored[b].dims)
            length = int(dims[-1])
            codes, scale = fresh(f"{b}_quantized"), fresh(f"{b}_scale")
            nodes.append(
                helper.make_node("DequantizeLinear", [codes, scale], [b], name=fresh(f"{b}_DequantizeLinear"), axis=len(dims) - 1)
            )
            stream.keep_scales.add(w)
            bias_values = _BiasValues(stream, b, w, self.params[x].scale, length)
            out += [
                OutTensor(tensor_header(codes, TensorProto.INT32, dims), Payload(4 * length, bias_values.codes)),
                OutTensor(tensor_header(scale, TensorProto.FLOAT, [length]), Payload(4 * length, bias_values.scale)),
            ]
        self.biases = chosen
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)
        return out

    def _dense_bias(self, add: onnx.NodeProto, dense: _DenseLayers) -> tuple[str, str, str] | None:
        """(input, weight, bias) of MatMul(x, W) -> Add(bias [N] or [1, N]) when onnxruntime fuses
        the pair into a Gemm: the MatMul quantized, its output read by this Add alone, its input
        2-D on the samples (a transformer's 3-D MatMul stays a MatMul: its bias stays float)."""
        if len(add.input) != 2 or add.domain not in ("", "ai.onnx"):
            return None
        matmul = next((dense.producers[n] for n in add.input if n in dense.producers), None)
        if matmul is None or matmul.op_type != "MatMul" or not self._quantizes(matmul):
            return None
        x, w, y = matmul.input[0], matmul.input[1], matmul.output[0]
        spec = self.weight_specs.get(w)
        if spec is None or dense.uses.get(y) != 1 or y in dense.outputs or self.ranks.get(x) != 2:
            return None
        if len(spec.shape) != 2 or spec.axis not in (None, 1):
            return None
        b = add.input[1] if add.input[0] == y else add.input[0]
        if b not in dense.stored or not _bias_shape(dense.stored[b].dims) or dense.stored[b].dims[-1] != spec.shape[1]:
            return None  # a bias Gemm takes: [N] or [1, N]
        return x, w, b

    def _fold_relus(self, graph: onnx.GraphProto, stream: EditContext) -> None:
        """Conv/MatMul/Gemm/Add -> Relu (or Clip) becomes Conv -> QuantizeLinear when the Relu's
        output is UINT8 whose codes dequantize within its bounds and only quantized ops read it:
        for Relu, zero point 0, so the quantizer saturates negatives to code 0, i.e. dequantized
        0, which is exactly Relu; for Clip (ReLU6: Clip(0, 6)), every code's value inside [min,
        max], so saturating is clipping. onnxruntime then fuses the pair into one integer kernel
        (an unfolded Clip between two QLinearConvs ran in float through a DequantizeLinear and a
        QuantizeLinear: a MobileNet-style CNN ran at 0.92-0.98x float's speed, quantize_static's,
        which removes the Clip too, 1.7-2.4x)."""
        producers = {out: n for n in graph.node for out in n.output}
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        outputs = {o.name for o in graph.output}
        constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
        drop = []
        for node in graph.node:
            if node.op_type not in FOLDED_ACTIVATIONS or not self._quantizes(node):
                continue
            source, result = node.input[0], node.output[0]
            producer = producers.get(source)
            if producer is None or len(readers.get(source, [])) != 1 or source in outputs:
                continue
            # After folding, `result` holds the producer's raw output and only its dequantized
            # copy is Relu'd: every reader must read that copy.
            if result in outputs or not all(self._quantizes(r) for r in readers.get(result, [])):
                continue
            if producer.op_type not in RELU_FOLDS or not self._quantizes(producer):
                continue
            bounds = _bounds(node, constants, stream)
            if result not in self.params or bounds is None or not _saturates_within(self.params[result], *bounds):
                continue
            producer.output[0] = result
            self.params.pop(source, None)
            self.folded.append(result)
            drop.append(node)
        for node in drop:
            graph.node.remove(node)
        _drop_unread(graph, {n for node in drop for n in node.input[1:] if n})  # Clips' bounds

    def _insert(self, graph: onnx.GraphProto, fresh: FreshName) -> None:
        """QuantizeLinear -> DequantizeLinear after each activation; the quantized ops read the
        dequantized tensor (so onnxruntime can fuse them into integer kernels), the others keep
        reading the float one, but for a Conv's output, which every reader reads dequantized
        (`_read_whole`). A graph output among those keeps its name on the DequantizeLinear."""
        zp_type = TensorProto.INT8 if self.signed else TensorProto.UINT8
        whole = self._read_whole(graph)
        read = whole | {
            name for node in graph.node for k, name in enumerate(node.input) if self._reads_dequantized(node, k, whole)
        }
        for name in [n for n in self.params if n not in read]:  # nothing would read its pair
            del self.params[name]
        outputs = {o.name for o in graph.output}
        pairs: dict[str, list[onnx.NodeProto]] = {}
        dequantized: dict[str, str] = {}
        raw: dict[str, str] = {}  # graph outputs read whole: the producer's output renamed
        for name, p in self.params.items():
            scale, zero_point = fresh(f"{name}_scale"), fresh(f"{name}_zero_point")
            graph.initializer.append(helper.make_tensor(scale, TensorProto.FLOAT, [], [p.scale]))
            graph.initializer.append(helper.make_tensor(zero_point, zp_type, [], [p.zero_point]))
            q_out, dq_out = fresh(f"{name}_QuantizeLinear_Output"), fresh(f"{name}_DequantizeLinear_Output")
            source = name
            if name in whole and name in outputs:
                source = raw[name] = fresh(f"{name}_QuantizeLinear_Input")
                dq_out = name
            pairs[source] = [
                helper.make_node("QuantizeLinear", [source, scale, zero_point], [q_out], name=fresh(f"{name}_QuantizeLinear")),
                helper.make_node(
                    "DequantizeLinear", [q_out, scale, zero_point], [dq_out], name=fresh(f"{name}_DequantizeLinear")
                ),
            ]
            dequantized[name] = dq_out
        produced = {out for node in graph.node for out in node.output}
        nodes = [n for name in self.params if name not in produced for n in pairs[name]]  # graph inputs
        for node in list(graph.node):
            for k, name in enumerate(node.input):
                if name in dequantized and name not in raw and self._reads_dequantized(node, k, whole):
                    node.input[k] = dequantized[name]
            node.output[:] = [raw.get(out, out) for out in node.output]
            nodes.append(node)
            nodes += [n for out in node.output if out in pairs for n in pairs[out]]
        del graph.node[:]
        graph.node.extend(nodes)

    def _rewrite_prelus(self, graph: onnx.GraphProto, stream: EditContext, fresh: FreshName) -> None:
        """Each PRelu with a constant, finite slope as the elementwise ops of `prelu_nodes`, the
        same values bit for bit. PRelu has no integer kernel: in MTCNN it runs in float on every
        QLinearConv's dequantized output, and onnxruntime's PRelu kernel is 3-5x slower than
        those ops (1.2-2.5 ms against 0.2-0.9 ms on MTCNN's [8, 10, 62, 62] and [8, 32, 46, 46]
        activations, NCHW or NHWC, 1 thread): it took half of O-Net's time, so that static INT8
        ran no faster than float (nor did quantize_static's output)."""
        constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
        inputs = {v.name for v in graph.input}  # (an initializer that is also an input may be overridden)
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            slope = None
            if (
                node.op_type == "PRelu"
                and node.domain in ("", "ai.onnx")
                and len(node.input) == 2
                and node.input[1] not in inputs
            ):
                slope = _constant_value(node.input[1], constants, stream)
            if slope is None or slope.dtype.kind != "f" or not np.isfinite(slope).all():
                nodes.append(node)
                continue
            unit = bool(((slope >= 0) & (slope <= 1)).all())
            nodes += prelu_nodes(node.input[0], node.input[1], node.output[0], unit, fresh, node.name or node.output[0])
            self.prelus.append(node.output[0])
        del graph.node[:]
        graph.node.extend(nodes)
        if self.prelus:
            logger.info("%d PRelu written as elementwise ops (the same values, faster in onnxruntime)", len(self.prelus))

    def _reads_dequantized(self, node: onnx.NodeProto, k: int, whole: set[str]) -> bool:
        """Whether `node` reads its input `k` through the DequantizeLinear (when it is quantized):
        the quantized ops (for tensorrt, at the positions its rules name), and every reader of a
        value in `whole`."""
        if node.op_type == "DequantizeLinear":
            return False
        if node.input[k] in whole:
            return True
        return self._quantizes(node) and (self.target != "tensorrt" or k in _reads(node))

    def _read_whole(self, graph: onnx.GraphProto) -> set[str]:
        """The quantized outputs every reader reads dequantized (ort-cpu): those of the Convs that
        read a quantized input and weight. onnxruntime makes QLinearConv of DQ -> Conv -> Q only
        when the QuantizeLinear is the Conv's one reader and the output is no graph output;
        with a float op reading the Conv's float output (PRelu in MTCNN, a Sigmoid head, a
        graph output) the Conv ran in float, on weights dequantized at every run (MTCNN's O-Net:
        0.33-0.44x float's speed). The float op now reads the dequantized copy, as in
        onnxruntime's quantize_static."""
        if self.target == "tensorrt":
            return set()
        return {
            node.output[0]
            for node in graph.node
            if node.op_type == "Conv"
            and self._quantizes(node)
            and len(node.input) > 1
            and node.input[1] in self.weight_specs
            and node.output[0] in self.params
        }


UINT8_MAX = 255


def _drop_unread(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the initializers and Constant nodes among `names` that nothing reads any more (in
    the graph or its bodies) and that are no graph input or output."""
    read = {name for scope in walk_graphs(graph) for node in scope.graph.node for name in node.input}
    unread = names - read - {o.name for o in graph.output} - {i.name for i in graph.input}
    if not unread:
        return
    kept = [t for t in graph.initializer if t.name not in unread]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and set(n.output) & unread)]
    del graph.node[:]
    graph.node.extend(nodes)


def _constant_value(name: str, constants: dict[str, onnx.NodeProto], stream: EditContext) -> np.ndarray | None:
    """The value of a stored tensor or a Constant node's output; None when it is computed."""
    if name in constants:
        tensor = constant_tensor(constants[name])
        return None if tensor is None else onnx.numpy_helper.to_array(tensor)
    try:
        return np.asarray(stream.weight_array(name))
    except KeyError:  # computed at run time
        return None


def _bounds(node: onnx.NodeProto, constants: dict[str, onnx.NodeProto], stream: EditContext) -> tuple[float, float] | None:
    """A Relu's or Clip's output bounds (Clip's min and max: inputs since opset 11, stored
    tensors or Constant nodes; a missing one is unbounded); None when they are computed."""
    if node.op_type == "Relu":
        return 0.0, math.inf
    found = [-math.inf, math.inf]
    for k, name in enumerate(node.input[1:3]):
        if not name:
            continue
        value = _constant_value(name, constants, stream)
        if value is None or np.size(value) != 1:
            return None
        found[k] = float(value.reshape(-1)[0])
    return found[0], found[1]


def prelu_nodes(x: str, slope: str, y: str, unit_slopes: bool, fresh: FreshName, base: str) -> list[onnx.NodeProto]:
    """PRelu(x, slope) -> y as elementwise ops with the same values bit for bit: Max(x, slope * x)
    when every slope is within [0, 1] (`unit_slopes`: then slope * x lies between x and 0), else
    Relu(x) + slope * (x - Relu(x)) (one of the two terms is exactly 0)."""
    node = lambda op, inputs, output: helper.make_node(op, inputs, [output], name=fresh(f"{base}_{op}"))  # noqa: E731
    if unit_slopes:
        scaled = fresh(f"{y}_scaled")
        return [node("Mul", [x, slope], scaled), node("Max", [x, scaled], y)]
    positive, negative, scaled = fresh(f"{y}_positive"), fresh(f"{y}_negative"), fresh(f"{y}_scaled")
    return [
        node("Relu", [x], positive),
        node("Sub", [x, positive], negative),
        node("Mul", [negative, slope], scaled),
        node("Add", [positive, scaled], y),
    ]


def _saturates_within(params: ActivationParams, low: float, high: float) -> bool:
    """Whether every UINT8 code of `params` dequantizes within [low, high], so that the
    quantizer's saturation does what a Clip to [low, high] (a Relu: [0, inf)) does. The top
    code may pass `high` by float32 rounding (scale = high / 255)."""
    lowest = (0 - params.zero_point) * params.scale
    highest = (UINT8_MAX - params.zero_point) * params.scale
    return lowest >= low and highest <= high + 1e-6 * max(1.0, abs(high))


def _bias_shape(dims: Iterable[int]) -> bool:
    """A bias's shape: [N], or [1, N] (as tf2onnx writes dense biases: Magika's)."""
    dims = list(dims)
    return len(dims) == 1 or (len(dims) == 2 and dims[0] == 1)


class _DenseLayers:
    """What `_dense_bias` looks up in the graph."""

    def __init__(self, graph: onnx.GraphProto, uses: dict[str, int]) -> None:
        self.uses = uses
        self.stored = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.producers = {out: node for node in graph.node for out in node.output if out}


def _reads(node: onnx.NodeProto) -> Iterable[int]:
    """The input positions a tensorrt Q/DQ feeds: weighted ops' data inputs, both of an Add."""
    return range(2) if node.op_type in ("MatMul", "Add") else range(1)


@dataclass
class _BiasValues:
    """An INT32 bias's codes and scales, computed when the writer reaches them (after the weight,
    whose scales the stream kept)."""

    stream: EditContext
    bias: str
    weight: str
    input_scale: float
    length: int

    def scale(self) -> np.ndarray:
        w_scale = self.stream.scales[self.weight].reshape(-1)
        scale = (np.float32(self.input_scale) * w_scale).astype(np.float32)
        return np.broadcast_to(scale, (self.length,)).copy() if scale.size == 1 else scale

    def codes(self) -> np.ndarray:
        values = self.stream.weight_array(self.bias).astype(np.float64)
        codes = np.rint(values / self.scale().astype(np.float64))
        return np.clip(codes, -(2**31), 2**31 - 1).astype(np.int32)
