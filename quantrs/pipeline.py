"""The one pipeline behind every entry point: load -> plan -> quantize -> rewrite -> save -> report."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from quantrs import __version__
from quantrs.config import QuantizeConfig
from quantrs.errors import OutputError, QuantrsError, UnsupportedModelError
from quantrs.model import PROTOBUF_LIMIT, load_model, save_model
from quantrs.plan import TensorPlan, plan_weights
from quantrs.qdq import convert_opset, insert_weight_dq, merge_metadata, required_opset
from quantrs.report import QuantizeReport, TensorReport
from quantrs.tensor import QuantizedTensor, quantize_tensor, scheme_for

__all__ = ["quantize"]

logger = logging.getLogger(__name__)

# Called after each quantized tensor with (tensors done, tensors planned, bytes done).
ProgressCallback = Callable[[int, int, int], None]


def quantize(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    config: QuantizeConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> QuantizeReport:
    """Quantize the float32 weights of an ONNX model and write a QDQ model that runs in onnxruntime.

    The input file is never modified; the output appears only once it is completely written.

    Raises:
        ModelLoadError: the input is missing, not ONNX, or corrupt.
        UnsupportedModelError: nothing in the model can be quantized, or its opset cannot be raised.
        NonFiniteWeightError: a weight holds NaN or infinity.
        OutputError: the output path is the input path or cannot be written.
    """
    config = config or QuantizeConfig()
    started = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    _check_paths(src, dst)
    model = load_model(src)
    proto = model.proto
    plans = plan_weights(proto.graph, model.weights, config)
    todo = [p for p in plans if p.quantize]
    if not todo:
        raise UnsupportedModelError(f"{src}: {_nothing_to_quantize(plans)}")

    scheme = scheme_for(config.bits, symmetric=config.symmetric, native_int4=config.native_int4)
    results: dict[str, QuantizedTensor] = {}
    done_bytes = 0
    for i, plan in enumerate(todo, 1):
        array = model.weights.array(plan.name)
        try:
            results[plan.name] = quantize_tensor(array, scheme, plan.axis, name=plan.name, n_threads=config.n_threads)
        except QuantrsError as exc:
            raise type(exc)(f"{src}: {exc}") from None
        done_bytes += array.nbytes
        if progress is not None:
            progress(i, len(todo), done_bytes)

    opset_before = model.opset
    target = max(opset_before, required_opset(results))
    if target != opset_before:
        logger.info("converting %s from opset %d to %d", src, opset_before, target)
        try:
            proto = convert_opset(proto, target)
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{src}: {exc}") from None
    for t in proto.graph.initializer:
        if t.name not in results:
            model.weights.materialize(t)  # external float tensors that stay float are copied over
    insert_weight_dq(proto, results)
    merge_metadata(
        proto,
        {
            "quantrs.version": __version__,
            "quantrs.bits": str(config.bits),
            "quantrs.scheme": "symmetric" if config.symmetric else "asymmetric",
            "quantrs.granularity": "per-channel" if config.per_channel else "per-tensor",
            "quantrs.storage": onnx.TensorProto.DataType.Name(scheme.onnx_type),
            **({"quantrs.opset_converted_from": str(opset_before)} if target != opset_before else {}),
        },
    )
    too_big = proto.ByteSize() > PROTOBUF_LIMIT - (1 << 24)
    if config.check_output and not too_big:
        _check(proto, src)
    written = save_model(proto, dst)
    if config.check_output and too_big:
        _check(str(dst), src)

    reports = [_tensor_report(p, results.get(p.name)) for p in plans]
    return QuantizeReport(
        input=str(src),
        output=str(dst),
        files_written=[str(p) for p in written],
        bits=config.bits,
        per_channel=config.per_channel,
        symmetric=config.symmetric,
        storage=onnx.TensorProto.DataType.Name(scheme.onnx_type),
        opset_before=opset_before,
        opset_after=target,
        opset_converted=target != opset_before,
        input_bytes=model.file_size + _external_bytes(model),
        output_bytes=sum(p.stat().st_size for p in written),
        float_weight_bytes=sum(model.weights.info(n).nbytes for n in results),
        quantized_weight_bytes=sum(qt.data.nbytes + qt.scale.nbytes for qt in results.values()),
        quantized_count=len(results),
        skipped_count=len(plans) - len(results),
        seconds=round(time.perf_counter() - started, 4),
        tensors=reports,
    )


def _check_paths(src: Path, dst: Path) -> None:
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OutputError(f"{dst}: the output path is the input model; choose another output")
    if dst.exists() and dst.is_dir():
        raise OutputError(f"{dst}: the output path is a folder")


def _check(model: onnx.ModelProto | str, src: Path) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise UnsupportedModelError(
            f"{src}: the quantized model fails onnx.checker: {str(exc).strip().splitlines()[0]}"
        ) from None


def _external_bytes(model) -> int:
    files = {info.location for info in model.weights if info.location != "embedded"}
    return sum((model.path.parent / f).stat().st_size for f in files)


def _nothing_to_quantize(plans: list[TensorPlan]) -> str:
    floats = [p for p in plans if p.dtype == "FLOAT"]
    if not floats:
        return "no float32 weights to quantize"
    examples = "; ".join(f"{p.name!r}: {p.reason}" for p in floats[:3])
    return f"none of the {len(floats)} float32 weights can be quantized ({examples})"


def _tensor_report(plan: TensorPlan, qt: QuantizedTensor | None) -> TensorReport:
    if qt is None:
        return TensorReport(plan.name, list(plan.shape), plan.dtype, False, plan.reason)
    return TensorReport(
        name=plan.name,
        shape=list(plan.shape),
        dtype=plan.dtype,
        quantized=True,
        reason=plan.reason,
        axis=plan.axis,
        storage=onnx.TensorProto.DataType.Name(qt.scheme.onnx_type),
        mse=qt.mse,
        max_abs_error=qt.max_abs_error,
    )
