"""Activation statistics for calibration: the float model runs in onnxruntime on the samples, and
each chosen activation's values are folded into its HistogramCollector and dropped.

Memory is bounded by the model, not by its activations. onnxruntime holds every graph output of
a run until the run returns (whether it is fetched or not), so the activations are split into
groups, in graph order, whose estimated size fits a budget; each group gets its own session over
the part of the graph its tensors need (the prefix up to the group's last tensor). A model whose
activations all fit the budget runs once per sample, as plain inference would.

The sessions never receive the weights as bytes: each one is built from the graph alone, and the
weights are handed to onnxruntime as arrays over the memory-mapped model (shared by every group,
never copied), so a model over 2 GiB or with external data calibrates like any other.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs.errors import ConfigError, UnsupportedModelError
from quantrs.graph import subgraphs
from quantrs.model import LoadedModel
from quantrs.ranges import HistogramCollector

__all__ = ["GROUP_BYTES", "Statistics", "collect_statistics"]

logger = logging.getLogger(__name__)

GROUP_BYTES = 128 << 20  # activations held at once per inference run
HELD_OUT = 8  # the last samples seen, replayed through both models for the report

# numpy types onnxruntime can take as initializer arrays; others (bfloat16, 4-bit, float8) go
# into the session's graph as bytes, as do small tensors (shapes and axes: onnxruntime's shape
# inference reads their values before any array is attached).
_SMALL = 4096
_SHAREABLE = {
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.UINT8,
    TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64,
    TensorProto.UINT64, TensorProto.BOOL,
}  # fmt: skip


@dataclass
class Statistics:
    """What the float model's runs left: a collector per activation that was computed, and why
    the others were not (`skipped`: name -> reason)."""

    collectors: dict[str, HistogramCollector]
    skipped: dict[str, str]
    samples: int
    held_out: list[dict[str, np.ndarray]]
    groups: int
    inference_seconds: float  # inside onnxruntime's run()
    seconds: float  # the whole collection, sessions included


@dataclass
class _Group:
    names: list[str]
    session: Any = field(repr=False)


def collect_statistics(
    model: LoadedModel,
    names: list[str],
    samples: Iterable[Mapping[str, np.ndarray]],
    *,
    histogram: bool,
    budget: int = GROUP_BYTES,
    progress: Callable[[int], None] | None = None,
) -> Statistics:
    """Run `model` on every sample and fold the values of `names` (activations of the main
    graph, graph inputs allowed) into collectors. Raises ConfigError for a sample onnxruntime
    cannot run, UnsupportedModelError for a model it cannot load, both naming the file."""
    started = time.perf_counter()
    graph = model.proto.graph
    inputs = {v.name for v in graph.input} - {t.name for t in graph.initializer}
    computed = [n for n in names if n not in inputs]
    feeds = iter(samples)
    first = next(feeds, None)
    if first is None:
        raise ConfigError(f"{model.path}: no calibration samples")
    sizes = _estimated_bytes(model, computed, first)
    plans = _groups(computed, sizes, budget, _positions(graph))
    logger.info("calibration: %d activations in %d group(s) of at most %.0f MB", len(names), len(plans), budget / 2**20)
    arrays = _ort_arrays(model)
    groups = [_Group(plan, _session(model, plan, arrays)) for plan in plans]
    collectors = {n: HistogramCollector(n, histogram) for n in names}
    skipped: dict[str, str] = {}
    held_out: deque[dict[str, np.ndarray]] = deque(maxlen=HELD_OUT)
    count, inference = 0, 0.0
    for feed in itertools.chain([first], feeds):
        feed = dict(feed)
        for name in names:
            if name in inputs:
                _add(collectors, skipped, name, feed[name])
        for group in groups:
            began = time.perf_counter()
            try:
                values = group.session.run(group.names, feed)
            except Exception as exc:  # onnxruntime's own error types
                raise ConfigError(f"{model.path}: sample {count} does not run: {_first_line(exc)}") from None
            inference += time.perf_counter() - began
            for name, value in zip(group.names, values):
                _add(collectors, skipped, name, value)
            del values
        held_out.append(feed)
        count += 1
        if progress is not None:
            progress(count)
    for name, c in collectors.items():
        if name not in skipped and c.samples == 0:
            skipped[name] = "no finite value on any sample"
    kept = {n: c for n, c in collectors.items() if n not in skipped}
    return Statistics(kept, skipped, count, list(held_out), len(groups), inference, time.perf_counter() - started)


def _add(collectors: dict[str, HistogramCollector], skipped: dict[str, str], name: str, value: Any) -> None:
    if name in skipped:
        return
    value = np.asarray(value)
    if value.dtype != np.float32:
        skipped[name] = f"{value.dtype}, not float32"
        return
    collector = collectors[name]
    collector.add(value)
    excluded = getattr(collector, "nonfinite", 0) + getattr(collector, "extreme", 0)
    if excluded:
        skipped[name] = f"holds {excluded} infinite or mask-sized values (a mask, or masked scores)"


def _positions(graph: onnx.GraphProto) -> dict[str, int]:
    """The index of the node producing each value of the main graph."""
    return {out: i for i, node in enumerate(graph.node) for out in node.output if out}


def _groups(names: list[str], sizes: Mapping[str, int], budget: int, positions: Mapping[str, int]) -> list[list[str]]:
    """Consecutive runs of activations, in graph order, whose sizes add up to at most `budget`
    (a tensor larger than the budget is a group of its own)."""
    ordered = sorted(names, key=lambda n: positions.get(n, -1))
    groups: list[list[str]] = []
    total = 0
    for name in ordered:
        if not groups or total + sizes[name] > budget:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += sizes[name]
    return groups


def _estimated_bytes(model: LoadedModel, names: list[str], sample: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Each activation's size on `sample`, from onnx shape inference with the sample's shapes;
    a tensor whose shape stays unknown counts as the largest one known (or the largest input).
    Small integer initializers (shapes, axes) go in with their values, so that Reshape and
    friends infer; the weights go in as typed inputs, without their bytes."""
    proto = model.proto
    skeleton = onnx.ModelProto()
    skeleton.ir_version = proto.ir_version
    skeleton.opset_import.extend(proto.opset_import)
    skeleton.functions.extend(proto.functions)
    g = skeleton.graph
    g.node.extend(proto.graph.node)
    stored = {t.name for t in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name not in stored and value.name in sample:
            elem = value.type.tensor_type.elem_type
            g.input.append(helper.make_tensor_value_info(value.name, elem, list(np.shape(sample[value.name]))))
    for t in proto.graph.initializer:
        if t.data_type in (TensorProto.INT64, TensorProto.INT32) and math.prod(t.dims) <= 64:
            g.initializer.append(onnx.numpy_helper.from_array(np.array(model.weights.array(t.name)), t.name))
        else:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    known: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True).graph
    except Exception as exc:  # shape inference is a best effort here
        logger.debug("shape inference failed (%s); activation sizes estimated", _first_line(exc))
        inferred = g
    for value in inferred.value_info:
        t = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not t.HasField("shape") or not t.elem_type:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if all(d >= 0 for d in dims):
            known[value.name] = math.prod(dims) * np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
    fallback = max([known[n] for n in names if n in known] + [np.asarray(v).nbytes for v in sample.values()] + [1])
    return {n: known.get(n, fallback) for n in names}


