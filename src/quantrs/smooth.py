"""SmoothQuant for dynamic INT8 (`--smooth`): activation scale migrated into the weights.

Dynamic INT8 quantizes each MatMul input at run time with one scale for the whole tensor
(DynamicQuantizeLinear). Where a few input channels are far larger than the rest (LLMs: the
outputs of RMSNorms with a few large gains), that one scale is set by them and the other
channels keep few levels. SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient
Post-Training Quantization for Large Language Models", 2022) divides each input channel j by

    s_j = max|X_j| ^ a / max|W_j,:| ^ (1 - a)

and multiplies the weight's row j by it: X W = (X / s) (diag(s) W), the product unchanged in
float, the activation's range flatter, the weight's rows (quantized per output column) a
little less so. max|X_j| is taken over the samples of --data; a group of MatMuls reading one
activation (Q/K/V, gate/up) shares one s, its weights' row maxima taken together.

Where X / s goes:
- folded into the per-channel scale that makes X, when every reader of X is one of the group's
  MatMuls: a norm's gain (LayerNormalization, RMSNormalization, SimplifiedLayerNormalization:
  its scale, and LayerNormalization's bias), or the constant of Mul(a, gamma) (and of
  Add(Mul(a, gamma), beta)), as decomposed RMSNorm and LayerNorm are written. Free at run time.
  The folded constants are new initializers (`<gamma>_smoothed`): another node reading the old
  one keeps reading it;
- else a Mul by 1 / s, one per group, before its MatMuls (other readers of X read it as it was).

The strength a (`--smooth auto`) is chosen per group on the samples: each of GRID, and no
smoothing at all, is tried on up to ROWS rows of the activation (spread over the samples) and up
to COLUMNS output columns of each weight, and the one with the least squared error of the
group's outputs, INT8 x INT8 as the dynamic form computes them (the activation per tensor, UINT8
asymmetric, over each sample's range; the weights per column, symmetric), against float, is
kept. A group that no strength improves is left as it is (no Mul added). `--smooth 0.5`: that
strength for every group, no search. The report's weight errors are those of diag(s) W, the
weight as quantized.

Measured (bench/RESULTS.md, 2026-12-06): cosine to float 0.9906 -> 0.9963 on all-MiniLM-L6-v2
(24 Muls, no measurable latency), 0.9819 -> 0.9951 on the 2-layer bench decoder, 0.890 -> 0.994
with outlier norm gains (bench/llama.py --norm-outliers 20); every group chose 0.5-0.9.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from quantrs.collect import ActivationRunner, budget_groups
from quantrs.errors import ConfigError
from quantrs.graph import FreshName, GraphIndex, name_maker
from quantrs.model import LoadedModel
from quantrs.qdq import DQSpec

__all__ = ["GRID", "ROWS", "Fold", "Group", "Choice", "Smoothing", "find_groups", "choose", "plan_smoothing"]

logger = logging.getLogger(__name__)

GRID = tuple(round(0.1 * i, 1) for i in range(11))  # the strengths `auto` tries, besides none
ROWS = 256  # rows of each activation kept for choosing its strength, spread over the samples
COLUMNS = 1024  # output columns of each weight the error is measured on (evenly spaced; each column's codes are its own)
COLLECT_BYTES = 256 << 20  # kept rows held at once while collecting (one float run of the samples per group)
FLOOR = 1e-5  # max|X_j| and max|W_j,:| below this count as this (a channel never active)
LIMIT = 1e4  # s within [1 / LIMIT, LIMIT]

# Norms whose input 1 is a per-channel gain (and LayerNormalization's input 2 a bias), output 0 the value.
_NORMS = {
    ("LayerNormalization", ""): (1, 2),
    ("RMSNormalization", ""): (1, None),
    ("SimplifiedLayerNormalization", ""): (1, None),
    ("SimplifiedLayerNormalization", "com.microsoft"): (1, None),
}


@dataclass(frozen=True)
class Fold:
    """Where 1 / s is folded: input `scale` (and `bias`) of node `node` (its first output)
    are per-channel constants, initializers of the main graph."""

    node: str  # the node's first output
    scale: tuple[str, int]  # (initializer, the node's input index)
    bias: tuple[str, str, int] | None = None  # (initializer, the reading node's first output, input index)

    def describe(self, op: str) -> str:
        return f"folded into {op} {self.scale[0]!r}" + (f" and {self.bias[0]!r}" if self.bias else "")


@dataclass(frozen=True)
class Group:
    """The dynamic MatMuls reading one activation: they share one s."""

    activation: str
    weights: tuple[str, ...]
    channels: int  # K
    fold: Fold | None
    fold_op: str = ""  # the folded node's op type, for the report
    why_not_folded: str = ""
    skip: str = ""  # why it is not smoothed at all ("": it may be)


@dataclass
class Choice:
    """One group's outcome: its strength (None: left unsmoothed) and s; the relative squared
    errors of its outputs smoothed and not (NaN when not searched)."""

    group: Group
    strength: float | None
    scales: np.ndarray | None
    error: float = math.nan
    plain_error: float = math.nan

    @property
    def note(self) -> str:
        if self.group.skip:
            return f"not smoothed: {self.group.skip}"
        if self.strength is None:
            return "not smoothed: no strength lowered its output error on the samples"
        where = self.group.fold.describe(self.group.fold_op) if self.group.fold else f"a Mul by 1/s ({self.group.why_not_folded})"
        gain = ""
        if not math.isnan(self.error) and self.plain_error > 0:
            gain = f", output error {self.error / self.plain_error:.2f}x plain on the samples"
        return f"smoothed, strength {self.strength:g}, {where}{gain}"


@dataclass
class Smoothing:
    """The chosen migrations: `row_scales` (weight -> s, its rows multiplied by it before they
    are quantized) and the graph edit (`apply`)."""

    choices: list[Choice]
    samples: int
    row_scales: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.choices:
            if c.scales is not None:
                for w in c.group.weights:
                    self.row_scales[w] = c.scales

    @property
    def notes(self) -> dict[str, str]:
        """Each grouped weight's note for the report, and each folded gain's or bias's."""
        notes = {w: c.note for c in self.choices for w in c.group.weights}
        for c in self.choices:
            fold = c.group.fold
            if c.scales is not None and fold is not None:
                for name in (fold.scale[0], *(fold.bias[:1] if fold.bias else ())):
                    notes[name] = (
                        f"--smooth: its node reads a copy with 1/s folded in ({name}_smoothed), for {', '.join(c.group.weights)}"
                    )
        return notes

    def summary(self) -> str:
        done = [c for c in self.choices if c.scales is not None]
        folded = sum(c.group.fold is not None for c in done)
        strengths = sorted({c.strength for c in done if c.strength is not None})
        shown = ", ".join(f"{s:g}" for s in strengths) or "-"
        return (
            f"smoothing: {len(done)} of {len(self.choices)} MatMul inputs smoothed (strengths {shown}), "
            f"{folded} folded into norms, {len(done) - folded} by a Mul; {self.samples} samples"
        )

    def apply(self, graph: onnx.GraphProto, weights: Callable[[str], np.ndarray]) -> None:
        """Edit the main graph: each smoothed group's 1 / s folded (new initializers holding
        their values) or a Mul before its MatMuls. `weights(name)` reads a stored tensor."""
        index = GraphIndex(graph)
        fresh = name_maker(index.all_names())
        stored = {t.name: t for t in graph.initializer}
        nodes = {n.output[0]: n for n in graph.node if n.output}
        dropped: set[str] = set()
        muls: dict[str, onnx.NodeProto] = {}  # first MatMul of the group -> the Mul before it
        for c in self.choices:
            if c.scales is None:
                continue
            group, inverse = c.group, 1.0 / c.scales.astype(np.float64)
            if group.fold is not None:
                node = nodes[group.fold.node]
                _fold(graph, node, group.fold.scale, inverse, stored, weights, fresh)
                dropped.add(group.fold.scale[0])
                if group.fold.bias is not None:
                    bias, owner, at = group.fold.bias
                    _fold(graph, nodes[owner], (bias, at), inverse, stored, weights, fresh)
                    dropped.add(bias)
                continue
            dtype = onnx.helper.tensor_dtype_to_np_dtype(stored[group.weights[0]].data_type)
            factor, smoothed = fresh(f"{group.activation}_smooth_scale"), fresh(f"{group.activation}_smoothed")
            graph.initializer.append(numpy_helper.from_array(inverse.astype(dtype), factor))
            readers = [
                n for n in graph.node if n.op_type == "MatMul" and n.input[0] == group.activation and n.input[1] in group.weights
            ]
            muls[readers[0].output[0]] = onnx.helper.make_node(
                "Mul", [group.activation, factor], [smoothed], name=fresh(f"{group.activation}_smooth")
            )
            for node in readers:
                node.input[0] = smoothed
        still = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        for scope in index.scopes[1:]:
            still |= {name for node in scope.graph.node for name in node.input}
        kept = [t for t in graph.initializer if t.name not in dropped or t.name in still]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        if muls:
            ordered: list[onnx.NodeProto] = []
            for node in graph.node:
                if node.output and node.output[0] in muls:
                    ordered.append(muls[node.output[0]])
                ordered.append(node)
            del graph.node[:]
            graph.node.extend(ordered)


