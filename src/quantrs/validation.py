"""`quantrs validate`: is a quantized model still the model it came from, and where is it not?

1. Structure: same inputs and outputs, every node input defined, onnx.checker, well-formed
   DequantizeLinear nodes with finite positive scales.
2. Agreement: both models run in onnxruntime on the same inputs (the user's samples or inputs
   generated from the signature); per output: cosine similarity, max abs error, relative L2
   error, and top-1 agreement for classifier-like outputs. User thresholds decide pass/fail.
3. Detailed (per layer): each quantized weight's error (MSE, SQNR), and the error it causes at
   its consumer's output when that node alone runs on the original model's activations, so
   layers are ranked by what they inject, not by what accumulates downstream. When a threshold
   is missed, the worst layers are put back in float one by one until the model passes: that
   is the suggested --exclude list.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantrs.config import Thresholds  # declared with every command's options
from quantrs.errors import first_line
from quantrs.model import LoadedModel, WeightStore, load_model
from quantrs.report import ActivationError, Check, LayerError, OutputAgreement, ValidationReport
from quantrs.compare import Feeds, Steps, agreements, run_model
from quantrs.dequantize import dequantized_weights, float_replacements
from quantrs.samples import generate_samples, input_specs, load_samples

__all__ = ["validate", "Thresholds"]

logger = logging.getLogger(__name__)

MAX_SUGGESTION_STEPS = 24


def validate(
    original: str | os.PathLike[str],
    quantized: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    samples: int = 8,
    detailed: bool = False,
    thresholds: Thresholds | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Compare a quantized model with its original. Raises ModelLoadError/ConfigError for bad
    files or samples; a model that fails a check or a threshold gives a report with passed False."""
    thresholds = thresholds or Thresholds()
    orig, quant = load_model(original), load_model(quantized)
    checks = check_structure(orig, quant)
    specs = input_specs(orig.proto)
    feeds = load_samples(data, specs) if data is not None else generate_samples(orig.proto, samples)
    source = str(data) if data is not None else "generated from the model's inputs"

    outputs: list[OutputAgreement] = []
    try:
        step = Steps(progress, 2 * len(feeds))
        reference = run_model(str(orig.path), feeds, progress=step)
        got = run_model(str(quant.path), feeds, progress=step)
        outputs = agreements(reference, got)
        checks.append(Check("runs in onnxruntime", True, f"{len(feeds)} sample(s)"))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/RuntimeException
        checks.append(Check("runs in onnxruntime", False, first_line(exc)))
        reference = None
    results = thresholds.evaluate(outputs)

    layers = suggestion = suggested_outputs = activations = None
    note = ""
    if detailed and reference is not None:
        layers = rank_layers(orig, quant, feeds)
        activations = rank_activations(orig, quant, feeds) or None
        if any(not r.passed for r in results):
            suggestion, suggested_outputs, note = suggest_exclude(orig, quant, layers, feeds, reference, thresholds)
            worst_layer = max((layer.local_relative_l2 or 0.0 for layer in layers), default=0.0)
            if activations and activations[0].relative_l2 > worst_layer:
                note += (
                    f"; the worst activation ({activations[0].name}, relative error {activations[0].relative_l2:.3g}) "
                    "loses more than any weight: calibrate with --exclude for its readers, or another --method"
                )
    return ValidationReport(
        original=str(orig.path),
        quantized=str(quant.path),
        original_bytes=orig.total_bytes,
        quantized_bytes=quant.total_bytes,
        samples=len(feeds),
        samples_source=source,
        checks=checks,
        outputs=outputs,
        thresholds=results,
        layers=layers,
        activations=activations,
        suggested_exclude=suggestion,
        suggested_outputs=suggested_outputs,
        suggestion_note=note,
    )


# --- structure -----------------------------------------------------------------------------


# A graph input's or output's (name, element type, dims: a number or a symbol each; None unknown).
_ValueSignature = tuple[str, int, tuple[int | str, ...] | None]


def _signature(values: Iterable[onnx.ValueInfoProto]) -> list[_ValueSignature]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = (
            tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim) if t.HasField("shape") else None
        )
        out.append((v.name, t.elem_type, dims))
    return out


