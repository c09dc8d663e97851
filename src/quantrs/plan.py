"""Decide, for every stored tensor, whether it is quantized, how, and why not.

A weight is a float tensor (float32, float16, bfloat16) that feeds a weight input, wherever the
graph keeps it: a main-graph initializer, a Constant node, an initializer of an If/Loop/Scan
body, or a main-graph initializer a body reads; sometimes behind a Cast or a Transpose. The plan
is plain data (one TensorPlan per stored tensor) computed from how the graph uses each tensor;
every tensor left as it is carries the reason. Per-layer options change the plan, never the
kernels.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

import onnx
from onnx import TensorProto, helper

from quantrs.config import QuantizeConfig
from quantrs.errors import UnknownNameError
from quantrs.graph import MAIN, GraphIndex, Use
from quantrs.model import WeightInfo, WeightStore

__all__ = ["TensorPlan", "plan_weights", "WEIGHT_INPUTS", "FLOAT_TYPES", "quantized_ops"]

FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}


@dataclass(frozen=True)
class TensorPlan:
    """One stored tensor's fate.

    `axis` is the per-channel axis of the stored tensor (None: per tensor), or with `block_size`
    the reduction axis the blocks run along; `bits` the code width when quantized. `kind` and
    `scope` say where the tensor lives (an initializer or a Constant node; the main graph or a
    body). `lookups` are the Gather nodes that read rows of it (an embedding table: rewritten to
    gather the codes first) and `dense` says whether some other use needs the whole dequantized
    tensor.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantize: bool
    reason: str  # why it is skipped; how it is used when quantized
    axis: int | None = None
    bits: int | None = None
    kind: str = "initializer"
    scope: str = MAIN
    lookups: int = 0
    dense: bool = True
    block_size: int | None = None  # blocks of this many values along `axis`, the reduction axis
    nbits: bool = False  # written as com.microsoft.MatMulNBits (every use a MatMul's weight)
    gather_block: bool = False  # a table its Gathers read as com.microsoft.GatherBlockQuantized
    ops: tuple[str, ...] = ()  # the op types that consume it (after Cast/Transpose)
    channel_axis: int | None = None  # with blocks: the output-channel axis (for 8-bit layers, per channel)
    not_nbits: str = ""  # with quant_format matmulnbits, why this quantized weight is QDQ instead
    dynamic: bool = False  # read through MatMulInteger, its activations quantized at run time (--dynamic)


_Value = TypeVar("_Value")


