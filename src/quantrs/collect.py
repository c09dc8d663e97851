"""Activation statistics for calibration: the float model runs in onnxruntime on the samples, and
each chosen activation's values are folded into its HistogramCollector and dropped.

Memory is bounded by the model, not by its activations. onnxruntime holds every graph output of
a run until the run returns (whether it is fetched or not), so the activations are split into
groups, in graph order, whose estimated size fits a budget; each group gets its own session over
the part of the graph its tensors need (the prefix up to the group's last tensor). A model whose
activations all fit the budget runs once per sample, as plain inference would.

The sessions never receive the weights as bytes: each one is built from the graph alone, whose
initializers point at where the weights lie on disk (external data files, or the raw_data inside
the model file itself, by offset), and onnxruntime maps them without copying or pre-packing. So
a model over 2 GiB or with external data calibrates like any other, in the memory plain
inference would take.
"""

from __future__ import annotations

import itertools
import logging
import os
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs.config import GROUP_BYTES  # declared with calibrate's options
from quantrs.errors import ConfigError, UnsupportedModelError, first_line
from quantrs.graph import subgraphs
from quantrs.model import LoadedModel
from quantrs.ranges import HistogramCollector

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

__all__ = ["GROUP_BYTES", "ActivationRunner", "Sample", "Statistics", "collect_statistics"]

logger = logging.getLogger(__name__)

HELD_OUT = 8  # the last samples seen, replayed through the quantized model for the report...
HELD_OUT_BYTES = 64 << 20  # ...as many of them as fit here (at least one)

_SMALL = 4096  # tensors under this size go to onnxruntime with their bytes (shapes, axes)


@dataclass
class Statistics:
    """What the float model's runs left: a collector per activation that was computed, and why
    the others were not (`skipped`: name -> reason)."""

    collectors: dict[str, HistogramCollector]
    skipped: dict[str, str]
    samples: int
    held_out: list[dict[str, np.ndarray]]  # the last samples' feeds
    reference: list[dict[str, np.ndarray]]  # the float model's outputs on them
    groups: int
    inference_seconds: float  # inside onnxruntime's run()
    seconds: float  # the whole collection, sessions included
    ranks: dict[str, int] = field(default_factory=dict)  # each activation's rank on the samples (-1: it varied)


@dataclass
class _Group:
    names: list[str]
    session: Any = field(repr=False)


@dataclass
class Sample:
    """One sample's run: its feed, and the requested values it computed (graph inputs among
    them), produced group by group so that only one group's values are held at a time."""

    index: int
    feed: dict[str, np.ndarray]
    values: Iterator[tuple[str, np.ndarray]]


