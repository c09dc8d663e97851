"""The one pipeline behind every entry point: load -> plan -> rewrite -> quantize while streaming
the output -> report.

Memory stays flat whatever the model's size: the input is memory-mapped, each weight is
quantized only when the writer reaches it, and its pages are handed back right after.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np
import onnx

from quantrs import __version__, kernels
from quantrs.config import QuantizeConfig
from quantrs.errors import AlreadyQuantizedError, ConfigError, OptionError, OutputError, QuantrsError, UnsupportedModelError
from quantrs.graph import MAIN, GraphIndex, walk_graphs
from quantrs.model import LoadedModel, load_model
from quantrs.plan import FLOAT_TYPES, TensorPlan, plan_weights, quantized_ops
from quantrs.qdq import (
    MICROSOFT_DOMAIN,
    DQSpec,
    DQTensors,
    convert_opset,
    check_model,
    checker_problem,
    detach_nested_weights,
    insert_weight_dq,
    merge_metadata,
    required_opset,
)
from quantrs.report import PlanEntry, PlanReport, QuantizeReport, TensorReport
from quantrs.tensor import QuantizedTensor, Scheme, Scratch, as_float16, quantize_matmulnbits, quantize_tensor, scheme_for
from quantrs.writer import OutTensor, Payload, folder_problem, write_model

if TYPE_CHECKING:
    from quantrs.edit import GraphEdit
    from quantrs.gptq import Compensation, Factor, Source, Target
    from quantrs.samples import SampleSource
    from quantrs.smooth import Smoothing

__all__ = ["quantize", "dry_run", "open_model", "check_output", "plan_model", "rewrite_and_write", "WeightStream"]

logger = logging.getLogger(__name__)

# Called after each quantized tensor with (tensors done, tensors planned, bytes done, bytes planned).
ProgressCallback = Callable[[int, int, int, int], None]
# Called in the stages before the writing (gptq's) with (what is being done, its unit, done,
# in all), e.g. ("collecting Hessians", "samples", 3, 16); a total of 0: not known yet.
StageCallback = Callable[[str, str, int, int], None]


def quantize(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    config: QuantizeConfig | None = None,
    *,
    data: SampleSource | None = None,
    factors: dict[Source, Factor] | None = None,
    progress: ProgressCallback | None = None,
    stage: StageCallback | None = None,
) -> QuantizeReport:
    """Quantize the float weights of an ONNX model and write a QDQ model that runs in onnxruntime.

    The input file is never modified; the output appears only once it is completely written.
    Inputs with external data, outputs over 2 GiB, or `config.external_data` give an output with
    external data (`<output>.data`); otherwise the output is a single file.

    `data`: the samples `config.rounding == "gptq"` computes its codes from, or `config.smooth`
    its activations' maxima per channel (the forms quantrs.samples reads). `factors`: with
    gptq, a dict in which the Hessians' factors are kept by source (gptq.Target.source; as
    many as gptq.HESSIAN_BYTES holds) and taken from on the next call;
    only for the same model and samples (auto builds several candidates); None: each factor
    is dropped once its weights are quantized.

    `progress` follows the writing, tensor by tensor; `stage` what comes before it, which with
    gptq is most of the time: loading the samples, collecting the Hessians (sample by sample)
    and compensating the codes (weight by weight).

    Raises:
        ModelLoadError: the input is missing, not ONNX, or corrupt.
        UnsupportedModelError: nothing in the model can be quantized, or its opset cannot be raised.
        NonFiniteWeightError: a weight holds NaN or infinity.
        OutputError: the output path is the input path or cannot be written.
    """
    config = config or QuantizeConfig()
    started = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    if config.rounding == "gptq" and data is None:
        raise OptionError("rounding", "gptq needs calibration samples (data=, --data)")
    if config.smooth is not None and data is None:
        raise OptionError("smooth", "needs calibration samples (data=, --data): the activations' maxima per channel")
    if data is not None and config.rounding != "gptq" and config.smooth is None:
        raise OptionError("rounding", f"{config.rounding}: samples (data=, --data) are read only by rounding gptq and --smooth")
    model = open_model(src, dst)
    plans, specs, already = plan_model(model, config)
    ready: dict[str, QuantizedTensor] = {}
    notes: dict[str, str] = {}
    samples = 0
    smoothing: Smoothing | None = None
    if config.smooth is not None:
        assert data is not None
        try:
            smoothing = smooth_weights(model, specs, config, data, stage=stage)
        except QuantrsError as exc:
            exc.about(file=src)
            raise
        samples = smoothing.samples
    if config.rounding == "gptq":
        assert data is not None
        try:
            ready, notes, samples = compensate_weights(model, specs, config, data, factors, stage=stage)
        except QuantrsError as exc:
            exc.about(file=src)
            raise
    metadata = {
        "quantrs.bits": str(config.bits),
        "quantrs.scheme": "symmetric" if config.symmetric else "asymmetric",
        "quantrs.granularity": _granularity(config),
        "quantrs.range": ", ".join(sorted({s.range for s in specs.values()})),
        "quantrs.storage": _storage_names(specs),
        **({"quantrs.mode": "dynamic"} if config.dynamic else {}),
        **({"quantrs.rounding": f"gptq ({len(ready)} weights)"} if config.rounding == "gptq" else {}),
        **({"quantrs.smooth": smoothing.summary()} if smoothing is not None else {}),
    }
    edit = _dynamic_edit(specs) if config.dynamic else None
    scaled = smoothing.row_scales if smoothing is not None else {}
    done = rewrite_and_write(
        model, dst, specs, config, metadata=metadata, edit=edit, progress=progress, ready=ready, scaled=scaled
    )
    stream = done.stream
    smoothed = smoothing.notes if smoothing is not None else {}
    reports = [_tensor_report(p, stream.results.get(p.name), notes.get(p.name), smoothed.get(p.name)) for p in plans]
    return QuantizeReport(
        input=str(src),
        output=str(dst),
        files_written=[str(p) for p in done.files],
        bits=config.bits,
        per_channel=config.per_channel,
        block_size=config.blocks,
        symmetric=config.symmetric,
        storage=_storage_names(specs),
        opset_before=done.opset_before,
        opset_after=done.opset_after,
        opset_converted=done.opset_after != done.opset_before,
        input_bytes=model.total_bytes,
        output_bytes=sum(p.stat().st_size for p in done.files),
        float_weight_bytes=sum(model.weights.info(n).nbytes for n in specs),
        quantized_weight_bytes=stream.quantized_bytes,
        quantized_count=len(specs),
        skipped_count=len(plans) - len(specs),
        seconds=round(time.perf_counter() - started, 4),
        tensors=reports,
        already_quantized=already,
        rounding=config.rounding,
        samples=samples,
        notes=_format_notes(config, plans) + ([smoothing.summary()] if smoothing is not None else []),
    )


def _dynamic_edit(specs: dict[str, DQSpec]) -> GraphEdit:
    """--dynamic's graph edit (MatMulInteger), imported only then: every other run of the
    command would compile and import quantrs.dynamic for nothing (start-up is a share of
    quantizing a small model)."""
    from quantrs.dynamic import DynamicEdit

    return DynamicEdit({n: s for n, s in specs.items() if s.dynamic})


def _format_notes(config: QuantizeConfig, plans: list[TensorPlan]) -> list[str]:
    """What the report must say beside the figures: with matmulnbits, the weights written as
    QDQ instead (a CNN's are all of them), and why."""
    fallback = [p for p in plans if p.quantize and p.not_nbits]
    if not fallback:
        return []
    whys = sorted({p.not_nbits for p in fallback})
    shown = "; ".join(whys[:3]) + (f"; {len(whys) - 3} more reasons" if len(whys) > 3 else "")
    return [f"{len(fallback)} of {sum(p.quantize for p in plans)} quantized weights are QDQ, not MatMulNBits ({shown})"]


def open_model(src: Path, dst: Path) -> LoadedModel:
    """Load the input for writing `dst`: refuses an output that is the input (or a folder), or
    whose data file would overwrite the input's weights."""
    began = time.perf_counter()
    check_paths(src, dst)
    model = load_model(src)
    logger.info(
        "loaded %s: %d nodes, %d stored tensors, %.1f MB file, in %.3f s",
        src,
        len(model.proto.graph.node),
        len(model.weights),
        model.file_size / 1e6,
        time.perf_counter() - began,
    )
    _check_overwrites(model, dst)
    return model


def check_output(model: LoadedModel, dst: Path) -> None:
    """The checks open_model makes of its output, for a further output of the same run (auto's
    closest model): not the input, not a folder, in a folder, and neither it nor its data file
    one of the files the input reads."""
    check_paths(model.path, dst)
    _check_overwrites(model, dst)


def plan_model(model: LoadedModel, config: QuantizeConfig) -> tuple[list[TensorPlan], dict[str, DQSpec], str]:
    """The plan of every stored tensor, the storage of those quantized, and what the model
    already holds quantized ("" if nothing). Raises when nothing is left to quantize, or when
    `config` asks for --dynamic and no weight is a MatMul weight (OptionError on dynamic)."""
    src = model.path
    index = GraphIndex(model.proto.graph)
    plans = plan_weights(model.proto.graph, model.weights, config, index)
    specs = {p.name: dq_spec(p, config) for p in plans if p.quantize}
    logger.info(
        "plan: %d of %d tensors quantized (%d in Constant nodes, %d inside bodies), %d left as they are",
        len(specs),
        len(plans),
        sum(p.quantize and p.kind == "constant" for p in plans),
        sum(p.quantize and p.scope != MAIN for p in plans),
        len(plans) - len(specs),
    )
    for p in plans:
        logger.debug("  %s %s: %s", p.name, list(p.shape), ("quantize: " if p.quantize else "skip: ") + p.reason)
    already = _describe_quantized(quantized_ops(index))
    if config.dynamic and specs and not any(s.dynamic for s in specs.values()):
        raise OptionError(
            "dynamic", f"{src} has no 2-D float32/float16 MatMul weight for MatMulInteger (nor LSTM weights for "
            "DynamicQuantizeLSTM): quantize it without --dynamic "
            "(weight-only), or calibrate it (static INT8, with samples) for Conv models"
        )  # fmt: skip
    if not specs:
        if already:
            raise AlreadyQuantizedError(f"{src}: already quantized ({already}) and no float weight is left to quantize")
        raise UnsupportedModelError(f"{src}: {_nothing_to_quantize(plans)}")
    if already:
        logger.warning("%s: already quantized (%s); quantizing the %d float weight(s) left", src, already, len(specs))
    return plans, specs, already


@dataclass
class Written:
    files: list[Path]
    stream: WeightStream
    opset_before: int
    opset_after: int


def rewrite_and_write(
    model: LoadedModel,
    dst: Path,
    specs: dict[str, DQSpec],
    config: QuantizeConfig,
    *,
    metadata: dict[str, str],
    edit: GraphEdit | None = None,
    progress: ProgressCallback | None = None,
    ready: Mapping[str, QuantizedTensor] | None = None,
    scaled: Mapping[str, np.ndarray] | None = None,
) -> Written:
    """Rewrite the graph for `specs` (and `edit`), then stream the output to `dst`, quantizing
    each weight when the writer reaches it (or taking it from `ready`, quantized beforehand;
    a weight in `scaled` has its rows multiplied by those factors first: --smooth).
    `model.proto` is edited in place."""
    src = model.path
    proto = model.proto
    detach_nested_weights(proto.graph, specs)
    embedded = model.weights.embed_nested_external(proto.graph)  # what stays float, out of the input's data file
    if embedded:
        logger.info("read %.1f MB of external data held by Constant nodes or bodies into the graph", embedded / 1e6)

    opset_before = model.opset
    target = max(opset_before, required_opset(specs.values()), edit.min_opset if edit is not None else 0)
    if target == opset_before:
        logger.info("opset %d kept", target)
    else:
        logger.info("converting %s from opset %d to %d", src, opset_before, target)
        try:
            proto = convert_opset(proto, target)
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{src}: {exc}") from None
    merge_metadata(
        proto,
        {
            "quantrs.version": __version__,
            **metadata,
            **({"quantrs.opset_converted_from": str(opset_before)} if target != opset_before else {}),
        },
    )
    dq = insert_weight_dq(proto.graph, specs)
    stream = WeightStream(model, specs, dq, config, progress, ready=dict(ready or {}), scaled=dict(scaled or {}))
    try:  # before any edit: rebuilding a node list copies the bodies, and the codes go in theirs
        stream.fill_bodies()
    except QuantrsError as exc:
        exc.about(file=src)
        raise
    extra = edit.apply(proto.graph, stream) if edit is not None else []
    _import_microsoft_domain(proto)
    if config.check_output:
        _check(proto, dq, [t.header for t in extra], src)

    external = True if (config.external_data or _has_external_data(model)) else None
    out_tensors = stream.out_tensors(proto.graph) + extra
    del proto.graph.initializer[:]
    writing = time.perf_counter()
    try:
        written = write_model(proto, out_tensors, dst, external_data=external)
    except QuantrsError as exc:
        if isinstance(exc, OutputError):  # about the output file, which it names
            raise
        exc.about(file=src)
        raise

    logger.info(
        "wrote %s in %.3f s (quantizing %.3f s of it, %d weights, %.1f MB -> %.1f MB; mapped pages released after each)",
        ", ".join(str(p) for p in written), time.perf_counter() - writing, stream.quantize_seconds, len(specs),
        stream._total_bytes / 1e6, stream.quantized_bytes / 1e6,
    )  # fmt: skip
    return Written(written, stream, opset_before, target)


def dq_spec(plan: TensorPlan, config: QuantizeConfig) -> DQSpec:
    """How a planned weight is stored. A table read by Gather keeps one code per byte (Gather
    has no 4-bit type), except one read by GatherBlockQuantized, which takes packed INT4/UINT4
    codes; float16 weights get float16 scales; bfloat16 ones a float32 scale and a Cast back,
    since onnxruntime has no DequantizeLinear producing bfloat16."""
    assert plan.bits is not None
    packed = (config.native_int4 and not plan.lookups and not plan.nbits) or (plan.gather_block and plan.bits == 4)
    # MatMulInteger's weights: signed INT8, zero point 0, as onnxruntime's u8s8 kernels take them.
    scheme = scheme_for(plan.bits, symmetric=config.symmetric or plan.dynamic, native_int4=packed)
    data_type = onnx.TensorProto.DataType.Value(plan.dtype)
    return DQSpec(
        plan.name,
        plan.shape,
        scheme,
        plan.axis,
        scale_type=onnx.TensorProto.FLOAT16 if data_type == onnx.TensorProto.FLOAT16 else onnx.TensorProto.FLOAT,
        cast_to=onnx.TensorProto.BFLOAT16 if data_type == onnx.TensorProto.BFLOAT16 else None,
        nested=plan.kind != "initializer" or plan.scope != MAIN,
        in_body=plan.scope != MAIN,
        lookups=plan.lookups,
        dense=plan.dense,
        block_size=plan.block_size,
        range=config.range_for(plan.bits, plan.block_size is not None),
        nbits=plan.nbits,
        gather_block=plan.gather_block,
        dynamic=plan.dynamic,
        # Unset: 0 (float compute). Level 4 (int8 activations) was slower or no faster on MiniLM
        # and on 2- and 22-layer decoders, at the same accuracy (bench/RESULTS.md, issue 21.6).
        accuracy_level=0 if config.accuracy_level is None else config.accuracy_level,
    )


def _granularity(config: QuantizeConfig) -> str:
    if config.blocks is not None:
        return f"blocks of {config.blocks}" + (" (MatMulNBits)" if config.quant_format == "matmulnbits" else "")
    return "per-channel" if config.per_channel else "per-tensor"


def _describe_quantized(ops: dict[str, int]) -> str:
    return ", ".join(f"{n} {op}" for op, n in ops.items())


def dry_run(
    input_path: str | os.PathLike[str],
    config: QuantizeConfig | None = None,
    *,
    output_path: str | os.PathLike[str] | None = None,
) -> PlanReport:
    """What quantize() would do with each initializer (bits, axis, or why not), writing nothing."""
    config = config or QuantizeConfig()
    model = load_model(input_path)
    entries = [
        PlanEntry(p.name, list(p.shape), p.dtype, p.quantize, p.reason, p.bits, p.axis, p.kind, p.scope)
        for p in plan_weights(model.proto.graph, model.weights, config)
    ]
    return PlanReport(str(input_path), None if output_path is None else str(output_path), entries)


@dataclass
class _Summary:
    """What the report keeps of a quantized tensor once its codes are written and freed."""

    axis: int | None
    storage: str
    mse: float
    max_abs_error: float
    mse_minmax: float | None
    block_size: int | None


@dataclass
class WeightStream:
    """Produces the output's initializers in file order, quantizing each weight when reached."""

    model: LoadedModel
    specs: dict[str, DQSpec]
    dq: dict[str, DQTensors]
    config: QuantizeConfig
    progress: ProgressCallback | None
    results: dict[str, _Summary] = field(default_factory=dict)
    quantized_bytes: int = 0
    quantize_seconds: float = 0.0
    _current: tuple[str, QuantizedTensor] | None = None
    _done_bytes: int = 0
    _total_bytes: int = 0
    _scratch: Scratch = field(default_factory=Scratch)
    keep_scales: set[str] = field(default_factory=set)  # weights whose scales are kept once written
    scales: dict[str, np.ndarray] = field(default_factory=dict)
    ready: dict[str, QuantizedTensor] = field(default_factory=dict)  # quantized beforehand (gptq)
    scaled: dict[str, np.ndarray] = field(default_factory=dict)  # row factors applied before quantizing (--smooth)

    def __post_init__(self) -> None:
        self._total_bytes = sum(self.model.weights.info(n).nbytes for n in self.specs)

    def weight_array(self, name: str) -> np.ndarray:
        """A stored float tensor of the input (quantrs.edit.EditContext)."""
        return self.model.weights.array(name)

    def out_tensors(self, graph: onnx.GraphProto) -> list[OutTensor]:
        """Kept float tensors first (headers from `graph`), then each weight's replacements
        (those of the main graph: a body's own are filled in by fill_bodies)."""
        out = [
            OutTensor(_bare(header), self._kept_payload(header.name))
            if header.name in self.model.weights
            else OutTensor(header, None)
            for header in graph.initializer
        ]  # fmt: skip  # (tensors the rewrite made hold their values)
        for name, spec in self.specs.items():
            if not self.dq[name].in_body:
                out += self._replacements(name, spec, self.dq[name])
        return out

    def fill_bodies(self) -> None:
        """Quantize the weights of If/Loop/Scan bodies now and put their codes into the bodies'
        own initializers (in memory: the writer streams only the main graph's)."""
        for name, spec in self.specs.items():
            if self.dq[name].in_body:
                for piece in self._replacements(name, spec, self.dq[name]):
                    assert piece.payload is not None
                    piece.header.raw_data = memoryview(piece.payload.produce()).cast("B").tobytes()  # type: ignore[arg-type]  # ndarray is a buffer; numpy's stubs say so from Python 3.12
                    if piece.payload.release is not None:
                        piece.payload.release()

    def _replacements(self, name: str, spec: DQSpec, tensors: DQTensors) -> list[OutTensor]:
        """Codes, scale (and zero point) of one weight. The weight is quantized when the writer
        asks for its codes, and finished (reported, pages released) after the last piece."""
        out = [
            OutTensor(tensors.codes, Payload(spec.code_bytes, lambda: self._quantized(name).data)),
            OutTensor(tensors.scale, Payload(spec.scale_bytes, lambda: self._scales(name, spec))),
        ]
        if tensors.zero_point is not None:
            out.append(OutTensor(tensors.zero_point, Payload(spec.zero_point_bytes, lambda: self._zero_points(name))))
        last = out[-1].payload
        assert last is not None  # every piece above has a payload
        last.release = lambda: self._finish(name)
        return out

    def _kept_payload(self, name: str) -> Payload | None:
        weights = self.model.weights
        raw = weights.payload(name)
        if raw is None:
            return None
        return Payload(raw.size, lambda: _present(weights.payload(name)), lambda: weights.release(name))

    def _quantized(self, name: str) -> QuantizedTensor:
        if self._current is None or self._current[0] != name:
            spec = self.specs[name]
            began = time.perf_counter()
            qt = self.ready.pop(name, None)
            if qt is None:
                array = self.model.weights.array(name)
                if name in self.scaled:  # W' = diag(s) W, in float32, back to the weight's type
                    array = (array.astype(np.float32) * self.scaled[name][:, None]).astype(array.dtype)
                qt = quantize_weight(array, spec, self.config, scratch=self._scratch)
            if spec.code_offset:
                qt = _offset_codes(qt, spec.code_offset)
            if spec.padding:
                qt = _padded_codes(qt, spec)
            took = time.perf_counter() - began
            self.quantize_seconds += took
            logger.debug("  quantized %s %s in %.4f s: MSE %.3g", name, list(spec.shape), took, qt.mse)
            self._current = (name, qt)
        return self._current[1]

    def _scales(self, name: str, spec: DQSpec) -> np.ndarray:
        # C order: MatMulNBits' scale is a transposed view (quantize_matmulnbits)
        scale = self._quantized(name).scale
        return as_float16(scale) if spec.scale_type == onnx.TensorProto.FLOAT16 else scale.astype(np.float32, order="C")

    def _zero_points(self, name: str) -> np.ndarray:
        qt = self._quantized(name)
        # codes as bytes, like the weights (MatMulNBits' are packed already; its scheme is not)
        zero_points = qt.zero_point.astype(np.uint8, copy=False)
        return kernels.pack4(zero_points) if qt.scheme.packed else zero_points

    def _finish(self, name: str) -> None:
        qt = self._quantized(name)
        self.results[name] = _Summary(
            qt.axis, self.specs[name].storage_name, qt.mse, qt.max_abs_error, qt.mse_minmax, self.specs[name].block_size
        )
        self.quantized_bytes += self.specs[name].stored_bytes
        if name in self.keep_scales:
            self.scales[name] = qt.scale.astype(np.float32)
        self._current = None
        self.model.weights.release(name)
        self._done_bytes += self.model.weights.info(name).nbytes
        if self.progress is not None:
            self.progress(len(self.results), len(self.specs), self._done_bytes, self._total_bytes)


def quantize_weight(
    array: np.ndarray,
    spec: DQSpec,
    config: QuantizeConfig,
    *,
    scratch: Scratch | None = None,
    compensation: Compensation | None = None,
) -> QuantizedTensor:
    """One weight's codes and parameters as `spec` stores them (MatMulNBits' layout, or
    DequantizeLinear's); with `scratch`, the codes live in its buffers until the next call."""
    try:
        if spec.nbits:
            assert spec.block_size is not None
            return quantize_matmulnbits(
                array, spec.scheme, spec.block_size, range=spec.range, name=spec.name, n_threads=config.n_threads,
                half_scale=spec.scale_type == onnx.TensorProto.FLOAT16, compensation=compensation, scratch=scratch,
            )  # fmt: skip
        return quantize_tensor(
            array, spec.scheme, spec.axis, name=spec.name, n_threads=config.n_threads, scratch=scratch,
            half_scale=spec.scale_type == onnx.TensorProto.FLOAT16, block_size=spec.block_size, range=spec.range,
            compensation=compensation,
        )  # fmt: skip
    except QuantrsError as exc:  # the caller names the file
        exc.about(tensor=spec.name)
        raise


def compensate_weights(
    model: LoadedModel,
    specs: Mapping[str, DQSpec],
    config: QuantizeConfig,
    data: SampleSource,
    cache: dict[Source, Factor] | None,
    *,
    stage: StageCallback | None = None,
) -> tuple[dict[str, QuantizedTensor], dict[str, str], int]:
    """The weights GPTQ applies to, quantized with compensated codes from the samples'
    Hessians (quantrs.gptq), a group of Hessians at a time (their factors dropped with the
    group, unless `cache` keeps them by source for the next call); for every quantized weight
    "" (compensated) or why it is rounded to nearest; how many samples. `stage` hears of each
    step (see quantize)."""
    from quantrs.gptq import Compensation, collect_hessians, factor, find_targets
    from quantrs.samples import input_specs, load_samples

    def say(doing: str, unit: str, done: int, total: int) -> None:
        if stage is not None:
            stage(doing, unit, done, total)

    began = time.perf_counter()
    say("loading samples", "", 0, 0)
    samples = load_samples(data, input_specs(model.proto))
    if not samples:
        raise ConfigError("gptq: no calibration samples", file=model.path)
    names = [n for n, s in specs.items() if not s.in_body]
    targets, skipped = find_targets(model.proto.graph, names, {n: specs[n].shape for n in names})
    ready: dict[str, QuantizedTensor] = {}
    compensated = [0]

    def compensate(group: Sequence[Target], factors: Mapping[Source, Factor]) -> None:
        if group:
            say("compensating codes", "weights", compensated[0], len(targets))
        for target in group:
            if factors[target.source].active == 0:
                skipped[target.weight] = f"{target.activation} is zero on every sample"
            else:
                compensation = Compensation(factors[target.source], target.transposed)
                ready[target.weight] = quantize_weight(
                    model.weights.array(target.weight), specs[target.weight], config, compensation=compensation
                )
                model.weights.release(target.weight)
            compensated[0] += 1
            say("compensating codes", "weights", compensated[0], len(targets))

    rows = {t.source: t.rows for t in targets.values()}
    known = {a: f for a, f in (cache or {}).items() if rows.get(a) == f.u.shape[0]}
    compensate([t for t in targets.values() if t.source in known], known)
    missing = {n: t for n, t in targets.items() if t.source not in known}
    sources, factored = {t.source for t in missing.values()}, [0]
    for hessians, group in collect_hessians(
        model,
        missing,
        samples,
        lambda done, total: say("collecting Hessians", "sample runs" if total > len(samples) else "samples", done, total),
    ):
        factors = {}
        for name in list(hessians):
            say("factoring Hessians", "activations", factored[0], len(sources))
            factors[name] = factor(hessians.pop(name))  # each H freed once factored
            factored[0] += 1
        compensate(group, factors)
        if cache is not None:
            _keep_factors(cache, factors)
    logger.info(
        "gptq: %d weights compensated on %d sample(s) in %.2f s; %d rounded to nearest",
        len(ready),
        len(samples),
        time.perf_counter() - began,
        len(skipped),
    )
    notes = dict.fromkeys(ready, "") | {n: why for n, why in skipped.items()}  # "" compensated, else why not
    notes |= {n: "inside a body" for n, s in specs.items() if s.in_body}
    return ready, notes, len(samples)


def _keep_factors(cache: dict[Source, Factor], factors: Mapping[Source, Factor]) -> None:
    """Add `factors` to `cache` while the cache fits the Hessians' budget (gptq.HESSIAN_BYTES);
    the factors left out are recomputed by the next compensate_weights that needs them."""
    from quantrs.gptq import HESSIAN_BYTES

    held = sum(f.u.nbytes for f in cache.values())
    for name, f in factors.items():
        if held + f.u.nbytes <= HESSIAN_BYTES:
            cache[name] = f
            held += f.u.nbytes


def smooth_weights(
    model: LoadedModel,
    specs: Mapping[str, DQSpec],
    config: QuantizeConfig,
    data: SampleSource,
    *,
    stage: StageCallback | None = None,
) -> Smoothing:
    """--smooth: the migration chosen on the samples (quantrs.smooth), its graph edit applied to
    `model.proto` (norm gains folded, Muls inserted); the weights' row factors are applied when
    the writer reaches them (rewrite_and_write's `scaled`)."""
    from quantrs.samples import input_specs, load_samples
    from quantrs.smooth import plan_smoothing

    if stage is not None:
        stage("loading samples", "", 0, 0)
    samples = load_samples(data, input_specs(model.proto))
    if not samples:
        raise ConfigError("smooth: no calibration samples", file=model.path)
    assert config.smooth is not None
    smoothing = plan_smoothing(model, specs, config.smooth, config.per_channel, samples, stage=stage)
    smoothing.apply(model.proto.graph, model.weights.array)
    return smoothing


def _offset_codes(qt: QuantizedTensor, offset: int) -> QuantizedTensor:
    """Signed 8-bit codes stored as UINT8: each code byte + `offset` (mod 256: two's complement
    q becomes q + offset) and the zero points moved with them, so the values are unchanged. The
    codes are shifted where they are (the scratch buffer)."""
    assert not qt.scheme.packed
    np.add(qt.data, np.uint8(offset), out=qt.data)
    storage = Scheme(qt.scheme.bits, signed=False, symmetric=qt.scheme.symmetric, packed=False)
    return dataclasses.replace(qt, scheme=storage, zero_point=qt.zero_point + offset)


def _padded_codes(qt: QuantizedTensor, spec: DQSpec) -> QuantizedTensor:
    """The codes padded to whole blocks along the block axis (DQSpec.padding), each added code
    its block's zero point, so that it dequantizes to 0 (a copy: the scratch buffers hold the
    weight's own codes). The scales, zero points and errors are the weight's."""
    assert spec.axis is not None
    axis, blocks = spec.axis, spec.param_dims
    count = math.prod(spec.shape)
    codes = kernels.unpack4(qt.data, count, signed=False) if qt.scheme.packed else qt.data.view(np.uint8)
    last = np.take(qt.zero_point.reshape(blocks), [blocks[axis] - 1], axis=axis) & 0xFF  # the short block's
    fill = list(spec.shape)
    fill[axis] = spec.padding
    padded = np.concatenate([codes.reshape(spec.shape), np.broadcast_to(last.astype(np.uint8), fill)], axis=axis)
    data = kernels.pack4(padded) if qt.scheme.packed else padded.reshape(-1)
    return dataclasses.replace(qt, data=data)


def _present(raw: np.ndarray | None) -> np.ndarray:
    assert raw is not None  # the payload was there when the layout was made
    return raw


def _storage_names(specs: dict[str, DQSpec]) -> str:
    """The ONNX types the codes are stored as, each named once: "UINT8", "UINT8+UINT4" (mixed
    bit widths), "UINT4 (MatMulNBits)", or "UINT4 (1 of 3 as MatMulNBits)" when matmulnbits
    wrote the others as QDQ or GatherBlockQuantized (each tensor's own storage says which)."""
    forms: dict[str, list[bool]] = {}
    for spec in specs.values():
        forms.setdefault(spec.storage_name.split(" ")[0], []).append(bool(spec.nbits))
    names = []
    for code_type in sorted(forms, key=lambda n: ("4" in n, n)):
        nbits, count = sum(forms[code_type]), len(forms[code_type])
        names.append(
            code_type + ("" if not nbits else " (MatMulNBits)" if nbits == count else f" ({nbits} of {count} as MatMulNBits)")
        )
    return "+".join(names)


def _bare(header: onnx.TensorProto) -> onnx.TensorProto:
    """The header of a kept tensor without any reference to where its bytes came from."""
    t = onnx.TensorProto()
    t.CopyFrom(header)
    if t.data_location == onnx.TensorProto.EXTERNAL:
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
    t.ClearField("raw_data")
    return t


def _has_external_data(model: LoadedModel) -> bool:
    return bool(model.external_files)


def check_paths(src: Path, dst: Path) -> None:
    """Refuse, before any work, an output that is the input, a folder, or in no folder (its
    folder missing, or a file)."""
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise OutputError(f"{dst}: the output path is the input model; choose another output")
    if dst.exists() and dst.is_dir():
        raise OutputError(f"{dst}: the output path is a folder")
    problem = folder_problem(dst)
    if problem is not None:
        raise OutputError(f"{dst}: {problem}")


def _check_overwrites(model: LoadedModel, dst: Path) -> None:
    """Refuse an output whose model or data file is one of the files the input reads (its
    model file or an external-data file), whether by the same path, a symbolic link or a hard
    link: replacing it would destroy the input."""
    reads = input_files(model)
    for out in output_files(dst):
        for read in reads:
            if same_file(out, read):
                what = "the input model" if read == model.path else f"the input's external data file {read.name}"
                role = "the output path" if out == dst else f"its external data file {out.name}"
                raise OutputError(f"{dst}: {role} is {what}; writing it would destroy the input; choose another output")


def input_files(model: LoadedModel) -> list[Path]:
    """Every file `model` is read from: its model file, then its external-data files."""
    return [model.path, *(model.path.parent / f for f in sorted(model.external_files))]


def output_files(dst: Path) -> list[Path]:
    """Every file writing `dst` may create or replace: the model, and its external data."""
    return [dst, dst.parent / (dst.name + ".data")]


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (by path, symbolic or hard link); False when either is
    missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be read): not the same file
        return False


