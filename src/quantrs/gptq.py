"""Error-compensated rounding (GPTQ: Frantar et al., "GPTQ: Accurate Post-Training Quantization
for Generative Pre-trained Transformers", 2022) of MatMul, Gemm and 2-D Conv weights, from the
float model's own activations on calibration samples (a Conv's rows are its input's patches).

A weight W [K, N] read as X @ W loses ||X (W - Q)||^2 = tr((W - Q)^T H (W - Q)) of its layer's
output to codes Q, with H = X^T X over the samples' rows. Rounding each value to nearest
minimises the weight's own error, not this one. GPTQ quantizes W's rows (input features) one at
a time and moves each row's rounding error onto the rows not yet quantized, in the proportions
H^-1 gives, so that the later rows make up for what the earlier ones lost. The rows are taken
in order of decreasing H[k, k] (the most active inputs first, "act-order"), in batches: inside
a batch the corrections are per row (the compiled kernels.compensate_rows), and the batch's
errors reach the rows after it in one matrix product.

What does not change: every scale and zero point is the one `quantize` computes without data
(min/max, refit or search; blocks or channels; float16 scales), from the float weight, before
any correction ("static groups"). Only codes change, so every format writes them as before and
a compensated model differs from a rounded one by its codes alone.

Measured on all-MiniLM-L6-v2, 4-bit blocks of 32 (tests/test_transformer.py): the worst
sentence's cosine to the float embeddings goes from 0.961 (nearest) to 0.981, with H from 32
sentences of other topics. Damping (DAMP of H's mean diagonal added to its diagonal) matters on
so few rows: 0.01, the paper's, overfits the calibration text (0.975; bench/RESULTS.md).

Memory: the Hessians are collected for as many consumers at a time as HESSIAN_BYTES holds (one
float run of the samples per group), and each weight's codes are kept, packed as written,
until the writer reaches it (an eighth of the float32 weight at 4 bits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from quantrs import kernels
from quantrs.collect import ActivationRunner
from quantrs.errors import ConfigError
from quantrs.graph import GraphIndex, Use
from quantrs.model import LoadedModel

__all__ = [
    "DAMP",
    "ConvGeometry",
    "Target",
    "Factor",
    "Compensation",
    "HessianSum",
    "find_targets",
    "collect_hessians",
    "factor",
    "compensate",
]

logger = logging.getLogger(__name__)

DAMP = 0.1  # of the Hessian's mean diagonal, added to its diagonal
BATCH = 128  # rows whose corrections stay inside the kernel; then one product for the rest
HESSIAN_BYTES = 512 << 20  # Hessians held at once while collecting
ERROR_ROWS = 256  # rows per slice of the compensated codes' error


@dataclass(frozen=True)
class ConvGeometry:
    """How a 2-D Conv (group 1) reads its input: the rows X of its Hessian are the input's
    patches, [B * H_out * W_out, C * kh * kw] in the weight's (c, kh, kw) order, so that
    Conv(x, W) = X @ W.reshape(O, -1).T."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int] | None  # (top, left, bottom, right); None: SAME_* auto_pad
    same_upper: bool = True

    def patches(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ConfigError(f"gptq: a 2-D Conv input is [N, C, H, W], not {list(x.shape)}")
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        pads = self.pads if self.pads is not None else self._same(x.shape[2:])
        x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
        n, c, ho, wo = windows.shape[:4]
        return np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(n * ho * wo, c * kh * kw)

    def _same(self, size: Sequence[int]) -> tuple[int, int, int, int]:
        total = [
            max(0, (-(-i // s) - 1) * s + (k - 1) * d + 1 - i)
            for i, s, k, d in zip(size, self.strides, self.kernel, self.dilations)
        ]
        first = [t // 2 if self.same_upper else t - t // 2 for t in total]
        return first[0], first[1], total[0] - first[0], total[1] - first[1]


@dataclass(frozen=True)
class Target:
    """A weight whose codes are compensated: `activation` is what its consumer multiplies it
    with; `transposed`: the weight is stored [N, K] (Gemm with transB=1; a Conv's [O, C, kh,
    kw] as [O, C * kh * kw]); `conv`: how a Conv turns the activation into rows."""

    weight: str
    activation: str
    transposed: bool
    rows: int  # K, the reduction length
    conv: ConvGeometry | None = None

    @property
    def source(self) -> Source:
        """What its Hessian is of: the activation, and how a Conv reads it (Convs of another
        geometry on the same activation have other rows)."""
        return (self.activation, self.conv)


Source = tuple[str, ConvGeometry | None]


def find_targets(
    graph: onnx.GraphProto, names: Sequence[str], shapes: Mapping[str, Sequence[int]]
) -> tuple[dict[str, Target], dict[str, str]]:
    """The weights of `names` that GPTQ applies to, and for the others why not: a 2-D weight of
    the main graph read by exactly one node, a MatMul (as B) or a Gemm (as B, A not transposed),
    whose other input is computed from the samples."""
    index = GraphIndex(graph)
    targets: dict[str, Target] = {}
    skipped: dict[str, str] = {}
    stored = {t.name for t in graph.initializer}
    for name in names:
        uses = index.uses.get(name, [])
        shape = list(shapes[name])
        why = _not_a_product(uses, index)
        if not why and uses[0].op != "Conv" and len(shape) != 2:
            why = f"{len(shape)}-D, not a [K, N] matrix"
        if why:
            skipped[name] = why
            continue
        node = uses[0].node
        if node.input[0] in stored or node.input[0] == name:
            skipped[name] = "its consumer's other input is a constant"
            continue
        if node.op_type == "Conv":
            geometry = _conv_geometry(node, shape)
            if isinstance(geometry, str):
                skipped[name] = geometry
                continue
            targets[name] = Target(name, node.input[0], True, int(np.prod(shape[1:])), geometry)
            continue
        attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
        if node.op_type == "Gemm" and attrs.get("transA", 0):
            skipped[name] = "its Gemm transposes A"
            continue
        transposed = node.op_type == "Gemm" and bool(attrs.get("transB", 0))
        targets[name] = Target(name, node.input[0], transposed, shape[1] if transposed else shape[0])
    return targets, skipped


def _conv_geometry(node: onnx.NodeProto, shape: list[int]) -> ConvGeometry | str:
    """A 2-D, group-1 Conv's geometry, or why gptq does not take it."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if len(shape) != 4:
        return f"a {len(shape) - 2}-D Conv's weight (gptq takes 2-D Convs)"
    if attrs.get("group", 1) != 1:
        return f"a grouped Conv's weight (group {attrs['group']})"
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = [int(v) for v in attrs.get("pads", (0, 0, 0, 0))]
    kernel = [int(v) for v in attrs.get("kernel_shape", shape[2:])]
    strides = [int(v) for v in attrs.get("strides", (1, 1))]
    dilations = [int(v) for v in attrs.get("dilations", (1, 1))]
    return ConvGeometry(
        kernel=(kernel[0], kernel[1]),
        strides=(strides[0], strides[1]),
        dilations=(dilations[0], dilations[1]),
        pads=None
        if auto_pad in ("SAME_UPPER", "SAME_LOWER")
        else ((0, 0, 0, 0) if auto_pad == "VALID" else (pads[0], pads[1], pads[2], pads[3])),
        same_upper=auto_pad != "SAME_LOWER",
    )


def _not_a_product(uses: Sequence[Use], index: GraphIndex) -> str:
    """Why a weight's uses are not the single weight input of a main-graph MatMul, Gemm or Conv
    ("" if they are)."""
    if len(uses) != 1:
        return f"read by {len(uses)} nodes"
    use = uses[0]
    label = f"{use.op} '{use.node.name}'" if use.node.name else use.op
    if use.scope is not index.main:
        return f"read by {label} inside a body"
    if use.op not in ("MatMul", "Gemm", "Conv"):
        return f"read by {label}, not directly by a MatMul, Gemm or Conv"
    if use.index != 1:
        return f"input {use.index} of {label}, not B"
    return ""


def collect_hessians(
    model: LoadedModel,
    targets: Mapping[str, Target],
    samples: Sequence[Mapping[str, np.ndarray]],
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[dict[Source, np.ndarray], list[Target]]]:
    """Yield ({source: H [K, K] float64, the mean of x^T x over its rows}, the targets reading
    them), a group of sources at a time (their Hessians within HESSIAN_BYTES, at least one),
    each group from one float run of the samples. `progress(sample runs done, sample runs in
    all)` before the first and after each sample of each group's run. Raises ConfigError naming
    the model for an activation that is not float [..., K] (or a Conv's [N, C, H, W])."""
    budget = HESSIAN_BYTES
    sizes: dict[Source, int] = {}
    for t in targets.values():
        sizes.setdefault(t.source, t.rows)
    groups: list[list[Source]] = []
    held = 0
    for source, k in sizes.items():
        if not groups or held + 8 * k * k > budget:
            groups.append([])
            held = 0
        groups[-1].append(source)
        held += 8 * k * k
    runs = [0, len(groups) * len(samples)]

    def tick(step: int = 1) -> None:
        runs[0] += step
        if progress is not None:
            progress(*runs)

    tick(0)
    for sources in groups:
        yield _hessians(model, sources, sizes, samples, tick), [t for t in targets.values() if t.source in sources]


def _hessians(
    model: LoadedModel,
    sources: list[Source],
    sizes: Mapping[Source, int],
    samples: Sequence[Mapping[str, np.ndarray]],
    tick: Callable[[], None],
) -> dict[Source, np.ndarray]:
    began = time.perf_counter()
    sums = {source: HessianSum(source[0], sizes[source], source[1]) for source in sources}
    runner = ActivationRunner(model, list(dict.fromkeys(name for name, _ in sources)), samples[0])
    try:
        for sample in runner.run(samples):
            for name, value in sample.values:
                for source in sources:
                    if source[0] == name:
                        sums[source].add(value, sample.index)
            tick()
        hessians = {source: sums.pop(source).mean() for source in sources}
    except ConfigError as exc:
        raise exc.about(file=model.path) from None
    logger.info(
        "Hessians of %d activation(s) from %d sample(s) in %.2f s", len(sources), len(samples), time.perf_counter() - began
    )
    return hessians


class HessianSum:
    """The sum of x^T x over the rows of one activation's values (float, [..., K], finite),
    each sample's product in float32, the sum in float64; `mean` is the Hessian."""

    def __init__(self, name: str, k: int, conv: ConvGeometry | None = None) -> None:
        self.name, self.k, self.conv = name, k, conv
        self.total = np.zeros((k, k), dtype=np.float64)
        self.rows = 0

    def add(self, value: np.ndarray, sample: int) -> None:
        x = np.asarray(value)
        if x.dtype.kind == "f" and self.conv is not None:
            x = self.conv.patches(x.astype(np.float32, copy=False))
        if x.dtype.kind != "f" or x.ndim == 0 or x.shape[-1] != self.k:
            raise ConfigError(f"gptq: {self.name} is {x.dtype} {list(x.shape)}, not float [..., {self.k}]")
        x = x.reshape(-1, self.k).astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ConfigError(f"gptq: {self.name} holds NaN or infinite values on sample {sample}")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported by mean()
            self.total += x.T @ x
        self.rows += x.shape[0]

    def mean(self) -> np.ndarray:
        if self.rows == 0:
            raise ConfigError(f"gptq: the samples give no rows of {self.name} (empty inputs?)")
        if not np.isfinite(self.total).all():
            raise ConfigError(f"gptq: the products of {self.name} overflow float32 on the samples")
        return self.total / self.rows


@dataclass(frozen=True)
class Factor:
    """What GPTQ needs of a Hessian, computed once for all the weights reading one activation:
    the order the rows are quantized in, and U, upper triangular with U^T U = the inverse of
    the damped Hessian in that order."""

    order: np.ndarray
    u: np.ndarray
    active: int  # inputs active on the samples (H[k, k] > 0); 0: nothing to compensate with


def factor(hessian: np.ndarray, *, damp: float = DAMP, act_order: bool = True) -> Factor:
    """Damp H (damp times its mean diagonal on the diagonal, raised tenfold until H is positive
    definite: a Hessian from few rows is singular), order its rows (by decreasing H[k, k] with
    act_order: the most active inputs first, their error spread over the most rows), factor.
    Rows never active on the samples carry no information: they go last, rounded to nearest
    but for the corrections they receive. `hessian` is not modified."""
    diag = np.diag(hessian).astype(np.float64)
    dead = diag <= 0
    k = diag.size
    order = np.argsort(np.where(dead, np.inf, -diag), kind="stable") if act_order else np.arange(k)
    # With J the reversal, J H J = L L^T gives H^-1 = (L^-1 J)^T (L^-1 J), so U = J L^-1 J: one
    # factorisation and one triangular inverse. H is taken once, reversed and ordered together.
    backwards = order[::-1]
    flipped = np.array(hessian[np.ix_(backwards, backwards)], dtype=np.float64)
    on_diagonal = np.where(dead[backwards], 1.0, diag[backwards])
    mean = float(np.mean(on_diagonal)) or 1.0
    for attempt in range(6):
        np.fill_diagonal(flipped, on_diagonal + damp * 10**attempt * mean)
        try:
            lower = np.linalg.cholesky(flipped)
        except np.linalg.LinAlgError:
            continue
        del flipped
        u = _lower_inverse(lower)[::-1, ::-1]
        return Factor(order, np.ascontiguousarray(np.triu(u)), int(k - dead.sum()))
    raise ConfigError("gptq: the activations' Hessian is not positive definite even when damped")


def _lower_inverse(lower: np.ndarray) -> np.ndarray:
    """The inverse of a lower-triangular matrix, by halves (inv [[A, 0], [C, D]] =
    [[A^-1, 0], [-D^-1 C A^-1, D^-1]]): a third of a general inverse's work, in matrix
    products (numpy has no triangular inverse)."""
    k = lower.shape[0]
    if k <= 128:
        return np.linalg.inv(lower)
    half = k // 2
    a_inv = _lower_inverse(lower[:half, :half])
    d_inv = _lower_inverse(lower[half:, half:])
    out = np.zeros_like(lower)
    out[:half, :half] = a_inv
    out[half:, half:] = d_inv
    out[half:, :half] = -(d_inv @ (lower[half:, :half] @ a_inv))
    return out


def compensate(
    w: np.ndarray,
    f: Factor,
    scale: np.ndarray,
    zero_point: np.ndarray,
    group: np.ndarray,
    qmin: int,
    qmax: int,
) -> np.ndarray:
    """Compensated codes of W [K, N] (uint8, a signed code's two's complement) for the fixed
    scale and zero_point [G, N] of each row's group (group: [K]). The rows' corrections across
    batches are matrix products in numpy's BLAS, which uses the cores; the batches' own rows go
    through the kernel on one thread (measured on MiniLM: 1.36 s, against 2.49 s with both
    threaded, each pool spinning while the other works)."""
    k, n = w.shape
    work = np.ascontiguousarray(w[f.order], dtype=np.float64)
    rows_group = np.ascontiguousarray(group[f.order], dtype=np.int32)
    codes = np.empty((k, n), dtype=np.uint8)
    for start in range(0, k, BATCH):
        stop = min(k, start + BATCH)
        batch = work[start:stop]  # a view: the kernel corrects its rows in place
        codes[start:stop], err = kernels.compensate_rows(
            batch, f.u[start:stop, start:stop], scale, zero_point, rows_group[start:stop], qmin, qmax, n_threads=1
        )  # one thread: numpy's BLAS threads, spinning after each product, would take the other cores
        if stop < k:
            work[stop:] -= f.u[start:stop, stop:].T @ err
    out = np.empty_like(codes)
    out[f.order] = codes
    return out


@dataclass(frozen=True)
class Compensation:
    """The compensated codes of one weight, for quantrs.tensor's quantizers: they compute the
    scales as always and ask `codes` for the codes."""

    factor: Factor
    transposed: bool

    def codes(
        self,
        x: np.ndarray,
        scale: np.ndarray,
        zero_point: np.ndarray,
        *,
        axis: int | None,
        block_size: int | None,
        qmin: int,
        qmax: int,
    ) -> tuple[np.ndarray, float, float]:
        """(codes in x's layout, their sum of squared error, max abs error) for the scale and
        zero_point as the kernels give them, flat: one per tensor, per channel along `axis`
        (the output axis), or blocked along `axis` (the reduction axis)."""
        if x.ndim > 2 and (not self.transposed or block_size is not None):
            raise ConfigError(
                f"gptq: a {x.ndim}-D weight is compensated per channel or per tensor as [out, in...], not in blocks"
            )
        w = x.reshape(x.shape[0], -1).T if self.transposed else x  # [K, N]; a Conv's [O, C, kh, kw] as [C * kh * kw, O]
        k, n = w.shape
        out_axis, red_axis = (0, 1) if self.transposed else (1, 0)
        s = np.asarray(scale, dtype=np.float32)
        z = np.asarray(zero_point, dtype=np.int32)
        if block_size is not None:
            if axis != red_axis:
                raise ConfigError(f"gptq: blocks must run along the reduction axis {red_axis}, not {axis}")
            blocked = (-(-k // block_size), n)
            s = s.reshape(blocked[::-1]).T if self.transposed else s.reshape(blocked)
            z = z.reshape(blocked[::-1]).T if self.transposed else z.reshape(blocked)
            group = np.arange(k, dtype=np.int32) // block_size
        elif axis is None:
            s, z = np.full((1, n), s.reshape(-1)[0], np.float32), np.full((1, n), z.reshape(-1)[0], np.int32)
            group = np.zeros(k, dtype=np.int32)
        elif axis == out_axis:
            s, z = s.reshape(1, n), z.reshape(1, n)
            group = np.zeros(k, dtype=np.int32)
        else:
            raise ConfigError(f"gptq: channels along the reduction axis {axis} have no per-row scale")
        w32 = np.asarray(w, dtype=np.float32)
        s, z = np.ascontiguousarray(s), np.ascontiguousarray(z)
        codes = compensate(w32, self.factor, s, z, group, qmin, qmax)
        values = codes.view(np.int8) if qmin < 0 else codes
        sse, max_abs = 0.0, 0.0
        for start in range(0, k, ERROR_ROWS):  # the error in slices: no [K, N] float64 temporaries
            rows = slice(start, start + ERROR_ROWS)
            g = group[rows]
            error = w32[rows].astype(np.float64) - (values[rows] - z[g].astype(np.float64)) * s[g].astype(np.float64)
            sse += float(np.sum(error**2))
            max_abs = max(max_abs, float(np.abs(error).max(initial=0.0)))
        return (np.ascontiguousarray(codes.T).reshape(x.shape) if self.transposed else codes), sse, max_abs
