"""Graph rewrites: weight-only QDQ insertion and the opset change it may need.

The passes work on the model's skeleton (initializers without their bytes) and say what they do
to their input: `convert_opset` returns a new model and leaves its input alone;
`insert_weight_dq` edits the graph it is given (the caller owns that copy) and returns the
headers of the tensors it introduced, whose bytes the writer streams later.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import TensorProto, helper

from quantrs.errors import UnsupportedModelError, first_line
from quantrs.graph import FreshName, GraphIndex, Use, constant_tensor, name_maker, walk_graphs
from quantrs.model import default_opset
from quantrs.tensor import Scheme

__all__ = [
    "DQSpec",
    "DQTensors",
    "check_model",
    "convert_opset",
    "detach_nested_weights",
    "insert_weight_dq",
    "required_opset",
    "merge_metadata",
    "initializers_as_inputs",
]

logger = logging.getLogger(__name__)

PER_AXIS_OPSET = 13  # DequantizeLinear gained `axis` (per-channel) in opset 13


@dataclass(frozen=True)
class DQSpec:
    """How one weight will be stored: decided by the plan, before any value is read.

    `scale_type` is the ONNX type of the scale (the weight's own float16, or float32);
    `cast_to` a type the dequantized float32 weight is cast back to (bfloat16, which onnxruntime's
    DequantizeLinear does not produce). `nested` weights (Constant nodes, initializers of bodies)
    get their DequantizeLinear where they were defined, and those of a body (`in_body`) keep
    their codes in that body; `lookups` Gather nodes read rows of the weight gather-first, and
    `dense` says whether any other use needs the whole tensor. `gather_block`: those lookups are
    com.microsoft.GatherBlockQuantized nodes (a main-graph table [V, D] in blocks along axis 1),
    its dense uses a DequantizeLinear of the same codes. `zero_point`: the zero points are stored
    even when they are DequantizeLinear's default 0 (static INT8: onnxruntime fuses a Gemm into
    its integer QGemm only when its weight's DequantizeLinear has a zero point input).

    Blocked codes are stored padded to whole blocks along their axis (`padding` codes, each its
    block's zero point: value 0), a form every runtime takes (ONNX allows a short last block;
    OpenVINO refuses one). A MatMul or Gemm that reads a weight of PAD_INPUTS_MIN_VALUES values
    or more directly as its B reads it padded, its data input padded with zeros to match (exact;
    onnxruntime still fuses DequantizeLinear -> MatMul/Gemm into MatMulNBits); every other use
    reads it sliced back. `pad_inputs` False: every use reads it sliced back (static
    quantization, whose activation Q/DQ pairs sit on those inputs).
    """

    name: str
    shape: tuple[int, ...]
    scheme: Scheme
    axis: int | None
    scale_type: int = TensorProto.FLOAT
    cast_to: int | None = None
    nested: bool = False
    in_body: bool = False
    lookups: int = 0
    dense: bool = True
    block_size: int | None = None  # blocks along `axis` (opset 21), one scale per block
    range: str = "minmax"  # minmax, refit or search (see QuantizeConfig.range)
    nbits: bool = False  # com.microsoft.MatMulNBits instead of DequantizeLinear (MatMul weights [K, N])
    accuracy_level: int = 0  # MatMulNBits' compute type (0: float; 4: int8 activations)
    gather_block: bool = False  # lookups as com.microsoft.GatherBlockQuantized (tables [V, D], blocks along axis 1)
    dynamic: bool = False  # read by MatMulInteger, activations quantized at run time (quantrs.dynamic)
    pad_inputs: bool = True  # padded codes: direct MatMul/Gemm readers get their data input padded (else a Slice)
    zero_point: bool = False  # store the zero points even when they are the default 0 (static Gemm weights: QGemm)

    @property
    def padding(self) -> int:
        """Codes added along the block axis to make whole blocks (0: none): DequantizeLinear
        blocks only. MatMulNBits pads its own columns; GatherBlockQuantized (onnxruntime only)
        takes a short last block."""
        if self.block_size is None or self.axis is None or self.nbits or self.gather_block:
            return 0
        return -self.shape[self.axis] % self.block_size

    @property
    def reads_padded(self) -> bool:
        """Whether its direct MatMul/Gemm readers read the padded weight (their input padded),
        rather than the weight sliced back: see PAD_INPUTS_MIN_VALUES."""
        return bool(self.padding) and self.pad_inputs and math.prod(self.shape) >= PAD_INPUTS_MIN_VALUES

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """The codes' shape: the weight's, with `padding` more along the block axis."""
        if not self.padding:
            return self.shape
        assert self.axis is not None
        dims = list(self.shape)
        dims[self.axis] += self.padding
        return tuple(dims)

    @property
    def code_offset(self) -> int:
        """What is added to each code (mod 256) to store it: 128 for a GatherBlockQuantized table
        of signed 8-bit codes, which onnxruntime takes as UINT8 only (the codes then have zero
        point 128, its default for 8 bits); else 0."""
        return 128 if self.gather_block and self.scheme.signed and not self.scheme.packed else 0

    @property
    def code_type(self) -> int:
        """The ONNX type the codes (and zero points) are stored as."""
        return TensorProto.UINT8 if self.code_offset else self.scheme.onnx_type

    @property
    def storage_name(self) -> str:
        """What reports call the codes' storage: their ONNX type, or MatMulNBits' packed
        unsigned width (its B input is bytes)."""
        if self.nbits:
            return f"UINT{self.scheme.bits} (MatMulNBits)"
        if self.dynamic:
            return "INT8 (MatMulInteger)"
        return TensorProto.DataType.Name(self.code_type)

    @property
    def nbits_layout(self) -> tuple[int, int, int, int]:
        """(K, N, blocks per column, bytes per block) of the MatMulNBits form."""
        assert self.block_size is not None
        k, n = self.shape
        return k, n, -(-k // self.block_size), self.block_size * self.scheme.bits // 8

    @property
    def nbits_zero_point_bytes(self) -> int:
        """Bytes per column of MatMulNBits' packed zero points."""
        _, _, blocks, _ = self.nbits_layout
        return -(-blocks * self.scheme.bits // 8)

    @property
    def channels(self) -> int:
        """How many scales (and zero points) the weight has."""
        return math.prod(self.param_dims)

    @property
    def code_bytes(self) -> int:
        """Bytes of the stored codes: MatMulNBits' columns padded to whole blocks, or the codes
        (padded to whole blocks, `stored_shape`) one per byte (two when packed)."""
        if self.nbits:
            _, n, blocks, blob = self.nbits_layout
            return n * blocks * blob
        count = math.prod(self.stored_shape)
        return (count + 1) // 2 if self.scheme.packed else count

    @property
    def zero_point_bytes(self) -> int:
        """Bytes of the stored zero points (0 when the default is stored)."""
        if not self.has_zero_point:
            return 0
        if self.nbits:
            return self.shape[1] * self.nbits_zero_point_bytes
        return (self.channels + 1) // 2 if self.scheme.packed else self.channels

    @property
    def scale_bytes(self) -> int:
        return (2 if self.scale_type == TensorProto.FLOAT16 else 4) * self.channels

    @property
    def stored_bytes(self) -> int:
        """Everything the weight is stored as: codes, scales, zero points."""
        return self.code_bytes + self.scale_bytes + self.zero_point_bytes

    @property
    def has_zero_point(self) -> bool:
        # symmetric codes have zero point 0, the default; offset codes have 128, GatherBlockQuantized's
        # default, but DequantizeLinear's is 0: a table also read densely stores its zero points;
        # `zero_point` asks for them stored anyway
        return not self.scheme.symmetric or self.zero_point or (self.code_offset != 0 and self.dense)

    @property
    def param_dims(self) -> list[int]:
        """The scale's shape: [] per tensor, [C] per channel, or the blocked shape (the weight's,
        with the block axis divided into whole blocks of the padded codes)."""
        if self.axis is None:
            return []
        if self.block_size is None:
            return [self.shape[self.axis]]
        dims = list(self.shape)
        dims[self.axis] = -(-dims[self.axis] // self.block_size)
        return dims

    @property
    def dq_attributes(self) -> dict[str, int]:
        if self.axis is None:
            return {}
        return {"axis": self.axis} if self.block_size is None else {"axis": self.axis, "block_size": self.block_size}


@dataclass(frozen=True)
class DQTensors:
    """The initializers that replace one float weight (headers: no bytes yet).

    `in_body`: they are initializers of the body that defined the weight (the headers are the
    body's own messages, to be filled with their bytes before the model is written), not of the
    main graph (streamed by the writer). onnxruntime fuses DequantizeLinear -> MatMul inside a
    body only when the codes are that body's own initializers.
    """

    codes: TensorProto
    scale: TensorProto
    zero_point: TensorProto | None
    in_body: bool = False

    def all(self) -> list[TensorProto]:
        return [t for t in (self.codes, self.scale, self.zero_point) if t is not None]


# A padded weight at least this large is read padded by its MatMul/Gemm (the input padded to
# match); a smaller one sliced back. Slicing makes onnxruntime dequantize the whole weight at
# every run instead of fusing it into MatMulNBits: 33x slower on a [1000, 4096] FFN weight at
# batch 1; padding copies the input: on magika's [257, 64] weight, whose input is 2048 one-hot
# rows a sample, its runs then take 453 MB at batch 32 in onnxruntime's arena (292 MB with the
# short last block, 134 MB sliced), 7% slower than sliced. bench/RESULTS.md has both.
PAD_INPUTS_MIN_VALUES = 1 << 16

HALF_SCALE_OPSET = 19  # DequantizeLinear accepts float16/bfloat16 scales from opset 19
BLOCKED_OPSET = 21  # DequantizeLinear's block_size
MICROSOFT_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops (MatMulNBits, GatherBlockQuantized)


def required_opset(specs: Iterable[DQSpec]) -> int:
    """The lowest ai.onnx opset whose DequantizeLinear can express every spec. A table only
    GatherBlockQuantized reads needs no DequantizeLinear, but INT4/UINT4 codes still need opset
    21 (their tensors are IR version 10, which the conversion to 21 gives)."""
    need = 10
    for spec in specs:
        need = max(need, spec.scheme.min_opset)
        if spec.gather_block and not spec.dense:
            continue  # no DequantizeLinear
        need = max(need, PER_AXIS_OPSET if spec.axis is not None else 10)
        if spec.scale_type != TensorProto.FLOAT:
            need = max(need, HALF_SCALE_OPSET)
        if spec.lookups and spec.axis is not None:
            need = max(need, PER_AXIS_OPSET)
        if spec.block_size is not None and not spec.nbits:
            need = max(need, BLOCKED_OPSET)
    return need


@contextmanager
def initializers_as_inputs(model: onnx.ModelProto) -> Iterator[onnx.ModelProto]:
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


def checker_problem(model: onnx.ModelProto) -> str | None:
    """The first line of what onnx.checker finds wrong with `model` (bodies included), or None.
    Its initializers are stood in for by inputs, so that no weight is serialized. The one
    checker call of quantrs."""
    try:
        with initializers_as_inputs(model) as skeleton:
            onnx.checker.check_model(skeleton)
    except onnx.checker.ValidationError as exc:
        return first_line(exc)
    return None


def check_model(model: onnx.ModelProto, file: object = None, *, as_given: Callable[[], str | None] | None = None) -> None:
    """UnsupportedModelError (naming `file`) when onnx.checker fails on the quantized `model`.
    `as_given`: checker_problem() of the input model, asked only when the output fails (checking
    a model whose weights sit in Constant nodes copies them). The same problem is the input's,
    not quantrs': onnxruntime runs models the checker refuses (a graph output without a shape,
    say), so the output is kept, with a warning."""
    problem = checker_problem(model)
    if problem is None:
        return
    if as_given is not None and problem == as_given():
        logger.warning("%s fails onnx.checker as it was given, and so does its output: %s", file, problem)
        return
    raise UnsupportedModelError(f"the quantized model fails onnx.checker: {problem}", file=file)


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
            raise UnsupportedModelError(f"cannot convert the model from opset {source} to {target}: {first_line(exc)}") from None
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


def detach_nested_weights(graph: onnx.GraphProto, specs: Mapping[str, DQSpec]) -> None:
    """Take the values of nested weights (Constant nodes, body initializers) out of the graph,
    leaving a Constant placeholder without data where each was defined.

    The placeholders keep every scope as it was through the opset conversion and the checks
    (which serialize the model), without carrying the weights' bytes; insert_weight_dq replaces
    them. The weights' values stay reachable through the WeightStore, which holds its own
    references to them. Edits `graph` in place.
    """
    nested = {name for name, spec in specs.items() if spec.nested}
    if not nested:
        return
    for scope in walk_graphs(graph):
        g = scope.graph
        for node in g.node:
            if node.op_type == "Constant" and node.output and node.output[0] in nested:
                tensor = constant_tensor(node)
                assert tensor is not None
                placeholder = tensor_header("", tensor.data_type, list(tensor.dims))
                kept = [a for a in node.attribute if a.name != "value"]
                del node.attribute[:]
                node.attribute.extend(kept)
                node.attribute.append(helper.make_attribute("value", placeholder))
        moved = [t for t in g.initializer if t.name in nested]
        if moved and scope.path:
            kept_inits = [t for t in g.initializer if t.name not in nested]
            del g.initializer[:]
            g.initializer.extend(kept_inits)
            placeholders = [
                helper.make_node("Constant", [], [t.name], value=tensor_header("", t.data_type, list(t.dims))) for t in moved
            ]
            nodes = placeholders + list(g.node)
            del g.node[:]
            g.node.extend(nodes)


def insert_weight_dq(graph: onnx.GraphProto, specs: Mapping[str, DQSpec]) -> dict[str, DQTensors]:
    """Add, for each spec, a DequantizeLinear whose output keeps the weight's name (consumers are
    untouched), and return the headers of its codes, scale and zero point.

    Edits `graph` in place. The codes, scales and zero points go where the weight was defined:
    the main graph's initializers, or the initializers of the body that held the weight. A
    main-graph initializer is removed and its DequantizeLinear put first in the main graph (it
    reads only initializers, so the graph stays topologically sorted); a nested weight's
    placeholder (see detach_nested_weights) is replaced where it stands. Gather lookups of a
    table become Gather(codes) + Gather(scale) (+ Gather(zero point)) -> DequantizeLinear (see
    _lookup), or one GatherBlockQuantized for `gather_block` specs, so that only the rows looked
    up are dequantized; a table that nothing else reads needs no DequantizeLinear of its own.
    Codes padded to whole blocks (DQSpec.padding) dequantize to `<name>_padded`: the MatMul/Gemm
    nodes that read the weight directly read that, their data input padded with zeros; a Slice
    gives the weight under its name to its other readers. New names are derived from the
    weight's name and made unique across the model.
    """
    index = GraphIndex(graph)
    fresh = name_maker(index.all_names())

    kept = [t for t in graph.initializer if t.name not in specs or specs[t.name].nested]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    tensors: dict[str, DQTensors] = {}
    top: list[onnx.NodeProto] = []
    replacements: dict[str, list[onnx.NodeProto]] = {}  # placeholder output -> its nodes
    # A node is known by its place (scope, node) in the walk: rewriting a graph copies its nodes,
    # bodies included, so a body's nodes are other objects by the time the walk reaches them,
    # but in the same scopes and order (the nodes added have no bodies).
    place = {id(node): (k, j) for k, scope in enumerate(index.scopes) for j, node in enumerate(scope.graph.node)}
    rewrites: dict[
        tuple[int, int], list[onnx.NodeProto]
    ] = {}  # place of a Gather (or a MatMul/Gemm reading padded codes) -> its nodes
    fused: dict[tuple[int, int], onnx.NodeProto] = {}  # place of a MatMul -> its MatMulNBits
    for name, spec in specs.items():
        if spec.nbits:
            _, n, blocks, blob = spec.nbits_layout
            tensors[name] = DQTensors(
                tensor_header(fresh(f"{name}_quantized"), TensorProto.UINT8, [n, blocks, blob]),
                tensor_header(fresh(f"{name}_scale"), spec.scale_type, [n, blocks]),
                tensor_header(fresh(f"{name}_zero_point"), TensorProto.UINT8, [n, spec.nbits_zero_point_bytes])
                if spec.has_zero_point
                else None,
            )
            for use in index.uses.get(name, []):
                fused[place[id(use.node)]] = _matmulnbits(spec, tensors[name], use.node, fresh)
            continue
        code_type = spec.code_type
        codes = tensor_header(fresh(f"{name}_quantized"), code_type, list(spec.stored_shape))
        scale = tensor_header(fresh(f"{name}_scale"), spec.scale_type, spec.param_dims)
        zero_point = tensor_header(fresh(f"{name}_zero_point"), code_type, spec.param_dims) if spec.has_zero_point else None
        tensors[name] = DQTensors(codes, scale, zero_point)
        uses = index.uses.get(name, [])
        padded_reads = {id(use) for use in uses if spec.reads_padded and _reads_padded(spec, use)}
        padded = fresh(f"{name}_padded") if spec.padding else None
        whole = any(not (u.node.op_type == "Gather" and u.index == 0 and spec.lookups) for u in uses if id(u) not in padded_reads)
        nodes = _dequantize(spec, tensors[name], name, fresh, padded=padded, whole=whole) if spec.dense else []
        if spec.nested:
            replacements[name] = nodes
        else:
            top += nodes
        for use in uses:
            if use.node.op_type == "Gather" and use.index == 0 and spec.lookups:
                rewrites[place[id(use.node)]] = (_gather_block if spec.gather_block else _lookup)(
                    spec, tensors[name], use.node, fresh
                )
            elif id(use) in padded_reads:
                assert padded is not None
                rewrites[place[id(use.node)]] = _padded_read(spec, padded, use.node, fresh)
    _splice_nodes(graph, specs, tensors, top, replacements, rewrites, fused)
    missing = sorted(replacements)
    if missing:  # a placeholder the opset conversion dropped: a bug, not bad input
        raise RuntimeError(f"the Constant placeholders of {missing} were not found after the opset conversion")
    return tensors


def _splice_nodes(
    graph: onnx.GraphProto,
    specs: Mapping[str, DQSpec],
    tensors: dict[str, DQTensors],
    top: list[onnx.NodeProto],
    replacements: dict[str, list[onnx.NodeProto]],
    rewrites: dict[tuple[int, int], list[onnx.NodeProto]],
    fused: dict[tuple[int, int], onnx.NodeProto],
) -> None:
    """insert_weight_dq's second step: put the nodes it made in every scope of `graph`, in
    place of what they replace (found by place, (scope, node) in the walk, and taken from the
    dicts as they are used): a nested weight's placeholder (its codes, scale and zero point go
    into that body's initializers, `tensors` then holds the body's own messages), a rewritten
    Gather or padded read, a MatMul fused as MatMulNBits; `top` goes first in the main graph."""
    for k, scope in enumerate(walk_graphs(graph)):
        g = scope.graph
        nodes = []
        for j, node in enumerate(g.node):
            if node.op_type == "Constant" and node.output and node.output[0] in replacements:
                name = node.output[0]
                nodes += replacements.pop(name)
                if specs[name].in_body:
                    g.initializer.extend(tensors[name].all())
                    count = len(tensors[name].all())
                    owned = list(g.initializer[len(g.initializer) - count :])  # the body's own messages
                    tensors[name] = DQTensors(owned[0], owned[1], owned[2] if count == 3 else None, in_body=True)
            elif (k, j) in rewrites:
                nodes += rewrites.pop((k, j))
            elif (k, j) in fused:
                nodes.append(fused.pop((k, j)))
            else:
                nodes.append(node)
        if scope.path == ():
            nodes = top + nodes
        del g.node[:]
        g.node.extend(nodes)


def _params(tensors: DQTensors) -> list[str]:
    return [tensors.codes.name, tensors.scale.name] + ([tensors.zero_point.name] if tensors.zero_point is not None else [])


def _dequantize(
    spec: DQSpec, tensors: DQTensors, name: str, fresh: FreshName, *, padded: str | None = None, whole: bool = True
) -> list[onnx.NodeProto]:
    """DequantizeLinear of the whole weight (and the Cast back to its type, for bfloat16). Codes
    padded to whole blocks dequantize to `padded`, and when `whole` a Slice cuts the weight
    itself (its name) out of them."""
    attrs: dict[str, Any] = dict(spec.dq_attributes)
    final = padded if padded is not None else name
    out = fresh(f"{name}_dequantized") if spec.cast_to is not None else final
    nodes = [helper.make_node("DequantizeLinear", _params(tensors), [out], name=fresh(f"{name}_DequantizeLinear"), **attrs)]
    if spec.cast_to is not None:
        nodes.append(helper.make_node("Cast", [out], [final], to=spec.cast_to, name=fresh(f"{name}_Cast")))
    if padded is not None and whole:
        assert spec.axis is not None
        nodes += _cut(padded, name, spec.axis, spec.shape[spec.axis], fresh, name)
    return nodes


def _constant(name: str, values: list[int], fresh: FreshName, base: str) -> onnx.NodeProto:
    """A Constant node holding an INT64 vector (a shape, axes, pads)."""
    return helper.make_node(
        "Constant",
        [],
        [name],
        value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values),
        name=fresh(f"{base}_Constant"),
    )


def _cut(value: str, result: str, axis: int, length: int, fresh: FreshName, base: str) -> list[onnx.NodeProto]:
    """Slice `value` to its first `length` entries along `axis`: padded values back to the weight's."""
    starts, ends, axes = (fresh(f"{base}_slice_{part}") for part in ("starts", "ends", "axes"))
    return [
        _constant(starts, [0], fresh, base),
        _constant(ends, [length], fresh, base),
        _constant(axes, [axis], fresh, base),
        helper.make_node("Slice", [value, starts, ends, axes], [result], name=fresh(f"{base}_Slice")),
    ]


def _int_attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _reads_padded(spec: DQSpec, use: Use) -> bool:
    """A MatMul or Gemm that reads the weight straight as its B, blocked along its reduction
    axis: it can take the padded weight with its A padded to match."""
    node = use.node
    if use.index != 1 or node.domain not in ("", "ai.onnx") or spec.axis is None:
        return False
    if node.op_type == "MatMul":
        return spec.axis == len(spec.shape) - 2
    if node.op_type == "Gemm":
        return spec.axis == (1 if _int_attribute(node, "transB", 0) else 0)
    return False


def _padded_read(spec: DQSpec, padded: str, node: onnx.NodeProto, fresh: FreshName) -> list[onnx.NodeProto]:
    """MatMul(A, W) or Gemm(A, W, ...) as the same node reading W padded to whole blocks along
    its reduction axis, and A padded with zeros along its own to match: the padded codes
    dequantize to 0, so the products are the same. onnxruntime fuses DequantizeLinear ->
    MatMul (or Gemm, transB 0) into MatMulNBits as it does for an unpadded weight."""
    a = node.input[0]
    base = node.name or node.output[0]
    axis = 0 if node.op_type == "Gemm" and _int_attribute(node, "transA", 0) else -1  # A's reduction axis
    pads, axes, widened = fresh(f"{a}_pads"), fresh(f"{a}_pad_axes"), fresh(f"{a}_padded")
    reader = onnx.NodeProto()
    reader.CopyFrom(node)
    reader.input[0], reader.input[1] = widened, padded
    return [
        _constant(pads, [0, spec.padding], fresh, base),
        _constant(axes, [axis], fresh, base),
        helper.make_node("Pad", [a, pads, "", axes], [widened], name=fresh(f"{base}_Pad")),
        reader,
    ]


def _matmulnbits(spec: DQSpec, tensors: DQTensors, matmul: onnx.NodeProto, fresh: FreshName) -> onnx.NodeProto:
    """MatMul(A, W) as com.microsoft.MatMulNBits(A, packed codes, scales[, zero points])."""
    k, n, _, _ = spec.nbits_layout
    inputs = [matmul.input[0], tensors.codes.name, tensors.scale.name] + (
        [tensors.zero_point.name] if tensors.zero_point is not None else []
    )
    return helper.make_node(
        "MatMulNBits",
        inputs,
        list(matmul.output),
        name=fresh(f"{matmul.name or spec.name}_MatMulNBits"),
        domain=MICROSOFT_DOMAIN,
        K=k,
        N=n,
        bits=spec.scheme.bits,
        block_size=spec.block_size,
        accuracy_level=spec.accuracy_level,
    )


def _gather_block(spec: DQSpec, tensors: DQTensors, gather: onnx.NodeProto, fresh: FreshName) -> list[onnx.NodeProto]:
    """Gather(table, ids) as com.microsoft.GatherBlockQuantized(codes, ids, scales[, zero
    points]): the rows looked up are dequantized, in blocks along the row (the last axis), by
    one node. The codes are the ones a DequantizeLinear of the whole table reads (INT4/UINT4, or
    UINT8 for 8 bits), so a table also read densely is stored once."""
    ids, result = gather.input[1], gather.output[0]
    base = gather.name or result
    final = fresh(f"{result}_dequantized") if spec.cast_to is not None else result
    assert spec.block_size is not None
    nodes = [
        helper.make_node(
            "GatherBlockQuantized",
            [tensors.codes.name, ids, *_params(tensors)[1:]],
            [final],
            name=fresh(f"{base}_GatherBlockQuantized"),
            domain=MICROSOFT_DOMAIN,
            gather_axis=0,
            quantize_axis=len(spec.shape) - 1,
            block_size=spec.block_size,
            bits=spec.scheme.bits,
        )
    ]
    if spec.cast_to is not None:
        nodes.append(helper.make_node("Cast", [final], [result], to=spec.cast_to, name=fresh(f"{base}_Cast")))
    return nodes


def _lookup(spec: DQSpec, tensors: DQTensors, gather: onnx.NodeProto, fresh: FreshName) -> list[onnx.NodeProto]:
    """Gather rows of the codes (and of their scales and zero points), then dequantize only
    those rows. Per row, the ids are flattened so that the gathered scales are 1-D (what
    DequantizeLinear's axis needs) and the rows are put back in the ids' shape afterwards; in
    blocks, the gathered codes are viewed as one block per row (see below)."""
    ids, result = gather.input[1], gather.output[0]
    base = gather.name or result
    node = lambda op, inputs, outputs, **attrs: helper.make_node(op, inputs, outputs, name=fresh(f"{base}_{op}"), **attrs)  # noqa: E731
    final = fresh(f"{result}_dequantized") if spec.cast_to is not None else result
    if spec.axis is None:
        rows = fresh(f"{result}_codes")
        nodes = [
            node("Gather", [tensors.codes.name, ids], [rows], axis=0),
            node("DequantizeLinear", [rows, *_params(tensors)[1:]], [final]),
        ]
    elif spec.block_size is not None:
        # Blocks along the row: the rows' codes [*ids, blocks * block] as [rows * blocks, block],
        # one scale (and zero point) each from the rows' [*ids, blocks] flattened, dequantized per
        # axis and put back in the rows' shape (cut to the row's length when padded). A blocked
        # DequantizeLinear of the gathered rows would be shorter, but needs static shapes in
        # OpenVINO; the ids' shape is known only at run time.
        rows, rows_shape, block_shape, flat_shape, blocks, deq = (
            fresh(f"{result}_{s}") for s in ("codes", "rows_shape", "block_shape", "flat_shape", "code_blocks", "blocks")
        )
        whole = fresh(f"{result}_padded") if spec.padding else final
        nodes = [
            node("Gather", [tensors.codes.name, ids], [rows], axis=0),
            _constant(block_shape, [-1, spec.block_size], fresh, base),
            node("Reshape", [rows, block_shape], [blocks]),
            _constant(flat_shape, [-1], fresh, base),
        ]
        params = [blocks]
        for source, part in zip(_params(tensors)[1:], ("scales", "zero_points")):
            gathered, flat = fresh(f"{result}_{part}"), fresh(f"{result}_block_{part}")
            nodes += [node("Gather", [source, ids], [gathered], axis=0), node("Reshape", [gathered, flat_shape], [flat])]
            params.append(flat)
        nodes += [
            node("DequantizeLinear", params, [deq], axis=0),
            node("Shape", [rows], [rows_shape]),
            node("Reshape", [deq, rows_shape], [whole]),
        ]
        if spec.padding:
            nodes += _cut(whole, final, -1, spec.shape[-1], fresh, base)
    else:
        flat_shape, flat_ids, rows, row_scales = (fresh(f"{result}_{s}") for s in ("flat_shape", "flat_ids", "codes", "scales"))
        row_shape, ids_shape, out_shape, deq = (fresh(f"{result}_{s}") for s in ("row_shape", "ids_shape", "shape", "rows"))
        params = [rows, row_scales]
        nodes = [
            node("Constant", [], [flat_shape], value=helper.make_tensor(flat_shape, TensorProto.INT64, [1], [-1])),
            node("Reshape", [ids, flat_shape], [flat_ids]),
            node("Gather", [tensors.codes.name, flat_ids], [rows], axis=0),
            node("Gather", [tensors.scale.name, flat_ids], [row_scales], axis=0),
        ]
        if tensors.zero_point is not None:
            row_zero_points = fresh(f"{result}_zero_points")
            nodes.append(node("Gather", [tensors.zero_point.name, flat_ids], [row_zero_points], axis=0))
            params.append(row_zero_points)
        nodes += [
            node("DequantizeLinear", params, [deq], axis=0),
            node("Shape", [ids], [ids_shape]),
            node("Constant", [], [row_shape], value=helper.make_tensor(row_shape, TensorProto.INT64, [1], [spec.shape[1]])),
            node("Concat", [ids_shape, row_shape], [out_shape], axis=0),
            node("Reshape", [deq, out_shape], [final]),
        ]
    if spec.cast_to is not None:
        nodes.append(node("Cast", [final], [result], to=spec.cast_to))
    return nodes


def tensor_header(name: str, data_type: int, dims: list[int]) -> TensorProto:
    """A TensorProto without values: what the writer fills in later."""
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