def _import_microsoft_domain(proto: onnx.ModelProto) -> None:
    """The com.microsoft opset import, once the rewrite or the edit wrote one of its ops in any
    scope (MatMulNBits, GatherBlockQuantized, DynamicQuantizeLSTM)."""
    if any(e.domain == MICROSOFT_DOMAIN for e in proto.opset_import):
        return
    if any(n.domain == MICROSOFT_DOMAIN for scope in walk_graphs(proto.graph) for n in scope.graph.node):
        proto.opset_import.append(onnx.helper.make_opsetid(MICROSOFT_DOMAIN, 1))


def _check(model: onnx.ModelProto, dq: dict[str, DQTensors], extra: list[onnx.TensorProto], src: Path) -> None:
    """onnx.checker on the rewritten graph, with initializers stood in for by inputs (their
    bytes are not in memory yet). A problem the input file has too is its own (qdq.check_model:
    the input is read again for that, only when the output fails)."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    for tensors in dq.values():
        if not tensors.in_body:
            skeleton.graph.initializer.extend(tensors.all())
    skeleton.graph.initializer.extend(extra)
    check_model(skeleton, src, as_given=lambda: checker_problem(load_model(src).proto))


_FLOAT_NAMES = {onnx.TensorProto.DataType.Name(t) for t in FLOAT_TYPES}


def _nothing_to_quantize(plans: list[TensorPlan]) -> str:
    floats = [p for p in plans if p.dtype in _FLOAT_NAMES]
    if not floats:
        return "no float weights to quantize"
    examples = "; ".join(f"{p.name!r}: {p.reason}" for p in floats[:3])
    return f"none of the {len(floats)} float tensors can be quantized ({examples})"


def _tensor_report(
    plan: TensorPlan, summary: _Summary | None, gptq: str | None = None, smoothed: str | None = None
) -> TensorReport:
    """`gptq`: with rounding gptq, "" for compensated codes, else why they are nearest;
    `smoothed`: with --smooth, what the migration did to the weight's input."""
    if summary is None:
        reason = plan.reason + ("" if smoothed is None else f"; {smoothed}")
        return TensorReport(plan.name, list(plan.shape), plan.dtype, False, reason, kind=plan.kind, scope=plan.scope)
    return TensorReport(
        kind=plan.kind,
        scope=plan.scope,
        name=plan.name,
        shape=list(plan.shape),
        dtype=plan.dtype,
        quantized=True,
        reason=plan.reason
        + ("" if gptq is None else "; codes by gptq" if not gptq else f"; rounded to nearest (gptq: {gptq})")
        + ("" if smoothed is None else f"; {smoothed}"),
        axis=summary.axis,
        storage=summary.storage,
        mse=summary.mse,
        max_abs_error=summary.max_abs_error,
        mse_minmax=summary.mse_minmax,
        block_size=summary.block_size,
        gptq=gptq,
    )