def _ort_arrays(model: LoadedModel) -> dict[str, Any]:
    """onnxruntime values over the main graph's stored weights (views of the mapped files)."""
    import onnxruntime as ort

    out = {}
    for t in model.proto.graph.initializer:
        if _shared(model, t):
            out[t.name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(model.weights.array(t.name)))
    return out


def _shared(model: LoadedModel, t: TensorProto) -> bool:
    return t.data_type in _SHAREABLE and model.weights.info(t.name).nbytes >= _SMALL


def _session(model: LoadedModel, outputs: list[str], arrays: Mapping[str, Any]):
    """A session computing `outputs` from the graph's inputs: the prefix of the main graph they
    need, the weights given as shared arrays."""
    import onnxruntime as ort

    from quantrs._ort import options as ort_options

    proto = _prefix_model(model, outputs)
    shared = [t.name for t in proto.graph.initializer if t.name in arrays]
    options = ort_options(optimize=False)  # every tensor kept as it is in the float graph
    # No arena, no memory pattern: every group's session would otherwise keep the peak of its
    # last run reserved, and the groups' reservations would add up.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.add_external_initializers(shared, [arrays[n] for n in shared])
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise UnsupportedModelError(f"onnxruntime cannot load the model: {_first_line(exc)}", file=model.path) from None


def _prefix_model(model: LoadedModel, outputs: list[str]) -> onnx.ModelProto:
    """The model cut down to the nodes that `outputs` depend on, with `outputs` as its outputs.
    Initializers are headers: shared ones marked external (their arrays come with the session
    options), the others (types numpy cannot hold) with their bytes."""
    source = model.proto
    graph = source.graph
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(n for n in node.input if n)
            needed.update(_captured(node))
    proto = onnx.ModelProto()
    proto.ir_version = source.ir_version
    proto.opset_import.extend(source.opset_import)
    proto.functions.extend(source.functions)
    g = proto.graph
    g.name = graph.name
    g.input.extend(graph.input)
    g.node.extend(reversed(kept))
    g.output.extend(helper.make_empty_tensor_value_info(n) for n in outputs)
    shared = {t.name for t in graph.initializer if _shared(model, t)}
    for t in graph.initializer:
        if t.name not in needed:
            continue
        header = g.initializer.add()
        header.CopyFrom(t)
        del header.external_data[:]
        if t.name in shared:
            header.data_location = TensorProto.EXTERNAL
            entry = header.external_data.add()
            entry.key, entry.value = "location", "quantrs-shared-array"  # never read: the array replaces it
        else:
            raw = model.weights.payload(t.name)
            header.data_location = TensorProto.DEFAULT
            if raw is not None:
                header.raw_data = raw.tobytes()
    model.weights.embed_nested_external(g)  # bodies' external data, read in (no path to resolve it)
    return proto


def _captured(node: onnx.NodeProto) -> Iterator[str]:
    """Every value name read inside the node's bodies (outer-scope values among them)."""
    for _, body in subgraphs(node):
        for inner in body.node:
            yield from (n for n in inner.input if n)
            yield from _captured(inner)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