class ActivationRunner:
    """The float model in onnxruntime, computing chosen values of the main graph on samples, in
    groups whose estimated size fits `budget` (see the module's docstring)."""

    def __init__(
        self, model: LoadedModel, names: list[str], first: Mapping[str, np.ndarray], *, budget: int = GROUP_BYTES
    ) -> None:
        graph = model.proto.graph
        self.model = model
        self.inputs = {v.name for v in graph.input} - {t.name for t in graph.initializer}
        self.names = list(dict.fromkeys(names))
        computed = [n for n in self.names if n not in self.inputs]
        sizes = _estimated_bytes(model, computed, first)
        plans = budget_groups(computed, sizes, budget, _positions(graph))
        logger.info("%d values to compute in %d group(s) of at most %.0f MB", len(self.names), len(plans), budget / 2**20)
        folder = data_folder(model)  # one for every group: their locations are relative to it
        self.groups = [_Group(plan, _session(model, plan, folder)) for plan in plans]
        self.inference_seconds = 0.0

    def run(self, samples: Iterable[Mapping[str, np.ndarray]]) -> Iterator[Sample]:
        """Each sample with its values. Raises ConfigError naming the file for a sample
        onnxruntime cannot run."""
        for index, feed in enumerate(samples):
            feed = dict(feed)
            yield Sample(index, feed, self._values(index, feed))

    def _values(self, index: int, feed: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
        for name in self.names:
            if name in self.inputs:
                yield name, feed[name]
        for group in self.groups:
            began = time.perf_counter()
            try:
                values = group.session.run(group.names, feed)
            except Exception as exc:  # onnxruntime's own error types
                raise ConfigError(f"{self.model.path}: sample {index} does not run: {first_line(exc)}") from None
            self.inference_seconds += time.perf_counter() - began
            yield from zip(group.names, values)
            del values


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
    graph, graph inputs allowed) into collectors. The model's outputs on the last HELD_OUT
    samples are kept as the float reference of the fidelity check. Raises ConfigError for a
    sample onnxruntime cannot run, UnsupportedModelError for a model it cannot load, both
    naming the file."""
    started = time.perf_counter()
    outputs = [v.name for v in model.proto.graph.output]
    feeds = iter(samples)
    first = next(feeds, None)
    if first is None:
        raise ConfigError(f"{model.path}: no calibration samples")
    runner = ActivationRunner(model, names + outputs, first, budget=budget)
    collectors = {n: HistogramCollector(n, histogram) for n in names}
    skipped: dict[str, str] = {}
    held_out: deque[dict[str, np.ndarray]] = deque(maxlen=HELD_OUT)
    reference: deque[dict[str, np.ndarray]] = deque(maxlen=HELD_OUT)
    wanted, kept_outputs = set(names), set(outputs)
    ranks: dict[str, int] = {}
    count = 0
    float_inputs = [n for n, v in first.items() if np.asarray(v).dtype.kind == "f"]
    constant = {n: _single_value(first[n]) for n in float_inputs}  # the float inputs with one value in every sample so far
    for sample in runner.run(itertools.chain([first], feeds)):
        constant = {n: v for n, v in constant.items() if v is not None and _single_value(sample.feed[n]) == v}
        result: dict[str, np.ndarray] = {}
        for name, value in sample.values:
            if name in wanted:
                _add(collectors, skipped, name, value)
                rank = np.ndim(value)
                ranks[name] = rank if ranks.get(name, rank) == rank else -1
            if name in kept_outputs:
                result[name] = np.asarray(value)
        held_out.append(sample.feed)
        reference.append(result)
        while len(held_out) > 1 and _nbytes(held_out) + _nbytes(reference) > HELD_OUT_BYTES:
            held_out.popleft()
            reference.popleft()
        count += 1
        if progress is not None:
            progress(count)
    for name, c in collectors.items():
        if name not in skipped and c.samples == 0:
            skipped[name] = "no finite value on any sample"
        elif name not in skipped and c.lo == c.hi:
            skipped[name] = f"one value ({c.lo:g}) on every sample: no range to calibrate"
    if float_inputs and len(constant) == len(float_inputs):
        held = ", ".join(f"{n!r} is {v:g}" for n, v in constant.items())
        raise ConfigError(
            f"{model.path}: the calibration samples are degenerate: every value of every float input is the same in all "
            f"{count} sample(s) ({held}); calibrate on inputs like the ones the model will see"
        )
    kept = {n: c for n, c in collectors.items() if n not in skipped}
    return Statistics(
        kept,
        skipped,
        count,
        list(held_out),
        list(reference),
        len(runner.groups),
        runner.inference_seconds,
        time.perf_counter() - started,
        ranks={n: r for n, r in ranks.items() if n in kept},
    )


def _single_value(x: np.ndarray) -> float | None:
    """The one value every element of a float array holds, or None (several values, or none)."""
    x = np.asarray(x)
    if x.size == 0 or x.dtype.kind != "f":
        return None
    first = x.flat[0]
    return float(first) if np.all(x == first) else None


def _nbytes(values: Iterable[Mapping[str, np.ndarray]]) -> int:
    return sum(np.asarray(v).nbytes for d in values for v in d.values())


def _add(collectors: dict[str, HistogramCollector], skipped: dict[str, str], name: str, value: np.ndarray) -> None:
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


def budget_groups(names: list[str], sizes: Mapping[str, int], budget: int, positions: Mapping[str, int]) -> list[list[str]]:
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
        logger.debug("shape inference failed (%s); activation sizes estimated", first_line(exc))
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


def _session(model: LoadedModel, outputs: list[str], folder: Path) -> InferenceSession:
    """A session computing `outputs` from the graph's inputs: the prefix of the main graph they
    need, its weights read by onnxruntime from where they lie on disk."""
    from quantrs._ort import session

    proto = _prefix_model(model, outputs, folder)
    # Fully optimized: onnxruntime never fuses away a graph output, and the activations are
    # the graph's outputs here. Lean: the weights stay mapped from the file, never packed copies.
    try:
        return session(
            proto.SerializeToString(), lean=True, config={"session.model_external_initializers_file_folder_path": str(folder)}
        )
    except Exception as exc:  # onnxruntime's own error types
        raise UnsupportedModelError(f"onnxruntime cannot load the model: {first_line(exc)}", file=model.path) from None


def _prefix_model(model: LoadedModel, outputs: list[str], folder: Path) -> onnx.ModelProto:
    """The model cut down to the nodes that `outputs` depend on, with `outputs` as its outputs.

    Its initializers are references to where their bytes lie on disk (external data, or the
    raw_data inside the model file itself, by offset), which onnxruntime maps: the graph given
    to it stays small whatever the model's size, and no weight is copied. Small tensors (shapes,
    axes: read by onnxruntime's shape inference before any data is loaded) go in with their
    bytes."""
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
    stored = {t.name for t in graph.initializer}
    g.input.extend(v for v in graph.input if v.name not in stored or v.name in needed)  # (an initializer may double as an input)
    g.node.extend(reversed(kept))
    g.output.extend(helper.make_empty_tensor_value_info(n) for n in outputs)
    wanted = [t for t in graph.initializer if t.name in needed]
    ranges = {t.name: model.weights.file_range(t.name) for t in wanted}
    for t in wanted:
        header = g.initializer.add()
        header.CopyFrom(t)
        where = ranges[t.name]
        if where is None:
            continue  # the values are in the header's typed fields
        path, offset, length = where
        del header.external_data[:]
        if length < _SMALL:
            header.data_location = TensorProto.DEFAULT
            header.raw_data = np.asarray(model.weights.payload(t.name)).tobytes()
            continue
        header.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", path.resolve().relative_to(folder).as_posix()),
            ("offset", str(offset)),
            ("length", str(length)),
        ):
            entry = header.external_data.add()
            entry.key, entry.value = key, value
    model.weights.embed_nested_external(g)  # bodies' external data, read in
    return proto


def data_folder(model: LoadedModel) -> Path:
    """The folder the sessions' data locations are relative to: the deepest one holding the
    model's folder and every file its weights are read from (a model file may be a symbolic
    link into another folder, as in a hub cache), so that no location climbs out of it."""
    ranges = (model.weights.file_range(t.name) for t in model.proto.graph.initializer)
    folders = [str(model.path.parent.resolve())] + [str(r[0].resolve().parent) for r in ranges if r is not None]
    return Path(os.path.commonpath(folders))


def _captured(node: onnx.NodeProto) -> Iterator[str]:
    """Every value name read inside the node's bodies (outer-scope values among them)."""
    for _, body in subgraphs(node):
        for inner in body.node:
            yield from (n for n in inner.input if n)
            yield from _captured(inner)