def _attr(node: onnx.NodeProto, name: str, default: _Value) -> _Value:
    """The value of `node`'s attribute `name`, or `default` (of the type the attribute has)."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# (op_type, input index) -> the output-channel axis of a weight in that slot, from the node and
# the weight's rank; None when this use is not a quantizable weight. A table, not if-chains, so
# that a new op is one line.
AxisRule = Callable[[onnx.NodeProto, int], "int | None"]
_RECURRENT = lambda node, rank: 1 if rank == 3 else None  # noqa: E731  [directions, gates*hidden, in]: the gate rows
WEIGHT_INPUTS: dict[tuple[str, int], AxisRule] = {
    ("Conv", 1): lambda node, rank: 0 if rank >= 3 else None,
    ("ConvTranspose", 1): lambda node, rank: 1 if rank >= 3 else None,
    # MatMul(A, W) with W [..., K, N]: the output features are W's last axis.
    ("MatMul", 1): lambda node, rank: rank - 1 if rank >= 2 else None,
    # Gemm computes A' @ B' with B' = B^T when transB: output features are B's axis 0, else 1.
    ("Gemm", 1): lambda node, rank: (0 if _attr(node, "transB", 0) else 1) if rank == 2 else None,
    # An embedding table: rows are gathered, so each row is a channel (weight-only).
    ("Gather", 0): lambda node, rank: 0 if rank == 2 and _attr(node, "axis", 0) == 0 else None,
    # Recurrent layers: W (input 1) and R (input 2); biases and initial states stay float.
    ("LSTM", 1): _RECURRENT,
    ("LSTM", 2): _RECURRENT,
    ("GRU", 1): _RECURRENT,
    ("GRU", 2): _RECURRENT,
    ("RNN", 1): _RECURRENT,
    ("RNN", 2): _RECURRENT,
}

# (op_type, input index) -> the reduction (input) axis of a weight in that slot, along which
# blocks run (--block-size); None: this use is quantized per channel even with blocks (ONNX
# blocks along one axis only: for a Conv weight [out, in, kh, kw] that is a scale per
# (out, block of in, kh, kw), kh*kw times the scales of a MatMul block).
REDUCTION_AXES: dict[tuple[str, int], AxisRule] = {
    ("MatMul", 1): lambda node, rank: rank - 2,
    ("Gemm", 1): lambda node, rank: 1 if _attr(node, "transB", 0) else 0,
    ("Gather", 0): lambda node, rank: 1,  # a table's row: its values are what a lookup returns
    ("LSTM", 1): lambda node, rank: 2,
    ("LSTM", 2): lambda node, rank: 2,
    ("GRU", 1): lambda node, rank: 2,
    ("GRU", 2): lambda node, rank: 2,
    ("RNN", 1): lambda node, rank: 2,
    ("RNN", 2): lambda node, rank: 2,
}

# Ops a weight may pass through on its way to its consumer: the rewrite quantizes the stored
# tensor and leaves these nodes in place (they then read the dequantized tensor).
_PASS_THROUGH = {"Cast", "Transpose"}

# Ops that show a model is already quantized (their counts are reported).
_QUANTIZED_OPS = {
    "DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearWhere", "QGemm", "QAttention",
    "QOrderedMatMul", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "MatMulNBits", "MatMulIntegerToFloat",
    "GatherBlockQuantized", "MatMulFpQ4", "DequantizeBFP", "QuickGelu_Quant",
}  # fmt: skip


def quantized_ops(index: GraphIndex) -> dict[str, int]:
    """Quantized ops in the model (every scope), by op type, most frequent first."""
    counts: dict[str, int] = {}
    for scope in index.scopes:
        for node in scope.graph.node:
            if node.op_type in _QUANTIZED_OPS:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class _Consumer:
    """A use that ends a chain of pass-through ops; `perm` maps its axes to the stored tensor's."""

    use: Use
    perm: tuple[int, ...]
    direct: bool  # read straight from the stored tensor (no Cast/Transpose between)


def _consumers(index: GraphIndex, name: str, rank: int) -> tuple[list[_Consumer], str | None]:
    """The uses that consume the tensor, following Cast (to a float type) and Transpose; or a
    reason why the value escapes (it is also a graph output along the way)."""
    found: list[_Consumer] = []
    todo = [(name, tuple(range(rank)), True)]
    while todo:
        value, perm, direct = todo.pop()
        if value != name and value in index.graph_outputs:
            return [], f"its {'transposed' if perm != tuple(range(rank)) else 'cast'} value {value!r} is a graph output"
        for use in index.uses.get(value, []):
            node = use.node
            passes = node.domain in ("", "ai.onnx") and node.op_type in _PASS_THROUGH and use.index == 0
            if passes and node.op_type == "Cast" and _attr(node, "to", 0) not in FLOAT_TYPES:
                passes = False
            if not passes:
                found.append(_Consumer(use, perm, direct))
                continue
            if node.op_type == "Transpose":
                order = list(_attr(node, "perm", list(range(rank))[::-1]))
                if sorted(order) != list(range(rank)):
                    found.append(_Consumer(use, perm, direct))
                    continue
                todo.append((node.output[0], tuple(perm[p] for p in order), False))
            else:
                todo.append((node.output[0], perm, False))
    return found, None


