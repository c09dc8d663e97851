"""Static INT8 quantization: the one pipeline (load -> plan -> rewrite -> stream the output) with
one more stage, activation statistics, and activation QDQ in the rewrite.

    load -> plan weights (INT8, symmetric) -> choose activations (quantrs.activations) ->
    run the float model on the samples in onnxruntime, folding statistics sample by sample
    (quantrs.collect) -> pick ranges (quantrs.ranges) -> rewrite: weights' DequantizeLinear,
    INT32 biases, activation QuantizeLinear/DequantizeLinear -> stream the output

The same loader, name authority and streaming writer as `quantize`, so any model `quantize`
handles (external data, over 2 GiB, Constant weights) calibrates too. Activations that hold
non-finite or mask-sized values (attention masks of -inf or float32's lowest) are left in float,
as are those a sample never computes as float32; the report lists them with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from quantrs import kernels
from quantrs.activations import ActivationParams, StaticEdit, choose_activations, excluded_outputs
from quantrs.collect import collect_statistics
from quantrs.config import CalibrationConfig, QuantizeConfig  # CalibrationConfig: declared with every command's options
from quantrs.errors import ConfigError, QuantrsError, UnsupportedModelError, first_line
from quantrs.pipeline import compensate_weights, open_model, plan_model, rewrite_and_write
from quantrs.qdq import DQSpec
from quantrs.ranges import pick_range
from quantrs.report import ActivationRange, CalibrationReport, LeftFloat
from quantrs.samples import SampleSource, input_specs, iter_samples, load_samples
from quantrs.tensor import Scheme

__all__ = ["CalibrationConfig", "calibrate"]

logger = logging.getLogger(__name__)


def calibrate(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    data: SampleSource,
    config: CalibrationConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    factors: dict | None = None,
) -> CalibrationReport:
    """Calibrate on `data` and write a statically quantized QDQ model.

    `data`: a .npy/.npz file (samples stacked on axis 0 allowed), a folder of them, onnxruntime
    `test_data_set_*` folders, an iterable of input dicts, or an object with `get_next()`
    (onnxruntime's CalibrationDataReader); see quantrs.samples. `progress(samples done, samples
    in all or 0 when unknown)` is called after each sample. `factors`: with gptq weights, as
    for quantrs.quantize (kept by source for the next call on the same model and samples).
    """
    config = config or CalibrationConfig()
    started = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    model = open_model(src, dst)
    options = _weight_options(config)
    plans, specs, _ = plan_model(model, options)
    # Blocks padded to whole blocks are read sliced back, never with padded inputs: the activation
    # Q/DQ pairs go on the MatMul/Gemm inputs as they are (see qdq.DQSpec).
    specs = {n: dataclasses.replace(_unblocked_int8(s), pad_inputs=False) for n, s in specs.items()}
    if config.target == "ort-cpu":
        specs = {n: _stored_zero_point(s) for n, s in specs.items()}
    if config.reduce_range:
        seven = Scheme(bits=7, signed=True, symmetric=True, packed=False)
        specs = {n: dataclasses.replace(s, scheme=seven) if s.scheme.bits == 8 else s for n, s in specs.items()}
    graph = model.proto.graph
    excluded = excluded_outputs(graph, config.weights)
    names = choose_activations(graph, excluded, config.target)
    if not names:
        nested = any(s.in_body for s in specs.values())
        where = " in the main graph (its weighted ops are inside If/Loop/Scan bodies)" if nested else ""
        raise UnsupportedModelError(
            f"{src}: no activation of a quantized op ({config.target}) to calibrate{where}; "
            "`quantrs quantize` quantizes its weights"
        )

    gptq = options.rounding == "gptq"  # its Hessians and the statistics read the samples: held in memory once
    samples = (load_samples if gptq else iter_samples)(data, input_specs(model.proto), limit=config.max_samples)
    stats = collect_statistics(
        model, names, samples, histogram=config.method != "minmax", budget=config.group_bytes,
        progress=None if progress is None else lambda done: progress(done, config.max_samples or 0),
    )  # fmt: skip
    if stats.samples < config.min_samples:
        raise ConfigError(f"{src}: {stats.samples} calibration sample(s), at least {config.min_samples} needed")
    signed = config.signed_activations
    scheme = Scheme(bits=8, signed=signed, symmetric=signed, packed=False)
    ranges = {n: pick_range(c, config.method, percentile=config.percentile) for n, c in stats.collectors.items()}
    params = {n: _activation_params(lo, hi, scheme) for n, (lo, hi) in ranges.items()}
    for name, reason in stats.skipped.items():
        logger.info("activation %s left in float: %s", name, reason)
    if not params:
        reasons = "; ".join(f"{n}: {r}" for n, r in list(stats.skipped.items())[:3])
        raise UnsupportedModelError(
            f"{src}: no activation could be calibrated ({reasons}); quantize weights only with `quantrs quantize`"
        )

    ready: dict = {}
    if gptq:  # the weights' codes compensated on the float model's activations, as quantize does
        try:
            ready, _, _ = compensate_weights(model, specs, options, samples, factors)
        except QuantrsError as exc:
            exc.about(file=src)
            raise
    edit = StaticEdit(params, signed, config.target, excluded, specs, ranks=stats.ranks)
    metadata = {
        "quantrs.mode": "static",
        "quantrs.target": config.target,
        "quantrs.calibration.method": config.method,
        "quantrs.calibration.samples": str(stats.samples),
        "quantrs.activations": "INT8 symmetric" if signed else "UINT8 asymmetric",
        "quantrs.weights": _describe_weights(specs, config.reduce_range),
        **({"quantrs.rounding": f"gptq ({len(ready)} weights)"} if gptq else {}),
    }
    done = rewrite_and_write(model, dst, specs, options, metadata=metadata, edit=edit, ready=ready)
    from quantrs.compare import agreements, run_model

    checking = time.perf_counter()
    reference = {o: [r[o] for r in stats.reference] for o in stats.reference[0]}
    try:
        fidelity = agreements(reference, run_model(str(dst), stats.held_out, list(reference)))
    except BaseException as exc:  # nothing is left behind when the check itself fails
        for path in done.files:
            path.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, QuantrsError):
            raise UnsupportedModelError(f"the quantized model does not run in onnxruntime: {first_line(exc)}", file=src) from None
        raise
    fidelity_seconds = time.perf_counter() - checking
    return CalibrationReport(
        input=str(src),
        output=str(dst),
        files_written=[str(p) for p in done.files],
        method=config.method,
        target=config.target,
        samples=stats.samples,
        activations=[ActivationRange(n, ranges[n][0], ranges[n][1], p.scale, p.zero_point) for n, p in edit.params.items()],
        left_float=[LeftFloat(n, r) for n, r in stats.skipped.items()],
        folded_relus=list(edit.folded),
        quantized_weights=sorted(specs),
        quantized_biases=sorted(edit.biases),
        input_bytes=model.total_bytes,
        output_bytes=sum(p.stat().st_size for p in done.files),
        fidelity=fidelity,
        fidelity_samples=len(stats.held_out),
        inference_groups=stats.groups,
        inference_seconds=round(stats.inference_seconds, 4),
        collection_seconds=round(stats.seconds, 4),
        fidelity_seconds=round(fidelity_seconds, 4),
        seconds=round(time.perf_counter() - started, 4),
        rounding=options.rounding,
        compensated=sorted(ready),
    )


def _weight_options(config: CalibrationConfig) -> QuantizeConfig:
    """Static weights: symmetric, QDQ. For ort-cpu the widths of `config.weights` (INT8 unless
    it says otherwise: `quantrs auto --static` mixes 4 and 8 bits); for tensorrt INT8 per
    channel, as its explicit quantization requires."""
    if config.target == "tensorrt":
        return dataclasses.replace(
            config.weights,
            bits=8,
            symmetric=True,
            per_channel=True,
            layer_bits=(),
            block_size=None,
            range=None,
            quant_format="qdq",
        )
    return dataclasses.replace(config.weights, symmetric=True, per_channel=config.per_channel, quant_format="qdq")


def _unblocked_int8(spec: DQSpec) -> DQSpec:
    """8-bit blocks become per channel: onnxruntime fuses DQ(activation) + blocked DQ(weight) ->
    MatMul into MatMulIntegerToFloat, which cannot broadcast block scales and fails at run time
    (1.32). A blocked weight is 2-D, blocked along its input axis: its channels are the other."""
    if spec.block_size is None or spec.scheme.bits != 8 or len(spec.shape) != 2 or spec.axis is None or spec.nbits:
        return spec
    return dataclasses.replace(spec, axis=1 - spec.axis, block_size=None)


def _stored_zero_point(spec: DQSpec) -> DQSpec:
    """An INT8 weight keeps its zero points (0) in the graph, as onnxruntime's quantize_static
    writes them: onnxruntime 1.32 fuses DQ(activation), DQ(weight) -> Gemm into its integer
    QGemm only when the weight's DequantizeLinear has a zero point input; without one the Gemm
    ran in float on dequantized weights at every run (the digits CNN: 0.66x float's speed). A
    MatMul followed by its bias Add becomes such a Gemm (onnxruntime's MatMulAddFusion) on 2-D
    inputs. 4-bit blocks (read as MatMulNBits) keep the default."""
    if spec.scheme.bits != 8 or spec.block_size is not None or spec.nbits:
        return spec
    return dataclasses.replace(spec, zero_point=True)


def _describe_weights(specs: Mapping[str, DQSpec], reduce_range: bool) -> str:
    """E.g. "INT8 per-channel", "INT4 blocks of 32 + INT8 per-channel"."""
    kinds = set()
    for spec in specs.values():
        width = "INT8 (7-bit range)" if spec.scheme.bits == 7 else f"INT{spec.scheme.bits}"
        layout = f"blocks of {spec.block_size}" if spec.block_size else ("per-channel" if spec.axis is not None else "per-tensor")
        kinds.add(f"{width} {layout}")
    return " + ".join(sorted(kinds))


def _activation_params(lo: float, hi: float, scheme: Scheme) -> ActivationParams:
    rng = kernels.Range(np.array([lo], np.float32), np.array([hi], np.float32))
    scale, zero_point = kernels.scales(rng, scheme.qmin, scheme.qmax, symmetric=scheme.symmetric)
    return ActivationParams(float(scale[0]), int(zero_point[0]))