def check_structure(orig: LoadedModel, quant: LoadedModel) -> list[Check]:
    g0, g1 = orig.proto.graph, quant.proto.graph
    inits0 = {t.name for t in g0.initializer}
    inits1 = {t.name for t in g1.initializer}
    in0 = [v for v in g0.input if v.name not in inits0]
    in1 = [v for v in g1.input if v.name not in inits1]
    checks = [
        _compare("inputs unchanged", _signature(in0), _signature(in1)),
        _compare("outputs unchanged", _signature(g0.output), _signature(g1.output)),
    ]
    defined = {v.name for v in g1.input} | inits1 | {""}
    undefined = []
    for node in g1.node:
        undefined += [f"{name!r} (input of {node.op_type} {node.name!r})" for name in node.input if name not in defined]
        defined.update(node.output)
    checks.append(Check("every node input is defined", not undefined, "; ".join(undefined[:3]) or f"{len(g1.node)} nodes"))
    from quantrs.qdq import checker_problem

    problem = checker_problem(quant.proto)  # weights are not in memory: stood in for
    if problem is not None and problem == checker_problem(orig.proto):  # the float model's own
        checks.append(Check("onnx.checker", True, f"fails as the float model does: {problem}"))
    else:
        checks.append(Check("onnx.checker", problem is None, problem or ""))
    checks.append(_check_dequantize_nodes(quant))
    return checks


def _compare(name: str, before: list[_ValueSignature], after: list[_ValueSignature]) -> Check:
    if before == after:
        return Check(name, True, ", ".join(v[0] for v in after))
    return Check(
        name, False, f"original {[v[0] for v in before]}, quantized {[v[0] for v in after]} (or their types/shapes differ)"
    )


def _check_dequantize_nodes(quant: LoadedModel) -> Check:
    weights = quant.weights
    problems, count = [], 0
    for node in quant.proto.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        count += 1
        problems += _dequantize_node_problems(weights, node)
    fused = 0
    for node in quant.proto.graph.node:
        if (
            node.domain == "com.microsoft"
            and node.op_type in ("MatMulNBits", "GatherBlockQuantized")
            and node.input[2] in weights
        ):
            fused += 1
            problems += _bad_scales(weights, node, node.input[2])
    if problems:
        detail = "; ".join(problems[:3])
    else:
        also = f" and {fused} MatMulNBits/GatherBlockQuantized node(s)" if fused else ""
        detail = f"{count} DequantizeLinear node(s){also}, scales finite and positive"
    return Check("DequantizeLinear nodes well-formed", not problems, detail)


def _dequantize_node_problems(weights: WeightStore, node: onnx.NodeProto) -> list[str]:
    """What is wrong with a DequantizeLinear of stored tensors: its codes' type, its scales'
    type, count for the axis or rank without block_size, its zero point's type, its scales'
    values. Nothing for an activation's (its tensors are computed, not stored)."""
    x, scale_name = node.input[0], node.input[1]
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if x not in weights or scale_name not in weights:
        return []  # activation Q/DQ pairs: their tensors are computed, not stored
    problems = []
    info, scale_info = weights.info(x), weights.info(scale_name)
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    if info.data_type not in _INTEGER_CODES:
        problems.append(f"{node.name}: codes are {info.dtype_name}")
    if scale_info.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
        problems.append(f"{node.name}: scale is {scale_info.dtype_name}")
    elif len(scale_info.shape) == 1 and scale_info.shape[0] != 1:
        if not -len(info.shape) <= axis < len(info.shape) or info.shape[axis] != scale_info.shape[0]:
            problems.append(f"{node.name}: {scale_info.shape[0]} scales for axis {axis} of shape {list(info.shape)}")
    elif len(scale_info.shape) > 1 and "block_size" not in [a.name for a in node.attribute]:
        problems.append(f"{node.name}: scale of rank {len(scale_info.shape)} without block_size")
    if zp_name and zp_name in weights and weights.info(zp_name).data_type != info.data_type:
        problems.append(f"{node.name}: zero point is {weights.info(zp_name).dtype_name}, codes are {info.dtype_name}")
    return problems + _bad_scales(weights, node, scale_name)


def _bad_scales(weights: WeightStore, node: onnx.NodeProto, name: str) -> list[str]:
    scale = np.asarray(weights.array(name), dtype=np.float64)
    return (
        []
        if np.isfinite(scale).all() and (scale > 0).all()
        else [f"{node.name}: scales hold NaN, infinity, zero or negative values"]
    )


_INTEGER_CODES = {
    TensorProto.INT8,
    TensorProto.UINT8,
    TensorProto.INT4,
    TensorProto.UINT4,
    TensorProto.INT16,
    TensorProto.UINT16,
    TensorProto.INT32,
}


# --- per layer -----------------------------------------------------------------------------


def _sqnr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    p_signal = float(np.sum(signal.astype(np.float64) ** 2))
    p_noise = float(np.sum(noise.astype(np.float64) ** 2))
    if p_noise == 0:
        return math.inf
    return 10 * math.log10(p_signal / p_noise) if p_signal else -math.inf