def plan_weights(
    graph: onnx.GraphProto, weights: WeightStore, config: QuantizeConfig, index: GraphIndex | None = None
) -> list[TensorPlan]:
    """One TensorPlan per stored tensor (initializers and Constant values, every scope).

    Raises UnknownNameError when `config.exclude`, `config.exclude_op_types` or
    `config.layer_bits` names something the model does not have (a typo would otherwise pass
    silently).
    """
    index = index or GraphIndex(graph)
    _check_names(index, weights, config)
    excluded_nodes = _excluded_node_names(index, config)
    patterns = [re.compile(p) for p in config.exclude_regex]
    plans = []
    for info in weights:
        original = weights.aliases.get(info.name, info.name)  # what the user sees in the file
        plan = _plan_one(info, index, config, excluded_nodes, original)
        plans.append(_apply_overrides(plan, config, patterns, original))
    return _pair_lstm_weights(plans, index) if config.dynamic else plans


_DYNAMIC_LSTM = ", dynamic INT8 (activations quantized at run time: DynamicQuantizeLSTM)"


def _pair_lstm_weights(plans: list[TensorPlan], index: GraphIndex) -> list[TensorPlan]:
    """DynamicQuantizeLSTM takes W and R both: an LSTM weight planned for it whose partner is
    not (too small, excluded, shared) stays weight-only, and its reason says so."""
    by_name = {p.name: p for p in plans}
    lstms = [n for n in index.main.graph.node if n.op_type == "LSTM" and n.domain in ("", "ai.onnx") and len(n.input) > 2]
    changed = True
    while changed:  # a weight made weight-only here can leave another LSTM's partner alone
        changed = False
        for node in lstms:
            pair = [by_name.get(node.input[1]), by_name.get(node.input[2])]
            if all(p is not None and p.dynamic for p in pair):
                continue
            for p in pair:
                if p is not None and p.dynamic:
                    why = (
                        "weight-only, not dynamic: DynamicQuantizeLSTM takes W and R both, and the other is not quantized for it"
                    )
                    by_name[p.name] = replace(p, dynamic=False, reason=f"{p.reason.replace(_DYNAMIC_LSTM, '')}; {why}")
                    changed = True
    return [by_name[p.name] for p in plans]


def _excluded_node_names(index: GraphIndex, config: QuantizeConfig) -> set[str]:
    names = set(config.exclude)
    return {node.name for scope in index.scopes for node in scope.graph.node if node.name and node.name in names}


def _check_names(index: GraphIndex, weights: WeightStore, config: QuantizeConfig) -> None:
    weight_names = [info.name for info in weights if info.data_type in FLOAT_TYPES]
    node_names = {node.name for scope in index.scopes for node in scope.graph.node if node.name}
    for name in config.exclude:
        if name not in weights and name not in node_names:
            raise UnknownNameError("exclude", name, "weight or node", _close(name, [*weight_names, *sorted(node_names)]))
    op_types = sorted({node.op_type for scope in index.scopes for node in scope.graph.node})
    for op in config.exclude_op_types:
        # A real op type this model lacks passes (one option list serves a whole batch); one
        # that is neither the model's nor an ONNX op is a typo.
        if op not in op_types and not onnx.defs.has(op):
            raise UnknownNameError("exclude_op_types", op, "op type", _close(op, op_types))
    for name, _ in config.layer_bits:
        if name not in weights:
            raise UnknownNameError("layer_bits", name, "weight", _close(name, weight_names))


def _close(name: str, candidates: list[str]) -> list[str]:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return close or [c for c in candidates if name.lower() in c.lower()][:3]


def _unquantized(plan: TensorPlan, reason: str) -> TensorPlan:
    return replace(plan, quantize=False, reason=reason, axis=None, block_size=None, nbits=False, gather_block=False)