def _fold(
    graph: onnx.GraphProto,
    node: onnx.NodeProto,
    where: tuple[str, int],
    inverse: np.ndarray,
    stored: Mapping[str, onnx.TensorProto],
    weights: Callable[[str], np.ndarray],
    fresh: FreshName,
) -> None:
    name, at = where
    old = weights(name)
    values = (old.astype(np.float64) * inverse.reshape(old.shape)).astype(old.dtype)
    new = fresh(f"{name}_smoothed")
    graph.initializer.append(numpy_helper.from_array(values, new))
    node.input[at] = new


def find_groups(graph: onnx.GraphProto, specs: Mapping[str, DQSpec]) -> list[Group]:
    """The activations read by the main graph's dynamic MatMuls (`specs` with DQSpec.dynamic),
    each with its MatMuls' weights and where 1 / s can be folded."""
    index = GraphIndex(graph)
    stored = {t.name: t for t in graph.initializer}
    readers: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        spec = specs.get(node.input[1])
        if spec is None or not spec.dynamic or spec.in_body or node.input[0] in stored:
            continue
        readers.setdefault(node.input[0], []).append(node.input[1])
    inputs: dict[str, set[str]] = {}  # weight -> the activations it multiplies
    for activation, weights in readers.items():
        for w in weights:
            inputs.setdefault(w, set()).add(activation)
    groups = []
    for activation, weights in readers.items():
        channels = int(specs[weights[0]].shape[0])
        shared = sorted(w for w in weights if len(inputs[w]) > 1)
        if shared:  # one weight, two inputs: their s would differ, and the weight has one set of rows
            skip = f"its weight {shared[0]!r} is also read by a MatMul of another input"
            groups.append(Group(activation, tuple(dict.fromkeys(weights)), channels, None, skip=skip))
            continue
        fold, op, why = _fold_site(graph, index, stored, activation, weights, channels)
        groups.append(Group(activation, tuple(dict.fromkeys(weights)), channels, fold, op, why))
    return groups