def rank_layers(orig: LoadedModel, quant: LoadedModel, feeds: Feeds) -> list[LayerError]:
    """Every quantized weight with its error, worst first (by local output error, then weight SQNR)."""
    deq = dequantized_weights(orig, quant)
    graph = orig.proto.graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            if name in deq and name not in consumers:
                consumers[name] = node
    # One run of the original model yields every activation the consumers read.
    initializers = {t.name for t in graph.initializer}
    graph_inputs = {v.name for v in graph.input}
    wanted = sorted({i for n in consumers.values() for i in n.input if i and i not in initializers and i not in graph_inputs})
    captured = _capture(orig, feeds, wanted) if wanted else {}
    layers = []
    for name, (_, dequantized, storage) in deq.items():
        stored = orig.weights.array(name)  # in its own type: the consumer's (float16 ones too)
        original = np.asarray(stored, dtype=np.float32)
        noise = original - dequantized
        node = consumers.get(name)
        local_rel = local_db = None
        note = ""
        if node is None:
            note = "no consumer in the original graph"
        else:
            try:
                local_rel, local_db = _local_error(orig, node, name, dequantized.astype(stored.dtype), feeds, captured)
            except Exception as exc:  # an op onnxruntime cannot run alone; keep the weight figures
                note = f"local error unavailable: {first_line(exc)}"
        layers.append(
            LayerError(
                name=name,
                storage=storage,
                consumer=f"{node.op_type} {node.name!r}" if node is not None else "",
                weight_mse=float(np.mean(noise.astype(np.float64) ** 2)),
                weight_sqnr_db=_sqnr_db(original, noise),
                local_relative_l2=local_rel,
                local_sqnr_db=local_db,
                note=note,
            )
        )
    layers.sort(
        key=lambda layer: (-(layer.local_relative_l2 if layer.local_relative_l2 is not None else -1.0), layer.weight_sqnr_db)
    )
    return layers


def rank_activations(orig: LoadedModel, quant: LoadedModel, feeds: Feeds) -> list[ActivationError]:
    """Every activation a static model quantizes (a QuantizeLinear reading a value of the
    original), with the error its grid puts on the original's values on `feeds`, worst first."""
    from quantrs.collect import ActivationRunner

    graph = quant.proto.graph
    inits = {t.name for t in graph.initializer}
    known = {o for n in orig.proto.graph.node for o in n.output} | {v.name for v in orig.proto.graph.input}
    grids: dict[str, tuple[float, int, int, int, str]] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in known or len(node.input) < 3 or node.input[0] in grids:
            continue
        if not (node.input[1] in inits and node.input[2] in inits):
            continue
        scale = np.asarray(quant.weights.array(node.input[1]), np.float64)
        zero_point = np.asarray(quant.weights.array(node.input[2]))
        if scale.size != 1:
            continue
        signed = zero_point.dtype == np.int8
        qmin, qmax = (-128, 127) if signed else (0, 255)
        grids[node.input[0]] = (
            float(scale.reshape(-1)[0]),
            int(zero_point.reshape(-1)[0]),
            qmin,
            qmax,
            "INT8" if signed else "UINT8",
        )
    if not grids or not feeds:
        return []
    sums = {name: [0.0, 0.0, 0.0, 0.0] for name in grids}  # signal, noise, values, clipped
    runner = ActivationRunner(orig, list(grids), feeds[0])
    for sample in runner.run(feeds):
        for name, value in sample.values:
            x = np.asarray(value, np.float64).ravel()
            x = x[np.isfinite(x) & (np.abs(x) < 1e30)]
            s, z, qmin, qmax, _ = grids[name]
            q = np.rint(x / s) + z
            clipped = int(np.count_nonzero((q < qmin) | (q > qmax)))
            noise = (np.clip(q, qmin, qmax) - z) * s - x
            acc = sums[name]
            acc[0] += float(x @ x)
            acc[1] += float(noise @ noise)
            acc[2] += x.size
            acc[3] += clipped
    out = []
    for name, (signal, noise, count, clipped_count) in sums.items():
        s, z, _, _, storage = grids[name]
        relative = math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf)
        sqnr = 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else math.inf
        out.append(ActivationError(name, storage, s, z, relative, sqnr, clipped_count / count if count else 0.0))
    out.sort(key=lambda a: -a.relative_l2)
    return out


def _capture(orig: LoadedModel, feeds: Feeds, names: list[str]) -> dict[str, list[np.ndarray]]:
    """The values of `names` on each feed, from the original model (calibration's runner: its
    weights mapped from disk, the values in bounded groups)."""
    from quantrs.collect import ActivationRunner

    captured: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for sample in ActivationRunner(orig, names, feeds[0]).run(feeds):
        for name, value in sample.values:
            captured[name].append(np.asarray(value))
    return captured