def _apply_overrides(plan: TensorPlan, config: QuantizeConfig, patterns: list[re.Pattern[str]], original: str) -> TensorPlan:
    """Per-layer options: op-type and regex exclusions, and per-tensor bit widths."""
    if not plan.quantize:
        return plan
    excluded_ops = sorted(set(plan.ops) & set(config.exclude_op_types))
    if excluded_ops:
        return _unquantized(plan, f"used by an excluded op type ({', '.join(excluded_ops)})")
    for pattern in patterns:
        if pattern.search(original):
            return _unquantized(plan, f"excluded by the pattern {pattern.pattern!r}")
    bits = dict(config.layer_bits).get(original, config.bits)
    if (
        bits == 8 != config.bits
        and plan.block_size is not None
        and plan.channel_axis is not None
        and not (plan.nbits or plan.gather_block)
    ):
        # An 8-bit layer of a 4-bit blocked model: INT8 needs no blocks (per channel is as
        # accurate, 12% smaller), and onnxruntime's integer MatMul takes per-channel INT8 only.
        return replace(
            plan,
            bits=8,
            axis=plan.channel_axis,
            block_size=None,
            reason=plan.reason.split(", blocks of")[0] + ", 8 bits per channel (--layer-bits)",
        )
    return replace(plan, bits=bits)


def _plan_one(info: WeightInfo, index: GraphIndex, config: QuantizeConfig, excluded_nodes: set[str], original: str) -> TensorPlan:
    """One stored tensor's plan, in named steps that each give a plan or the reason for none:
    the refusals the tensor alone decides (`_refusal`), the roles its consumers give it
    (`_roles`: a new op is a line in WEIGHT_INPUTS/REDUCTION_AXES), then the layout
    (`_choose_layout`: a new format is one more entry in `_FORMS`)."""
    reason = _refusal(info, index, config, original)
    if reason is not None:
        return _skipped(info, reason)
    roles = _roles(info, index, excluded_nodes)
    if isinstance(roles, str):
        return _skipped(info, roles)
    if info.size < config.min_elements:
        return _skipped(info, f"too small: {info.size} elements < min_elements {config.min_elements}")
    return _choose_layout(info, index, config, roles)


def _skipped(info: WeightInfo, reason: str) -> TensorPlan:
    return TensorPlan(info.name, info.shape, info.dtype_name, False, reason, kind=info.kind, scope=info.scope)


def _refusal(info: WeightInfo, index: GraphIndex, config: QuantizeConfig, original: str) -> str | None:
    """Why the tensor stays float whatever reads it (None: its uses decide)."""
    if info.data_type not in FLOAT_TYPES:
        return f"not a float tensor ({info.dtype_name})"
    if info.size == 0:
        return "empty"
    if original in config.exclude:
        return "excluded by the user"
    if not index.uses.get(info.name):
        return "not used by any node"
    if info.name in index.graph_inputs:
        return "also a graph input (its value can be overridden at run time)"
    if info.name in index.graph_outputs:
        return "also a graph output"
    return None


@dataclass(frozen=True)
class _Roles:
    """What a weight's consumers make of it: the stored tensor's output-channel axes and
    reduction axes (None: a use without blocks), the consuming op types, how many Gathers read
    rows straight from it, whether another use needs it whole, and the plan's reason text."""

    consumers: tuple[_Consumer, ...]
    axes: frozenset[int]
    reductions: frozenset[int | None]
    ops: tuple[str, ...]
    lookups: int
    dense: bool
    role: str


def _roles(info: WeightInfo, index: GraphIndex, excluded_nodes: set[str]) -> _Roles | str:
    """The roles the tensor's consumers give it, or the reason (the first consumer that is not
    a quantizable weight use) it is not a weight."""
    consumers, escapes = _consumers(index, info.name, len(info.shape))
    if escapes:
        return f"not a weight: {escapes}"
    axes: set[int] = set()
    reductions: set[int | None] = set()
    roles = []
    lookups = 0
    for c in consumers:
        node, where = c.use.node, c.use.index
        refused = _consumer_refusal(c, len(info.shape), excluded_nodes)
        if refused is not None:
            return refused
        axis = WEIGHT_INPUTS[node.op_type, where](node, len(info.shape))
        assert axis is not None  # _consumer_refusal checked
        axes.add(c.perm[axis])
        reduction = REDUCTION_AXES.get((node.op_type, where), lambda node, rank: None)(node, len(info.shape))
        reductions.add(None if reduction is None else c.perm[reduction])
        roles.append(node.op_type)
        if node.op_type == "Gather" and c.direct:
            lookups += 1
    role = "weight of " + ", ".join(sorted(set(roles)))
    if any(not c.direct for c in consumers):
        role += " (through " + ", ".join(sorted({_path_ops(index, info.name)})) + ")"
    dense = lookups < len(consumers)  # some use other than a direct Gather
    return _Roles(tuple(consumers), frozenset(axes), frozenset(reductions), tuple(sorted(set(roles))), lookups, dense, role)


