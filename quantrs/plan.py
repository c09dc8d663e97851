"""Decide, for every initializer, whether it is quantized and along which axis.

The plan is plain data (one TensorPlan per initializer) computed from how the graph uses each
tensor; every tensor left as it is carries the reason. Per-layer options change the plan, never
the kernels.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import onnx
from onnx import TensorProto, helper

from quantrs.config import QuantizeConfig
from quantrs.model import WeightInfo, WeightStore

__all__ = ["TensorPlan", "plan_weights", "WEIGHT_INPUTS"]


@dataclass(frozen=True)
class TensorPlan:
    """One initializer's fate. `axis` is the per-channel axis (None: per tensor); `bits` the
    code width when quantized."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantize: bool
    reason: str  # why it is skipped; how it is used when quantized
    axis: int | None = None
    bits: int | None = None


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# (op_type, input index) -> the output-channel axis of a weight in that slot, from the node and
# the weight's rank; None when this use is not a quantizable weight. A table, not if-chains, so
# that a new op is one line.
AxisRule = Callable[[onnx.NodeProto, int], "int | None"]
WEIGHT_INPUTS: dict[tuple[str, int], AxisRule] = {
    ("Conv", 1): lambda node, rank: 0 if rank >= 3 else None,
    ("ConvTranspose", 1): lambda node, rank: 1 if rank >= 3 else None,
    # MatMul(A, W) with W [..., K, N]: the output features are W's last axis.
    ("MatMul", 1): lambda node, rank: rank - 1 if rank >= 2 else None,
    # Gemm computes A' @ B' with B' = B^T when transB: output features are B's axis 0, else 1.
    ("Gemm", 1): lambda node, rank: (0 if _attr(node, "transB", 0) else 1) if rank == 2 else None,
    # An embedding table: rows are gathered, so each row is a channel (weight-only).
    ("Gather", 0): lambda node, rank: 0 if rank == 2 and _attr(node, "axis", 0) == 0 else None,
}


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Names read by nodes inside If/Loop/Scan bodies (they may capture outer initializers)."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:
                for inner in sub.node:
                    names.update(inner.input)
                names |= _subgraph_names(sub)
    return names


def plan_weights(graph: onnx.GraphProto, weights: WeightStore, config: QuantizeConfig) -> list[TensorPlan]:
    """One TensorPlan per initializer of the main graph, in the graph's order."""
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name:
                uses[name].append((node, index))
    graph_outputs = {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input}
    in_subgraphs = _subgraph_names(graph)
    excluded = set(config.exclude)
    patterns = [re.compile(p) for p in config.exclude_regex]
    plans = []
    for info in weights:
        plan = _plan_one(info, uses.get(info.name, []), config, excluded, graph_inputs, graph_outputs, in_subgraphs)
        plans.append(_apply_overrides(plan, uses.get(info.name, []), config, patterns))
    return plans


def _apply_overrides(
    plan: TensorPlan, uses: list[tuple[onnx.NodeProto, int]], config: QuantizeConfig, patterns: list[re.Pattern[str]]
) -> TensorPlan:
    """Per-layer options: op-type and regex exclusions, and per-tensor bit widths."""
    if not plan.quantize:
        return plan
    excluded_ops = sorted({node.op_type for node, _ in uses} & set(config.exclude_op_types))
    if excluded_ops:
        return replace(plan, quantize=False, axis=None, reason=f"used by an excluded op type ({', '.join(excluded_ops)})")
    for pattern in patterns:
        if pattern.search(plan.name):
            return replace(plan, quantize=False, axis=None, reason=f"excluded by the pattern {pattern.pattern!r}")
    return replace(plan, bits=dict(config.layer_bits).get(plan.name, config.bits))


def _plan_one(
    info: WeightInfo,
    uses: list[tuple[onnx.NodeProto, int]],
    config: QuantizeConfig,
    excluded: set[str],
    graph_inputs: set[str],
    graph_outputs: set[str],
    in_subgraphs: set[str],
) -> TensorPlan:
    def skip(reason: str) -> TensorPlan:
        return TensorPlan(info.name, info.shape, info.dtype_name, False, reason)

    if info.data_type != TensorProto.FLOAT:
        return skip(f"not float32 ({info.dtype_name})")
    if info.size == 0:
        return skip("empty")
    if info.name in excluded:
        return skip("excluded by the user")
    if not uses and info.name not in in_subgraphs:
        return skip("not used by any node")
    if info.name in graph_inputs:
        return skip("also a graph input (its value can be overridden at run time)")
    if info.name in graph_outputs:
        return skip("also a graph output")
    if info.name in in_subgraphs:
        return skip("used inside a subgraph (If/Loop/Scan)")

    axes: set[int | None] = set()
    roles = []
    for node, index in uses:
        rule = WEIGHT_INPUTS.get((node.op_type, index))
        if node.domain not in ("", "ai.onnx") or rule is None:
            return skip(f"not a weight: input {index} of {node.op_type} {node.name!r}".replace(" ''", ""))
        axis = rule(node, len(info.shape))
        if axis is None:
            return skip(f"not a weight: {node.op_type} {node.name!r} uses it with rank {len(info.shape)}")
        axes.add(axis)
        roles.append(node.op_type)
    if info.size < config.min_elements:
        return skip(f"too small: {info.size} elements < min_elements {config.min_elements}")
    role = "weight of " + ", ".join(sorted(set(roles)))
    if not config.per_channel:
        return TensorPlan(info.name, info.shape, info.dtype_name, True, role, None)
    if len(axes) > 1:
        return skip(f"shared by {len(uses)} nodes that need different channel axes {sorted(axes)}")
    return TensorPlan(info.name, info.shape, info.dtype_name, True, role, axes.pop())