def _fold_site(
    graph: onnx.GraphProto, index: GraphIndex, stored: Mapping[str, onnx.TensorProto], activation: str, weights: list[str], k: int
) -> tuple[Fold | None, str, str]:
    """Where 1 / s folds for `activation` (and the producer's op type), or why it does not."""
    if activation in index.graph_outputs:
        return None, "", "the activation is a graph output"
    uses = index.uses.get(activation, [])
    others = [u for u in uses if not (u.op == "MatMul" and u.index == 0 and u.node.input[1] in weights and u.scope is index.main)]
    if others:
        return None, "", f"also read by {', '.join(sorted({u.op for u in others}))}"
    producers = {o: n for n in graph.node for o in n.output if o}
    node = producers.get(activation)
    if node is None:
        return None, "", "a graph input"

    def vector(name: str) -> bool:  # a per-channel constant [..., K] of the main graph
        t = stored.get(name)
        return (
            t is not None
            and name not in index.graph_inputs
            and t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
            and math.prod(t.dims) == k
            and len(t.dims) >= 1
            and t.dims[-1] == k
        )

    if (node.op_type, node.domain) in _NORMS and node.output[0] == activation:
        return _norm_fold(node, vector)
    if node.op_type in ("Mul", "Add") and node.domain in ("", "ai.onnx"):
        fold = _affine_fold(node, producers, index, vector)
        if fold is not None:
            return fold, "Mul" if fold.bias is None else "Mul/Add", ""
    return None, "", f"made by {node.op_type}, not a norm or a per-channel Mul"


def _norm_fold(node: onnx.NodeProto, vector: Callable[[str], bool]) -> tuple[Fold | None, str, str]:
    """A norm's scale (and LayerNormalization's bias) when they are per-channel initializers and
    it normalizes the last axis."""
    scale_at, bias_at = _NORMS[node.op_type, node.domain]
    if len(node.input) <= scale_at or not vector(node.input[scale_at]):
        return None, "", f"{node.op_type}'s scale is not a per-channel initializer"
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if axis != -1:
        return None, "", f"{node.op_type} normalizes from axis {axis}, not the last"
    bias = None
    if bias_at is not None and len(node.input) > bias_at and node.input[bias_at]:
        if not vector(node.input[bias_at]):
            return None, "", f"{node.op_type}'s bias is not a per-channel initializer"
        bias = (node.input[bias_at], node.output[0], bias_at)
    return Fold(node.output[0], (node.input[scale_at], scale_at), bias), node.op_type, ""


