"""Static INT8 quantization: calibrate activation ranges on samples, then quantize weights and
activations as QDQ, so that onnxruntime runs Conv, MatMul and Gemm with integer kernels.

    load -> choose activations -> run the float model on the samples, folding statistics
    sample by sample -> pick ranges -> quantize weights (INT8, symmetric) and biases (INT32 at
    input scale x weight scale) -> insert QuantizeLinear/DequantizeLinear on activations -> save

Activations are quantized at the inputs and outputs of the ops onnxruntime keeps in integer
form around its QDQ kernels (see QUANTIZED_OPS); everything else stays float.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantrs import __version__, kernels
from quantrs.config import QuantizeConfig
from quantrs.errors import ConfigError, OutputError, UnsupportedModelError
from quantrs.plan import plan_weights
from quantrs.qdq import merge_metadata
from quantrs.ranges import METHODS, HistogramCollector, pick_range
from quantrs.report import ActivationRange, CalibrationReport
from quantrs.samples import check_sample, input_specs, iter_samples
from quantrs.tensor import Scheme, quantize_tensor

__all__ = ["CalibrationConfig", "calibrate", "COMPUTE_OPS", "QUANTIZED_OPS"]

logger = logging.getLogger(__name__)

COMPUTE_OPS = {"Conv", "MatMul", "Gemm"}  # with quantized weights: the integer kernels
# Ops onnxruntime keeps in integer form between QDQ nodes (its QDQ selectors and propagation).
# Softmax and Sigmoid are left out: their outputs live in [0, 1] and usually end the model, where
# 8 bits cost accuracy and buy no integer kernel.
QUANTIZED_OPS = COMPUTE_OPS | {
    "Add", "Mul", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Resize", "LeakyRelu", "Split",
    "Slice", "Gather",
}  # fmt: skip
MIN_QDQ_OPSET = 13
FIDELITY_SAMPLES = 8  # the last samples seen are replayed through both models for the report


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """How `calibrate` chooses ranges and quantizes.

    Attributes:
        method: minmax, percentile, entropy or mse (see quantrs.ranges.pick_range).
        percentile: for method="percentile", the share of values kept inside the range.
        per_channel: one weight scale per output channel.
        symmetric_activations: INT8 activations with zero point 0 (default UINT8 asymmetric).
        reduce_range: 7-bit weights ([-63, 63]): avoids the saturation of onnxruntime's u8s8
            integer kernels on x86 CPUs without VNNI (AVX2-only); costs a little accuracy.
        max_samples: stop after this many samples (None: all).
        min_samples: refuse to calibrate on fewer samples than this.
        weights: the weight options (exclusions, min_elements) shared with `quantize`; its
            bits/symmetric are ignored (static weights are INT8 symmetric).
    """

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    symmetric_activations: bool = False
    reduce_range: bool = False
    max_samples: int | None = None
    min_samples: int = 1
    weights: QuantizeConfig = field(default_factory=lambda: QuantizeConfig(min_elements=0))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"percentile must be in (50, 100], not {self.percentile}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples must be at least 1, not {self.max_samples}")
        if self.min_samples < 1 or (self.max_samples is not None and self.min_samples > self.max_samples):
            raise ConfigError(f"min_samples must be between 1 and max_samples, not {self.min_samples}")


def calibrate(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    data: str | os.PathLike[str] | Iterable[Mapping[str, np.ndarray]],
    config: CalibrationConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationReport:
    """Calibrate on `data` (a .npy/.npz file, a folder of them, or an iterable of input dicts)
    and write a statically quantized QDQ model. `progress(samples done, samples in all or 0 when
    unknown)` is called after each sample."""
    config = config or CalibrationConfig()
    started = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OutputError(f"{dst}: the output path is the input model; choose another output")
    from quantrs.model import load_model

    loaded = load_model(src)  # validates the file with one-line errors
    model = onnx.load(str(src))
    if loaded.opset < MIN_QDQ_OPSET:
        from quantrs.qdq import convert_opset

        model = convert_opset(model, MIN_QDQ_OPSET)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}

    weight_plans = {p.name: p for p in plan_weights(graph, loaded.weights, _weight_options(config)) if p.quantize}
    excluded_nodes = _excluded_nodes(graph, config.weights)
    activations = _activations(graph, initializers, excluded_nodes)
    if not activations:
        raise UnsupportedModelError(f"{src}: no Conv, MatMul or Gemm activation to quantize")

    stats, count, held_out = _collect(model, src, data, activations, config, progress)
    ranges = {name: pick_range(stats[name], config.method, percentile=config.percentile) for name in activations}
    act_scheme = Scheme(bits=8, signed=config.symmetric_activations, symmetric=config.symmetric_activations, packed=False)
    act_params = {name: _activation_params(lo, hi, act_scheme) for name, (lo, hi) in ranges.items()}

    weight_scheme = Scheme(bits=7 if config.reduce_range else 8, signed=True, symmetric=True, packed=False)
    weight_scales = _quantize_weights(graph, loaded, weight_plans, weight_scheme, config)
    biases = _quantize_biases(graph, initializers, weight_scales, act_params, excluded_nodes)
    if not act_scheme.signed:
        _fold_relus(graph, act_params, excluded_nodes)
    _insert_activation_qdq(graph, act_params, act_scheme, excluded_nodes)
    merge_metadata(
        model,
        {
            "quantrs.version": __version__,
            "quantrs.mode": "static",
            "quantrs.calibration.method": config.method,
            "quantrs.calibration.samples": str(count),
            "quantrs.activations": "INT8 symmetric" if config.symmetric_activations else "UINT8 asymmetric",
            "quantrs.weights": ("INT8 (7-bit range)" if config.reduce_range else "INT8") + (" per-channel" if config.per_channel else " per-tensor"),
        },
    )
    from quantrs.qdq import check_model

    check_model(model, src)
    from quantrs.writer import OutTensor, write_model

    tensors = [OutTensor(t, None) for t in graph.initializer]
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    del skeleton.graph.initializer[:]
    written = write_model(skeleton, tensors, dst)
    from quantrs.validation import agreements, run_model

    fidelity = agreements(run_model(str(src), held_out), run_model(str(dst), held_out))
    return CalibrationReport(
        input=str(src),
        output=str(dst),
        files_written=[str(p) for p in written],
        method=config.method,
        samples=count,
        activations=[ActivationRange(n, ranges[n][0], ranges[n][1], float(act_params[n][0]), int(act_params[n][1])) for n in activations if n in act_params],
        quantized_weights=sorted(weight_scales),
        quantized_biases=sorted(biases),
        input_bytes=src.stat().st_size,
        output_bytes=sum(p.stat().st_size for p in written),
        fidelity=fidelity,
        fidelity_samples=len(held_out),
        seconds=round(time.perf_counter() - started, 4),
    )


def _weight_options(config: CalibrationConfig) -> QuantizeConfig:
    import dataclasses

    return dataclasses.replace(config.weights, bits=8, symmetric=True, per_channel=config.per_channel, layer_bits=())


def _excluded_nodes(graph: onnx.GraphProto, options: QuantizeConfig) -> set[str]:
    """Nodes left in float: by op type, by name (node or weight name), or by regex."""
    patterns = [re.compile(p) for p in options.exclude_regex]
    names = set(options.exclude)
    out = set()
    for i, node in enumerate(graph.node):
        key = node.name or f"#{i}"
        labels = {node.name} | {n for n in node.input if n}
        if node.op_type in options.exclude_op_types or labels & names or any(p.search(l) for p in patterns for l in labels if l):
            out.add(key)
    return out


def _node_key(i: int, node: onnx.NodeProto) -> str:
    return node.name or f"#{i}"


def _activations(graph: onnx.GraphProto, initializers, excluded: set[str]) -> list[str]:
    """Float tensors read or written by a quantized op that is not excluded, in graph order."""
    float_types = _float_tensors(graph)
    chosen: dict[str, None] = {}
    for i, node in enumerate(graph.node):
        if node.op_type not in QUANTIZED_OPS or _node_key(i, node) in excluded or node.domain not in ("", "ai.onnx"):
            continue
        names = [n for n in node.input if n and n not in initializers]
        if node.op_type == "Gather":
            names = names[:1] if node.input[0] not in initializers else []
        names += [n for n in node.output[:1]]
        for name in names:
            if float_types.get(name, False):
                chosen.setdefault(name, None)
    return list(chosen)


def _float_tensors(graph: onnx.GraphProto) -> dict[str, bool]:
    """Which tensors are float32 (shape inference, graph inputs and outputs)."""
    model = helper.make_model(graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        values = list(inferred.value_info) + list(inferred.input) + list(inferred.output)
    except Exception:  # best effort: unknown tensors are not quantized
        values = list(graph.input) + list(graph.output) + list(graph.value_info)
    return {v.name: v.type.tensor_type.elem_type == TensorProto.FLOAT for v in values if v.type.HasField("tensor_type")}


def _collect(model, src: Path, data, activations: list[str], config: CalibrationConfig, progress=None):
    """Run the float model with every activation as an output; fold each sample's values into
    the collectors and drop them."""

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    outputs = {o.name for o in augmented.graph.output}
    inputs = {i.name for i in augmented.graph.input}
    for name in activations:
        if name not in outputs and name not in inputs:
            augmented.graph.output.append(helper.make_empty_tensor_value_info(name))
    from quantrs._ort import session as ort_session

    session = ort_session(augmented.SerializeToString(), optimize=False)  # keep every tensor
    fetch = [n for n in activations if n not in inputs]
    with_histogram = config.method != "minmax"
    stats = {name: HistogramCollector(name, with_histogram) for name in activations}
    specs = input_specs(model)
    samples = iter_samples(data, specs, limit=config.max_samples) if isinstance(data, (str, os.PathLike)) else data
    count = 0
    held_out: deque[dict[str, np.ndarray]] = deque(maxlen=FIDELITY_SAMPLES)  # the last few, for the report
    for sample in samples:
        if config.max_samples is not None and count >= config.max_samples:
            break
        feed = check_sample(sample, specs, f"sample {count}") if not isinstance(data, (str, os.PathLike)) else sample
        try:
            values = session.run(fetch, feed)
        except Exception as exc:  # onnxruntime's own error types
            raise ConfigError(f"{src}: sample {count} does not run: {str(exc).splitlines()[0]}") from None
        for name, value in zip(fetch, values):
            stats[name].add(value)
        for name in activations:
            if name in inputs:
                stats[name].add(feed[name])
        held_out.append(feed)
        count += 1
        if progress is not None:
            progress(count, config.max_samples or 0)
    if count < config.min_samples:
        raise ConfigError(f"{src}: {count} calibration sample(s), at least {config.min_samples} needed" if count else f"{src}: no calibration samples")
    return stats, count, list(held_out)


def _activation_params(lo: float, hi: float, scheme: Scheme) -> tuple[np.float32, int]:
    rng = kernels.Range(np.array([lo], np.float32), np.array([hi], np.float32))
    scale, zero_point = kernels.scales(rng, scheme.qmin, scheme.qmax, symmetric=scheme.symmetric)
    return scale[0], int(zero_point[0])


def _quantize_weights(graph, loaded, plans, scheme: Scheme, config: CalibrationConfig) -> dict[str, np.ndarray]:
    """Replace each planned weight by INT8 codes + DequantizeLinear; returns name -> scales."""
    scales, replacements = {}, {}
    for tensor in graph.initializer:
        plan = plans.get(tensor.name)
        if plan is None:
            continue
        values = loaded.weights.array(tensor.name)
        qt = quantize_tensor(values, scheme, plan.axis, name=tensor.name, n_threads=config.weights.n_threads)
        scale = qt.scale if plan.axis is not None else qt.scale.reshape(())
        replacements[tensor.name] = (qt.data.view(np.int8).reshape(qt.shape), scale, plan.axis)
        scales[tensor.name] = qt.scale
    _replace_with_dequantized(graph, replacements)
    return scales


def _quantize_biases(graph, initializers, weight_scales, act_params, excluded: set[str]) -> list[str]:
    """Conv and Gemm biases as INT32 at scale = input scale x weight scale, zero point 0."""
    replaced = {}
    for i, node in enumerate(graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or _node_key(i, node) in excluded:
            continue
        x, w, b = node.input[0], node.input[1], node.input[2]
        if b not in initializers or b in replaced or w not in weight_scales or x not in act_params:
            continue
        bias = numpy_helper.to_array(initializers[b]).astype(np.float32)
        if bias.ndim != 1:
            continue
        w_scale = weight_scales[w].astype(np.float32)
        scale = (np.float32(act_params[x][0]) * w_scale).astype(np.float32)
        if w_scale.size == 1:
            scale = np.full(bias.shape, scale.reshape(-1)[0], np.float32)
        codes = np.clip(np.rint(bias.astype(np.float64) / scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
        replaced[b] = (codes, scale)
    _replace_with_dequantized(graph, {name: (codes, scale, 0) for name, (codes, scale) in replaced.items()})
    return list(replaced)


def _replace_with_dequantized(graph, replacements: dict[str, tuple[np.ndarray, np.ndarray, int | None]]) -> None:
    """Swap each named float initializer for its integer codes and scale, read through a
    DequantizeLinear whose output keeps the name (placed first: it reads only initializers)."""
    if not replacements:
        return
    kept = [t for t in graph.initializer if t.name not in replacements]
    nodes = []
    for name, (codes, scale, axis) in replacements.items():
        kept += [numpy_helper.from_array(codes, f"{name}_quantized"), numpy_helper.from_array(scale, f"{name}_scale")]
        attrs: dict[str, Any] = {} if axis is None else {"axis": axis}
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_quantized", f"{name}_scale"], [name], name=f"{name}_DequantizeLinear", **attrs))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes += list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)


def _fold_relus(graph, params, excluded: set[str]) -> None:
    """Conv/MatMul/Gemm -> Relu becomes Conv -> QuantizeLinear when the Relu's output is UINT8
    with zero point 0: the quantizer saturates negatives to code 0, i.e. dequantized 0, which is
    exactly Relu. onnxruntime then fuses the pair into one integer kernel (as its own quantizer
    does)."""
    producers = {out: (i, n) for i, n in enumerate(graph.node) for out in n.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    drop = []
    for i, node in enumerate(graph.node):
        if node.op_type != "Relu" or _node_key(i, node) in excluded:
            continue
        source, result = node.input[0], node.output[0]
        if source not in producers or uses.get(source, 0) != 1 or source in outputs:
            continue
        j, producer = producers[source]
        if producer.op_type not in COMPUTE_OPS or _node_key(j, producer) in excluded:
            continue
        if result not in params or params[result][1] != 0:
            continue
        producer.output[0] = result
        params.pop(source, None)
        drop.append(node)
    for node in drop:
        graph.node.remove(node)


def _insert_activation_qdq(graph, params, scheme: Scheme, excluded: set[str]) -> None:
    """QuantizeLinear -> DequantizeLinear after each activation; the quantized ops (not excluded)
    read the dequantized tensor, so onnxruntime can fuse them into integer kernels."""
    zp_type = TensorProto.INT8 if scheme.signed else TensorProto.UINT8
    pairs: dict[str, list[onnx.NodeProto]] = {}
    for name, (scale, zero_point) in params.items():
        graph.initializer.append(helper.make_tensor(f"{name}_act_scale", TensorProto.FLOAT, [], [float(scale)]))
        graph.initializer.append(helper.make_tensor(f"{name}_act_zero_point", zp_type, [], [zero_point]))
        q = helper.make_node("QuantizeLinear", [name, f"{name}_act_scale", f"{name}_act_zero_point"], [f"{name}_act_quantized"], name=f"{name}_QuantizeLinear")
        dq = helper.make_node("DequantizeLinear", [f"{name}_act_quantized", f"{name}_act_scale", f"{name}_act_zero_point"], [f"{name}_act_dequantized"], name=f"{name}_act_DequantizeLinear")
        pairs[name] = [q, dq]
    graph_inputs = {i.name for i in graph.input}
    nodes = [n for name in params if name in graph_inputs for n in pairs[name]]
    for i, node in enumerate(list(graph.node)):
        if node.op_type in QUANTIZED_OPS and _node_key(i, node) not in excluded:
            for k, name in enumerate(node.input):
                if name in params:
                    node.input[k] = f"{name}_act_dequantized"
        nodes.append(node)
        nodes += [n for out in node.output if out in params for n in pairs[out]]
    del graph.node[:]
    graph.node.extend(nodes)