def _consumer_refusal(c: _Consumer, rank: int, excluded_nodes: set[str]) -> str | None:
    """Why this use keeps the tensor float (None: it is a quantizable weight use)."""
    node, where = c.use.node, c.use.index
    label = f"{node.op_type} {node.name!r}".replace(" ''", "")
    if node.name and node.name in excluded_nodes:
        return f"read by {label}, excluded by the user"
    inside = [n for n in excluded_nodes if any(f" {n!r} " in f" {level} " for level in c.use.scope.path)]
    if inside:  # an excluded If/Loop/Scan node: the weights its bodies read stay float too
        return f"read inside the body of {inside[0]!r}, excluded by the user"
    rule = WEIGHT_INPUTS.get((node.op_type, where))
    if node.domain not in ("", "ai.onnx") or rule is None:
        return f"not a weight: input {where} of {label}"
    if rule(node, rank) is None:
        return f"not a weight: {label} uses it with rank {rank}"
    return None


def _quantized(
    info: WeightInfo,
    roles: _Roles,
    axis: int | None,
    block_size: int | None = None,
    why: str = "",
    nbits: bool = False,
    gather_block: bool = False,
    dynamic: bool = False,
) -> TensorPlan:
    """The plan of a weight quantized in this layout; `why` adds to its role in the reason."""
    return TensorPlan(
        info.name,
        info.shape,
        info.dtype_name,
        True,
        roles.role + why,
        axis,
        kind=info.kind,
        scope=info.scope,
        lookups=roles.lookups,
        dense=roles.dense,
        block_size=block_size,
        nbits=nbits,
        gather_block=gather_block,
        dynamic=dynamic,
        ops=roles.ops,
        channel_axis=next(iter(roles.axes)) if len(roles.axes) == 1 and block_size is not None else None,
    )


def _choose_layout(info: WeightInfo, index: GraphIndex, config: QuantizeConfig, roles: _Roles) -> TensorPlan:
    """The first fused form (`_FORMS`) that takes the weight, else QDQ (`_layout`), its reason
    saying why the fused form asked for did not take it."""
    for form in _FORMS:
        plan = form(info, config, roles)
        if plan is not None:
            return plan
    quantized = partial(_quantized, info, roles)
    plan = _layout(info, config, quantized, set(roles.axes), set(roles.reductions))
    consumers = list(roles.consumers)
    if config.quant_format == "matmulnbits":
        why = _why_not_fused(info, consumers, "MatMulNBits")
        plan = replace(plan, reason=f"{plan.reason}; QDQ, not MatMulNBits: {why}", not_nbits=why)
    elif config.dynamic:
        why = _why_not_fused(info, consumers, "MatMulInteger")
        if {c.use.op for c in consumers} == {"Conv"}:
            why += CONV_NOT_DYNAMIC
        plan = replace(plan, reason=f"{plan.reason}; weight-only, not dynamic: {why}")
    return plan


