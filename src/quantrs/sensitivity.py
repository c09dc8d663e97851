"""Per-layer sensitivity, for `quantrs auto`: for every weight and each width it may get, the
error that width injects into the output of the node reading the weight (measured on the float
model's own activations, as `validate --detailed` does) and the bytes it costs.

The local error of weight w at width c is the relative squared error of its consumer's output,

    r_w(c) = sum over samples ||node(x, Q_c(w)) - node(x, w)||^2 / sum ||node(x, w)||^2,

computed by running the consumer alone in onnxruntime (so every op quantrs quantizes is
measured by its real semantics) on the activations the float model feeds it. Each width is
quantized exactly as `quantize` would store it (same plan, scheme, axis, blocks, range; with
rounding gptq, codes compensated on the Hessian of the cached consumer inputs).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantrs.collect import ActivationRunner
from quantrs.config import QuantizeConfig
from quantrs.graph import MAIN, GraphIndex, subgraphs
from quantrs.model import LoadedModel
from quantrs.plan import TensorPlan, plan_weights
from quantrs.tensor import QuantizedTensor, quantize_tensor, scheme_for

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

    from quantrs.gptq import Compensation, Factor, Source, Target

__all__ = ["FLOAT", "LayerSensitivity", "Sensitivity", "measure", "width_configs", "dequantize"]

logger = logging.getLogger(__name__)

FLOAT = "float"  # the width choice that keeps a weight as it is
SENSITIVITY_BYTES = 64 << 20  # consumer inputs cached for the single-node runs (at least one sample)


@dataclass
class LayerSensitivity:
    """One weight: its consumer, and per width choice ("4", "8", "float") its local relative
    squared error and its stored bytes."""

    name: str
    consumer: str
    errors: dict[str, float]
    bytes: dict[str, int]
    note: str = ""


@dataclass
class Sensitivity:
    layers: list[LayerSensitivity]
    fixed: list[str]  # quantized weights not measured (inside bodies): they get the widest integer width
    samples: int  # the samples measured on (as many as SENSITIVITY_BYTES of activations hold)
    seconds: float
    runs: int = field(default=0)  # single-node onnxruntime runs


def width_configs(
    widths: Sequence[str], base: QuantizeConfig, block_size: int | None, *, static: bool = False
) -> dict[str, QuantizeConfig]:
    """The QuantizeConfig each integer width is stored with, so that what is measured is what
    is built: 4 bits in blocks of `block_size` (quantrs' best 4-bit scheme), or per channel when
    None; 8 bits per channel (as `--layer-bits NAME=8` stores them in a blocked model), except
    in `base`'s matmulnbits format, where MatMulNBits and GatherBlockQuantized keep 8 bits in the
    same blocks as 4 (`block_size` must then be given)."""
    nbits = base.quant_format == "matmulnbits"
    return {
        width: dataclasses.replace(
            base, bits=int(width), block_size=None if width == "8" and not nbits else block_size, per_channel=True,
            layer_bits=(), range=None, symmetric=base.symmetric or static,
        )
        for width in widths
        if width != FLOAT
    }  # fmt: skip


def measure(
    model: LoadedModel,
    configs: Mapping[str, QuantizeConfig],
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    with_float: bool,
    progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """Local errors and bytes of every weight quantized by all of `configs`, for each of them
    (and "float" when `with_float`)."""
    started = time.perf_counter()
    graph = model.proto.graph
    index = GraphIndex(graph)
    plans = _width_plans(model, configs, index)
    first_plans = next(iter(plans.values()))
    measured, fixed = _measurable(plans, index)
    layers = {name: LayerSensitivity(name, _label(node), {}, {}) for name, node in measured}
    stored = {t.name for t in graph.initializer} | {name for name, _ in measured}  # (a weight may be a Constant's output)
    needed = sorted({i for _, node in measured for i in node.input if i and i not in stored})
    inputs = _consumer_inputs(model, needed, samples) if measured and samples else []
    compensated = _gptq_targets(graph, measured, first_plans, configs)
    factors: dict = {}  # per source (activation, Conv geometry), shared by the weights reading it
    uses: dict = {}
    for target in compensated.values():
        uses[target.source] = uses.get(target.source, 0) + 1
    runs = 0
    for done, (name, node) in enumerate(measured):
        # One weight at a time: its sessions (float and each width) live only while its
        # consumer runs on the cached inputs, so memory holds one weight's copies, not all.
        values = np.asarray(model.weights.array(name))
        compensation = _compensation(model, compensated.get(name), inputs, factors, uses)
        feeds = [{i: cached[i] for i in node.input if i and i not in stored} for cached in inputs]
        runs += _measure_layer(
            model, layers[name], node, values, {w: plans[w][name] for w in configs}, configs, compensation, feeds
        )
        if with_float:
            layers[name].bytes[FLOAT] = values.nbytes
            layers[name].errors[FLOAT] = 0.0
        del values
        model.weights.release(name)
        if progress is not None:
            progress(done + 1, len(measured))
    return Sensitivity(list(layers.values()), fixed, len(inputs), time.perf_counter() - started, runs)


def _width_plans(
    model: LoadedModel, configs: Mapping[str, QuantizeConfig], index: GraphIndex
) -> dict[str, dict[str, TensorPlan]]:
    """The quantized weights' plans for each width, by name."""
    graph = model.proto.graph
    # Each width planned as auto builds it: the narrowest width's config with every weight set
    # to this width by layer_bits (an 8-bit Gemm weight of a 4-bit MatMulNBits model is per
    # channel, its MatMul weights 8-bit MatMulNBits).
    base = next(iter(configs.values()))
    base_plans = {p.name: p for p in plan_weights(graph, model.weights, base, index) if p.quantize}
    plans: dict[str, dict[str, TensorPlan]] = {}
    for width, config in configs.items():
        if config.bits == base.bits:
            plans[width] = base_plans
            continue
        every_weight = dataclasses.replace(base, layer_bits=tuple((n, config.bits) for n in base_plans))
        plans[width] = {p.name: p for p in plan_weights(graph, model.weights, every_weight, index) if p.quantize}
    return plans


def _measurable(plans: dict[str, dict[str, TensorPlan]], index: GraphIndex) -> tuple[list[tuple[str, onnx.NodeProto]], list[str]]:
    """The weights every width quantizes, split into those measured (with the main-graph node,
    without bodies, that consumes each) and those whose error is not measured."""
    common = set.intersection(*(set(p) for p in plans.values())) if plans else set()
    first_plans = next(iter(plans.values()))
    measured, fixed = [], []
    for name in (n for n in first_plans if n in common):
        plan = first_plans[name]
        consumer = next(
            (u.node for u in index.uses.get(name, []) if u.scope.path == () and next(subgraphs(u.node), None) is None), None
        )
        if plan.scope != MAIN or consumer is None:
            fixed.append(name)
        else:
            measured.append((name, consumer))
    return measured, fixed


def _measure_layer(
    model: LoadedModel,
    layer: LayerSensitivity,
    node: onnx.NodeProto,
    values: np.ndarray,
    plans: Mapping[str, TensorPlan],
    configs: Mapping[str, QuantizeConfig],
    compensation: Compensation | None,
    feeds: list[dict[str, np.ndarray]],
) -> int:
    """One weight's stored bytes and its consumer's relative output error at each width (its
    consumer run alone on `feeds`, with the float weight and with each width's); the number of
    onnxruntime runs."""
    name = layer.name
    variants = {"reference": values}
    for width, config in configs.items():
        plan = plans[width]
        layer.bytes[width] = _stored_bytes(plan, config)
        variants[width] = dequantize(_quantize(values, plan, config, compensation), plan.block_size).astype(values.dtype)
    sessions = {width: _single_node(model, node, name, v, feeds[0]) for width, v in variants.items()} if feeds else {}
    del variants
    sums = dict.fromkeys(configs, 0.0)
    norm = 0.0
    runs = 0
    for feed in feeds:
        reference = np.asarray(sessions["reference"].run([node.output[0]], feed)[0], dtype=np.float64)
        norm += float(np.sum(reference**2))
        for width in configs:
            out = np.asarray(sessions[width].run([node.output[0]], feed)[0], dtype=np.float64)
            sums[width] += float(np.sum((out - reference) ** 2))
        runs += 1 + len(configs)
    for width in configs:
        layer.errors[width] = sums[width] / norm if norm > 0 else (0.0 if sums[width] == 0 else float("inf"))
    if norm == 0:
        layer.note = "its consumer's output is zero on the samples"
    return runs


def _consumer_inputs(
    model: LoadedModel, names: list[str], samples: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """The values the measured weights' consumers read, on as many samples as fit
    SENSITIVITY_BYTES (at least one): one float run per sample."""
    runner = ActivationRunner(model, names, samples[0])
    cached: list[dict[str, np.ndarray]] = []
    total = 0
    for sample in runner.run(samples):
        values = {n: np.asarray(v) for n, v in sample.values}
        size = sum(v.nbytes for v in values.values())
        if cached and total + size > SENSITIVITY_BYTES:
            logger.info(
                "sensitivity on the first %d of %d samples (%.0f MB of activations)", len(cached), len(samples), total / 2**20
            )
            break
        cached.append(values)
        total += size
    return cached


def _gptq_targets(
    graph: onnx.GraphProto,
    measured: list[tuple[str, onnx.NodeProto]],
    plans: Mapping[str, TensorPlan],
    configs: Mapping[str, QuantizeConfig],
) -> dict[str, Target]:
    """With rounding gptq, the measured weights whose codes `quantize` compensates (and how)."""
    if not any(c.rounding == "gptq" for c in configs.values()):
        return {}
    from quantrs.gptq import find_targets

    names = [name for name, _ in measured]
    return find_targets(graph, names, {n: plans[n].shape for n in names})[0]


def _compensation(
    model: LoadedModel,
    target: Target | None,
    inputs: Sequence[Mapping[str, np.ndarray]],
    factors: dict[Source, Factor],
    uses: dict[Source, int],
) -> Compensation | None:
    """The weight's compensation from the Hessian of the cached consumer inputs (the samples the
    sensitivity pass holds; `quantize` takes all of them), or None: rounded to nearest. A
    factor is kept in `factors` until the last weight reading its source (`uses`)."""
    if target is None or not inputs:
        return None
    from quantrs.errors import ConfigError
    from quantrs.gptq import Compensation, HessianSum, factor

    if target.source not in factors:
        total = HessianSum(target.activation, target.rows, target.conv)
        try:
            for index, cached in enumerate(inputs):
                total.add(cached[target.activation], index)
            factors[target.source] = factor(total.mean())
        except ConfigError as exc:
            raise exc.about(file=model.path) from None
    f = factors[target.source]
    uses[target.source] -= 1
    if uses[target.source] == 0:
        del factors[target.source]
    return Compensation(f, target.transposed) if f.active else None


def _quantize(
    values: np.ndarray, plan: TensorPlan, config: QuantizeConfig, compensation: Compensation | None = None
) -> QuantizedTensor:
    assert plan.bits is not None
    scheme = scheme_for(plan.bits, symmetric=config.symmetric, native_int4=False)  # one code per byte
    return quantize_tensor(
        values, scheme, plan.axis, name=plan.name, block_size=plan.block_size,
        range=config.range_for(plan.bits, plan.block_size is not None),
        half_scale=values.dtype == np.float16, n_threads=config.n_threads, compensation=compensation,
    )  # fmt: skip


def dequantize(qt: QuantizedTensor, block_size: int | None) -> np.ndarray:
    """The values DequantizeLinear gives for `qt` (codes one per byte)."""
    from quantrs.dequantize import dequantize_exact

    codes = qt.data.view(np.int8 if qt.scheme.signed else np.uint8).reshape(qt.shape)
    scale, zero_point = qt.scale.astype(np.float32), qt.zero_point
    if block_size is not None and qt.axis is not None:  # the kernels give blocked parameters flat
        dims = list(qt.shape)
        dims[qt.axis] = -(-dims[qt.axis] // block_size)
        scale, zero_point = scale.reshape(dims), zero_point.reshape(dims)
    return dequantize_exact(codes, scale, zero_point, qt.axis if qt.axis is not None else 0, block_size)


def _stored_bytes(plan: TensorPlan, config: QuantizeConfig) -> int:
    """Codes, scales and zero points of the weight as `quantize` stores them (its DQSpec)."""
    from quantrs.pipeline import dq_spec

    return dq_spec(plan, config).stored_bytes


def _single_node(
    model: LoadedModel, node: onnx.NodeProto, weight: str, value: np.ndarray, feed: Mapping[str, np.ndarray]
) -> InferenceSession:
    """A session running `node` alone, `weight` bound to `value`, its other stored inputs to
    theirs, its activations fed."""
    from quantrs._ort import session

    stored = {t.name for t in model.proto.graph.initializer}
    tensors, inputs = [], []
    for name in dict.fromkeys(i for i in node.input if i):
        if name == weight:
            tensors.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        elif name in stored or name not in feed:
            tensors.append(numpy_helper.from_array(np.ascontiguousarray(model.weights.array(name)), name))
        else:
            inputs.append(
                helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(feed[name]).dtype), None)
            )
    graph = helper.make_graph([node], "layer", inputs, [helper.make_empty_tensor_value_info(node.output[0])], tensors)
    proto = helper.make_model(graph, opset_imports=model.proto.opset_import, ir_version=model.proto.ir_version)
    return session(proto.SerializeToString(), threads=1, lean=True)


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else node.op_type