def _local_error(
    orig: LoadedModel,
    node: onnx.NodeProto,
    weight: str,
    dequantized: np.ndarray,
    feeds: Feeds,
    captured: dict[str, list[np.ndarray]],
) -> tuple[float, float]:
    """Run `node` alone on the original activations with the float and the dequantized weight."""
    inits = {t.name for t in orig.proto.graph.initializer}
    outputs = {}
    for variant, value in (("float", np.asarray(orig.weights.array(weight))), ("quantized", dequantized)):
        tensors, inputs, feed_names = [], [], []
        for name in node.input:
            if not name:
                continue
            if name == weight:
                tensors.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            elif name in inits:
                tensors.append(numpy_helper.from_array(np.ascontiguousarray(orig.weights.array(name)), name))
            elif name not in feed_names:
                sample = captured[name][0] if name in captured else feeds[0][name]
                inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(sample.dtype), None))
                feed_names.append(name)
        out = helper.make_empty_tensor_value_info(node.output[0])
        single = helper.make_graph([node], "layer", inputs, [out], tensors)
        model = helper.make_model(single, opset_imports=orig.proto.opset_import, ir_version=orig.proto.ir_version)
        per_sample = [{n: (captured[n][i] if n in captured else feeds[i][n]) for n in feed_names} for i in range(len(feeds))]
        outputs[variant] = np.concatenate([r.ravel() for r in run_model(model.SerializeToString(), per_sample)[node.output[0]]])
    ref, got = outputs["float"].astype(np.float64), outputs["quantized"].astype(np.float64)
    norm = float(np.linalg.norm(ref))
    diff = float(np.linalg.norm(ref - got))
    return (diff / norm if norm else (0.0 if diff == 0 else math.inf)), _sqnr_db(ref, ref - got)


def suggest_exclude(
    orig: LoadedModel,
    quant: LoadedModel,
    layers: list[LayerError],
    feeds: Feeds,
    reference: dict[str, list[np.ndarray]],
    thresholds: Thresholds,
) -> tuple[list[str] | None, list[OutputAgreement] | None, str]:
    """Put the worst layers back in float, one more at a time, until every threshold passes."""
    if quant.file_size > 1 << 30:
        return None, None, "not tried: the model is too large to rebuild in memory for each step"
    full = onnx.load(str(quant.path))
    replacements, partial = float_replacements(orig, quant)
    excluded: list[str] = []
    for layer in [candidate for candidate in layers if candidate.name not in partial][:MAX_SUGGESTION_STEPS]:
        excluded.append(layer.name)
        hybrid = _with_float_weights(full, orig, excluded, replacements)
        got = run_model(hybrid.SerializeToString(), feeds)
        outputs = agreements(reference, got)
        if all(r.passed for r in thresholds.evaluate(outputs)):
            return (
                list(excluded),
                outputs,
                f"leaving {len(excluded)} layer(s) in float meets every threshold{_left_out(layers, partial)}",
            )
    return None, None, f"even {len(excluded)} layer(s) left in float do not meet the thresholds{_left_out(layers, partial)}"


def _left_out(layers: list[LayerError], partial: set[str]) -> str:
    names = [layer.name for layer in layers if layer.name in partial]
    return f" ({len(names)} not tried: read where they cannot be put back in float, e.g. {names[0]})" if names else ""


def _with_float_weights(
    quantized: onnx.ModelProto, orig: LoadedModel, names: list[str], replacements: dict[str, list[onnx.NodeProto]]
) -> onnx.ModelProto:
    """`quantized` with the weights `names` back in float: their DequantizeLinear dropped (the
    float initializer takes its output's name), or the node standing for their original
    MatMul or Gather (a MatMulNBits, a GatherBlockQuantized, a lookup's last node) replaced by
    that original node (`replacements`); what fed it and nothing else is left unused."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    graph = model.graph
    chosen = set(names)
    dropped: set[str] = set()
    nodes = []
    instead = {r.output[0]: r for name, nodes_ in replacements.items() if name in chosen for r in nodes_}
    for node in graph.node:
        if node.op_type in ("DequantizeLinear", "Slice") and node.output[0] in chosen:  # (a Slice: of padded codes)
            dropped.update(i for i in node.input if i)
        elif node.output and node.output[0] in instead:
            dropped.update(i for i in node.input if i)
            nodes.append(instead[node.output[0]])
        else:
            nodes.append(node)
    still_used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in dropped or t.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(orig.weights.array(n)), n) for n in names)
    return model