# Why --dynamic leaves Conv weights weight-only (issue 21.1), measured by bench/cnn_static.py
# (bench/RESULTS.md, 2026-12-06): onnxruntime's dynamic Conv, DynamicQuantizeLinear + ConvInteger
# as quantize_dynamic writes it, against weight-only QDQ, the rest of each model float, on eight
# CNNs at batch 1 and 8, one thread. ConvInteger with UINT8 weights ran at 0.31-0.88x float's
# speed, never faster than weight-only (0.45-0.89x) beyond noise (MTCNN's P-Net at batch 1:
# 0.88x against 0.85x, and 0.89x against 0.87x in an earlier run); with signed INT8 weights, the
# codes quantrs writes, 0.11-0.43x. Both are slower than float on every CNN: `calibrate` gives
# QLinearConv.
CONV_NOT_DYNAMIC = (
    "; ConvInteger (onnxruntime's dynamic Conv) ran no faster than weight-only on eight CNNs, both slower than "
    "float (0.11-0.88x float's speed against 0.45-0.89x, bench/cnn_static.py); `calibrate` gives QLinearConv"
)


def _as_matmulnbits(info: WeightInfo, config: QuantizeConfig, roles: _Roles) -> TensorPlan | None:
    """--quant-format matmulnbits: a MatMul weight as com.microsoft.MatMulNBits."""
    if config.quant_format != "matmulnbits" or not _matmulnbits_weight(info, list(roles.consumers)):
        return None
    block = config.blocks
    assert block is not None
    return _quantized(info, roles, 0, block, f", as MatMulNBits in blocks of {block} along axis 0", nbits=True)


def _as_gather_block(info: WeightInfo, config: QuantizeConfig, roles: _Roles) -> TensorPlan | None:
    """--quant-format matmulnbits: an embedding table as com.microsoft.GatherBlockQuantized."""
    if config.quant_format != "matmulnbits" or not roles.lookups:
        return None
    if not _gather_block_table(info, list(roles.consumers), set(roles.reductions), config.blocks):
        return None
    block = config.blocks
    assert block is not None
    why = f", as GatherBlockQuantized in blocks of {block} along axis 1"
    if roles.dense:  # the same codes, scales and zero points: stored once
        why += "; stored once: its other uses read the same codes through DequantizeLinear"
    return _quantized(info, roles, 1, block, why, gather_block=True)


def _as_dynamic(info: WeightInfo, config: QuantizeConfig, roles: _Roles) -> TensorPlan | None:
    """--dynamic: a MatMul weight read through MatMulInteger (the same rule as MatMulNBits'), or
    an LSTM's W or R read by DynamicQuantizeLSTM (per channel: one scale per gate row)."""
    if not config.dynamic:
        return None
    if _matmulnbits_weight(info, list(roles.consumers)):
        why = ", dynamic INT8 (activations quantized at run time: MatMulInteger)"
        return _quantized(info, roles, 1 if config.per_channel else None, why=why, dynamic=True)
    if _lstm_weight(info, list(roles.consumers)):
        return _quantized(info, roles, 1 if config.per_channel else None, why=_DYNAMIC_LSTM, dynamic=True)
    return None


def _lstm_weight(info: WeightInfo, consumers: list[_Consumer]) -> bool:
    """W or R ([directions, 4 * hidden, inputs]) of main-graph LSTMs only, a float32 initializer
    read directly, each LSTM in the default layout (com.microsoft.DynamicQuantizeLSTM has no
    `layout` and runs in float32). Measured (bench/lstm_dynamic.py): 2.4-3.7x faster than
    float where weight-only runs 0.57-0.62x."""
    return (
        info.data_type == TensorProto.FLOAT
        and info.kind == "initializer"
        and info.scope == MAIN
        and len(info.shape) == 3
        and all(
            c.direct and c.use.op == "LSTM" and c.use.node.domain in ("", "ai.onnx") and c.use.index in (1, 2)
            and not c.use.scope.path and _attr(c.use.node, "layout", 0) == 0
            for c in consumers
        )
    )  # fmt: skip


# The fused forms, tried in order before QDQ: each gives the weight's plan or None (not this
# form, or not this weight). A new format is one function here.
_FORMS: tuple[Callable[[WeightInfo, QuantizeConfig, _Roles], TensorPlan | None], ...] = (
    _as_matmulnbits,
    _as_gather_block,
    _as_dynamic,
)