def _affine_fold(
    node: onnx.NodeProto, producers: Mapping[str, onnx.NodeProto], index: GraphIndex, vector: Callable[[str], bool]
) -> Fold | None:
    """Mul(a, gamma), or Add(Mul(a, gamma), beta) whose Mul only the Add reads (decomposed
    RMSNorm and LayerNorm): gamma (and beta) per-channel initializers."""
    at = _constant_input(node, vector)
    if at is None:
        return None
    if node.op_type == "Mul":
        return Fold(node.output[0], (node.input[at], at))
    inner = producers.get(node.input[1 - at])
    if inner is None or inner.op_type != "Mul" or inner.domain not in ("", "ai.onnx"):
        return None
    gain = _constant_input(inner, vector)
    single = len(index.uses.get(inner.output[0], [])) == 1 and inner.output[0] not in index.graph_outputs
    if gain is None or not single:
        return None
    return Fold(inner.output[0], (inner.input[gain], gain), (node.input[at], node.output[0], at))


def _constant_input(node: onnx.NodeProto, vector: Callable[[str], bool]) -> int | None:
    """The input (0 or 1) of a binary node that is a per-channel constant, the other not."""
    if len(node.input) != 2:
        return None
    hits = [i for i in (0, 1) if vector(node.input[i])]
    return hits[0] if len(hits) == 1 else None


@dataclass
class _Stats:
    """What the samples give of one activation: max |X_j| overall, each sample's per-channel
    max and min (the dynamic range a tensor gets at run time), and up to ROWS rows."""

    name: str
    k: int
    per_sample: int
    absmax: np.ndarray = field(init=False)
    highs: list[np.ndarray] = field(default_factory=list)
    lows: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.absmax = np.zeros(self.k, dtype=np.float32)

    def add(self, value: np.ndarray, sample: int) -> None:
        x = np.asarray(value)
        if x.dtype.kind != "f" or x.ndim == 0 or x.shape[-1] != self.k:
            raise ConfigError(f"smooth: {self.name} is {x.dtype} {list(x.shape)}, not float [..., {self.k}]")
        x = x.reshape(-1, self.k).astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ConfigError(f"smooth: {self.name} holds NaN or infinite values on sample {sample}")
        if x.shape[0] == 0:
            return
        high, low = x.max(axis=0), x.min(axis=0)
        np.maximum(self.absmax, np.maximum(high, -low), out=self.absmax)
        self.highs.append(high)
        self.lows.append(low)
        self.rows.append(np.array(x[_spread(x.shape[0], self.per_sample)]))


def _collect(
    model: LoadedModel,
    groups: Sequence[Group],
    samples: Sequence[Mapping[str, np.ndarray]],
    tick: Callable[[], None],
) -> dict[str, _Stats]:
    per_sample = max(1, -(-ROWS // len(samples)))
    names = [g.activation for g in groups]
    sizes = {g.activation: 4 * g.channels * (ROWS + 2 * len(samples) + 1) for g in groups}
    batches = budget_groups(names, sizes, COLLECT_BYTES, {name: i for i, name in enumerate(names)})
    channels = {g.activation: g.channels for g in groups}
    out: dict[str, _Stats] = {}
    for batch in batches:
        stats = {n: _Stats(n, channels[n], per_sample) for n in batch}
        runner = ActivationRunner(model, batch, samples[0])
        try:
            for sample in runner.run(samples):
                for name, value in sample.values:
                    stats[name].add(value, sample.index)
                tick()
        except ConfigError as exc:
            raise exc.about(file=model.path) from None
        out.update(stats)
    return out


def smoothing_scales(absmax: np.ndarray, wmax: np.ndarray, strength: float) -> np.ndarray:
    """s = max|X_j|^a / max|W_j,:|^(1-a), each maximum at least FLOOR, s within LIMIT."""
    x = np.maximum(absmax.astype(np.float64), FLOOR)
    w = np.maximum(wmax.astype(np.float64), FLOOR)
    return np.clip(x**strength / w ** (1.0 - strength), 1.0 / LIMIT, LIMIT).astype(np.float32)


def _dynamic_rows(rows: list[np.ndarray], highs: list[np.ndarray], lows: list[np.ndarray], s: np.ndarray) -> np.ndarray:
    """The kept rows of X / s as DynamicQuantizeLinear gives them back (UINT8, each sample's own
    range including 0), dequantized."""
    out = []
    for x, high, low in zip(rows, highs, lows):
        hi = max(0.0, float((high / s).max()))
        lo = min(0.0, float((low / s).min()))
        scale = (hi - lo) / 255.0 or 1.0
        zero = np.clip(np.round(-lo / scale), 0, 255)
        codes = np.clip(np.round(x / s / scale) + zero, 0, 255)
        out.append(((codes - zero) * scale).astype(np.float32))
    return np.concatenate(out)


def _int8_columns(w: np.ndarray, top: np.ndarray | float | None = None) -> np.ndarray:
    """W quantized symmetric INT8 ([-127, 127]), a scale per column (or for all, from `top`:
    per tensor), dequantized."""
    if top is None:
        top = np.abs(w).max(axis=0)
    scale = np.where(top > 0, np.float32(top) / np.float32(127.0), 1.0).astype(np.float32)
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)


def _spread(n: int, most: int) -> np.ndarray:
    """At most `most` indices of range(n), evenly spaced."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(np.intp))


def choose(
    stats: _Stats, weights: Sequence[np.ndarray], strength: float | str, per_channel: bool
) -> tuple[float | None, np.ndarray | None, float, float]:
    """(strength, s, error, plain error) for one group: `strength` itself, or with "auto" the
    best of GRID and none on the kept rows (errors relative to the float outputs' energy)."""
    row_max = [np.abs(w).max(axis=1) for w in weights]
    wmax = np.max(row_max, axis=0)
    if strength != "auto":
        return float(strength), smoothing_scales(stats.absmax, wmax, float(strength)), math.nan, math.nan
    x = np.concatenate(stats.rows)
    columns = [w[:, _spread(w.shape[1], COLUMNS)] for w in weights]
    refs = [x @ w for w in columns]
    energy = sum(float(np.square(r).sum()) for r in refs) or 1.0

    def error(s: np.ndarray | None) -> float:
        ones = np.ones(stats.k, dtype=np.float32)
        xq = _dynamic_rows(stats.rows, stats.highs, stats.lows, ones if s is None else s)
        total = 0.0
        for rows, w, ref in zip(row_max, columns, refs):
            scaled = w if s is None else w * s[:, None]
            top = None if per_channel else float((rows if s is None else rows * s).max())  # per tensor: max |diag(s) W|
            total += float(np.square(xq @ _int8_columns(scaled, top) - ref).sum())
        return total / energy

    plain = error(None)
    best: tuple[float | None, np.ndarray | None, float] = (None, None, plain)
    for a in GRID:
        s = smoothing_scales(stats.absmax, wmax, a)
        e = error(s)
        if e < best[2]:
            best = (a, s, e)
    return best[0], best[1], best[2], plain


def plan_smoothing(
    model: LoadedModel,
    specs: Mapping[str, DQSpec],
    strength: float | str,
    per_channel: bool,
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    stage: Callable[[str, str, int, int], None] | None = None,
) -> Smoothing:
    """The migration of every dynamic MatMul input from the float model's activations on
    `samples` (see the module's docstring). Nothing in `model` is changed."""

    def say(doing: str, unit: str, done: int, total: int) -> None:
        if stage is not None:
            stage(doing, unit, done, total)

    began = time.perf_counter()
    found = find_groups(model.proto.graph, specs)
    groups = [g for g in found if not g.skip]
    runs = [0]

    def tick() -> None:
        runs[0] += 1
        say("collecting activations", "samples", runs[0] % len(samples) or len(samples), len(samples))

    say("collecting activations", "samples", 0, len(samples))
    stats = _collect(model, groups, samples, tick)
    choices = [Choice(g, None, None) for g in found if g.skip]
    for i, group in enumerate(groups):
        say("choosing smoothing strengths" if strength == "auto" else "smoothing", "activations", i, len(groups))
        weights = [np.asarray(model.weights.array(w), dtype=np.float32) for w in group.weights]
        a, s, err, plain = choose(stats.pop(group.activation), weights, strength, per_channel)
        for w in group.weights:
            model.weights.release(w)
        choices.append(Choice(group, a, s, err, plain))
    say("choosing smoothing strengths" if strength == "auto" else "smoothing", "activations", len(groups), len(groups))
    smoothing = Smoothing(choices, len(samples))
    logger.info("%s, in %.2f s", smoothing.summary(), time.perf_counter() - began)
    for c in choices:
        logger.debug("  %s (%s): %s", c.group.activation, ", ".join(c.group.weights), c.note)
    return smoothing