def _layout(
    info: WeightInfo, config: QuantizeConfig, quantized: Callable[..., TensorPlan], axes: set[int], reductions: set[int | None]
) -> TensorPlan:
    """A QDQ weight's layout: blocks along its one reduction axis, else per channel, else per
    tensor, with the reason when the layout asked for cannot be had."""
    fallback = ""
    if config.blocks is not None:
        reduction = reductions.pop() if len(reductions) == 1 else None
        if len(reductions) > 0 or reduction is None:
            fallback = "; per channel: " + (
                "its uses need different block axes" if len(reductions) else "ONNX blocks a Conv weight along one axis only"
            )
        elif info.shape[reduction] < config.blocks:
            fallback = (
                f"; per channel: its input axis holds {info.shape[reduction]} values, less than one block of {config.blocks}"
            )
        else:
            return quantized(reduction, config.blocks, f", blocks of {config.blocks} along axis {reduction}")
    if not config.per_channel and not fallback:
        return quantized(None)
    if len(axes) > 1:
        if fallback:
            return quantized(
                None, why=fallback.replace("per channel", "per tensor") + f" (and its channel axes {sorted(axes)} differ)"
            )
        # One scale for all its users: per channel (the default) would leave it float.
        return quantized(None, why=f"; per tensor: its uses need different channel axes {sorted(axes)}")
    return quantized(axes.pop(), why=fallback)


# The weight types whose MatMul onnxruntime's MatMulNBits can replace: its scales have its
# input's type, float32 or float16 on the CPU. A bfloat16 weight stays QDQ (a float32 scale and
# a Cast back). GatherBlockQuantized has no such tie: its output is cast back like QDQ's.
NBITS_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


def _matmulnbits_weight(info: WeightInfo, consumers: list[_Consumer]) -> bool:
    """A [K, N] main-graph float32/float16 initializer that only MatMuls of the main graph read,
    as their weight: what com.microsoft.MatMulNBits replaces."""
    return (
        info.data_type in NBITS_TYPES
        and info.kind == "initializer"
        and info.scope == MAIN
        and len(info.shape) == 2
        and all(c.direct and c.use.op == "MatMul" and c.use.index == 1 and not c.use.scope.path for c in consumers)
    )


def _why_not_fused(info: WeightInfo, consumers: list[_Consumer], form: str) -> str:
    """Why _matmulnbits_weight is False, for the report: `form` (MatMulNBits, MatMulInteger)
    takes only what it accepts."""
    others = sorted({c.use.op for c in consumers if not (c.direct and c.use.op == "MatMul" and c.use.index == 1)})
    if others:
        return f"read by {', '.join(others)}"
    if info.data_type not in NBITS_TYPES:
        return f"{info.dtype_name.lower()}; {form} takes float32 or float16"
    if len(info.shape) != 2:
        return f"{len(info.shape)}-D; {form} takes 2-D weights"
    if info.scope != MAIN or any(c.use.scope.path for c in consumers):
        return "read inside an If/Loop/Scan body"
    return f"a Constant node's value; {form} takes an initializer"


def _gather_block_table(info: WeightInfo, consumers: list[_Consumer], reductions: set[int | None], block: int | None) -> bool:
    """A [V, D] main-graph initializer whose uses are all in the main graph, its lookups Gathers
    on axis 0 read straight from it, and every use blocked along the row (axis 1; e.g. a tied
    output projection MatMul(h, Transpose(table)) or Gemm(h, table, transB=1)), with rows of at
    least one block: what com.microsoft.GatherBlockQuantized (blocks along the last axis) replaces.
    onnxruntime needs a block size that is a power of 2 and at least 16 (every --block-size is)."""
    return (
        block is not None
        and block >= 16
        and block & (block - 1) == 0
        and info.kind == "initializer"
        and info.scope == MAIN
        and len(info.shape) == 2
        and info.shape[1] >= block
        and reductions == {1}
        and all(not c.use.scope.path for c in consumers)
    )


def _path_ops(index: GraphIndex, name: str) -> str:
    ops = sorted({u.op for u in index.uses.get(name, []) if u.op in _PASS_THROUGH})
    return "/".join(ops)
