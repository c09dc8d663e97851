"""`quantrs auto`: the smallest model whose outputs stay within a budget of the float model's.

    sensitivity (one pass: every weight's local error at each width, quantrs.sensitivity)
      -> assignment (the widths that minimise bytes under the predicted error)
      -> verification (build the candidate, run it on held-out samples) -> repair -> ...

**How local errors add up.** A weight quantized at width c adds noise to its consumer's output
of relative energy r_w(c) (quantrs.sensitivity). Treating the layers' noises as independent and
each passing to the output with about the same gain, the output's relative squared error is

    r_out ~= r_0 + k * sum_w r_w(c_w)

with one model-wide gain k and a floor r_0 that no width removes (with --static, the
activations' own error; 0 for weight-only models). The metrics follow: relative L2 = sqrt(r_out), cosine
~= 1 / sqrt(1 + r_out). k starts at 1 and r_0 at 0; both are refitted to every candidate
measured (least squares over (sum r_w, measured r_out); k alone, through the origin, for
weight-only models), so each candidate is chosen with the
gain the model actually showed. The report gives predicted and measured figures side by side
for every candidate.

**Assignment** minimises bytes subject to r_0 + k * sum r_w(c_w) <= r_budget, a multiple-choice
knapsack, by the greedy on error removed per byte added: every weight starts at its narrowest
width, and the upgrade with the best ratio is taken until the prediction meets the budget; a
last pass takes back upgrades the budget does not need, largest first.

**Verification and repair.** A candidate missing the budget refits k and is re-assigned; if that
changes nothing, the weight contributing most is promoted (4 -> 8 -> float). A candidate
meeting it refits k too, and a smaller assignment it allows is tried. At most `max_evaluations`
full evaluations; the smallest candidate that met the budget is written, or, when none did,
nothing is written at the output path and the closest one goes beside it under a name that says
so (`closest_path`: q.onnx -> q.closest.onnx), with how far it misses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quantrs.config import WIDTHS, AutoConfig, error_budget  # noqa: F401  (declared with every command's options; re-exported)
from quantrs.errors import ConfigError, OutputError, first_line
from quantrs.pipeline import check_output, open_model
from quantrs.report import AutoCandidate, AutoLayer, AutoReport, OutputAgreement
from quantrs.samples import SampleSource, describe_source, input_specs, iter_samples
from quantrs.sensitivity import FLOAT, Sensitivity, measure, width_configs
from quantrs.compare import agreements, run_model

if TYPE_CHECKING:
    from quantrs.config import QuantizeConfig
    from quantrs.model import LoadedModel

__all__ = ["AutoConfig", "auto", "closest_path", "WIDTHS"]

logger = logging.getLogger(__name__)

HELD_OUT_SHARE = 0.25  # of --data, when no --eval-data is given


def auto(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    data: SampleSource,
    config: AutoConfig,
    *,
    eval_data: SampleSource | None = None,
    progress: Callable[[str], None] | None = None,
) -> AutoReport:
    """Write the smallest quantized model of `input_path` that meets `config`'s budget on
    held-out samples (`eval_data`, or the last quarter of `data`); the report says whether it
    did (`met`). When none did, nothing is written at `output_path` (a file already there is
    left as it was): the closest model is written to `closest_path(output_path)` instead, and
    the report names it (`closest`)."""
    started = time.perf_counter()
    src, dst = Path(input_path), Path(output_path)
    model = open_model(src, dst)  # a bad output path fails now, not after the search
    closest = closest_path(dst)
    try:
        check_output(model, closest)  # nor may the closest model overwrite what the input reads
    except OutputError as exc:
        raise OutputError(f"{exc} (auto writes the closest model there when the budget is missed)") from None
    specs = input_specs(model.proto)
    # Samples are held out and counted: a file of [64, D] for an input [N, D] is 64 of them, not one batch.
    samples = list(iter_samples(data, specs, limit=config.max_samples, split_batch=True))
    if eval_data is not None:
        tuning, held_out = samples, list(iter_samples(eval_data, specs, limit=config.max_samples, split_batch=True))
    else:
        if len(samples) < 2:
            raise ConfigError(
                f"auto needs at least 2 samples to hold some out, or --eval-data; {describe_source(data)} gives "
                f"{len(samples)} (a sample is a row of the inputs' dynamic first axis, or an array stacked on a new first axis)",
                file=src,
            )
        cut = len(samples) - max(1, round(len(samples) * HELD_OUT_SHARE))
        tuning, held_out = samples[:cut], samples[cut:]
    if not tuning or not held_out:
        raise ConfigError(f"{src}: no samples to tune on or to evaluate with")
    reference = _run(src, src, held_out)  # first: held-out data the model cannot take fails now
    _say(progress, f"sensitivity of every weight on {len(tuning)} sample(s)")
    widths = config.widths
    configs = width_configs(widths, config.weights, config.block_size, static=config.static)
    sensitivity = measure(model, configs, tuning, with_float=FLOAT in widths)
    if not sensitivity.layers and not sensitivity.fixed:
        raise ConfigError(f"{src}: no weight whose width auto could choose")
    if not sensitivity.layers:  # every weight in a body: one candidate, at the widest width
        logger.warning("%s: every weight is inside an If/Loop/Scan body: one candidate at the widest width", src)

    search = _Search(sensitivity, widths, config.error_budget, floor=config.static)
    factors: dict = {}  # with gptq: the Hessians' factors, shared by every candidate built
    with tempfile.TemporaryDirectory(prefix=".quantrs-auto-", dir=dst.parent) as work:

        def build(assignment: Mapping[str, str], step: int) -> Path:
            widths = ", ".join(f"{n} at {w}" + ("" if w == FLOAT else " bits") for w, n in _counts(assignment).items())
            _say(progress, f"evaluating candidate {step + 1} ({widths})")
            path = Path(work) / f"candidate{step}.onnx"
            _build(src, path, assignment, config, configs, tuning, sensitivity.fixed, factors)
            return path

        outcome = _verify(search, config, build, lambda path: agreements(reference, _run(src, path, held_out)))
        target = dst if outcome.met else closest  # a missed budget leaves nothing at the output path
        if outcome.kept is not None and not outcome.kept.with_name(outcome.kept.name + ".data").exists():
            os.replace(outcome.kept, target)  # a single file moves as it is; external data names its file: rebuilt
            files = [target]
        else:
            _say(progress, "writing the chosen model" if outcome.met else "writing the closest model")
            files = _build(src, target, outcome.chosen, config, configs, tuning, sensitivity.fixed, factors)
    chosen = outcome.chosen
    layers = [
        AutoLayer(
            layer.name,
            layer.consumer,
            chosen[layer.name],
            {w: layer.errors[w] for w in widths},
            {w: layer.bytes[w] for w in widths},
            layer.note,
        )
        for layer in sensitivity.layers
    ]
    narrowest = {layer.name: widths[0] for layer in sensitivity.layers}
    int8 = {layer.name: "8" for layer in sensitivity.layers} if "8" in widths else None
    return AutoReport(
        input=str(src),
        output=str(dst),
        files_written=[str(p) for p in files],
        budget={
            k: v
            for k, v in (
                ("min_cosine", config.min_cosine),
                ("max_relative_error", config.max_relative_error),
                ("min_top1", config.min_top1),
            )
            if v is not None
        },
        choices=list(widths),
        block_size=config.block_size,
        static=config.static,
        met=outcome.met,
        miss=outcome.miss,
        chosen=outcome.step,
        candidates=outcome.candidates,
        layers=layers,
        fixed=sensitivity.fixed,
        weight_bytes=search.bytes(chosen),
        float_weight_bytes=sum(model.weights.info(layer.name).nbytes for layer in sensitivity.layers),
        uniform_int8_weight_bytes=search.bytes(int8) if int8 else None,
        narrowest_weight_bytes=search.bytes(narrowest),
        input_bytes=model.total_bytes,
        output_bytes=sum(p.stat().st_size for p in files),
        tuning_samples=len(tuning),
        sensitivity_samples=sensitivity.samples,
        held_out_samples=len(held_out),
        evaluations=len(outcome.candidates),
        sensitivity_seconds=round(sensitivity.seconds, 3),
        gain=search.gain,
        floor=search.floor,
        seconds=round(time.perf_counter() - started, 3),
        quant_format=config.weights.quant_format,
        rounding=config.weights.rounding,
        compensated=_gptq_reach(model, sensitivity) if config.weights.rounding == "gptq" else 0,
        closest=None if outcome.met else str(closest),
    )


def closest_path(output: str | os.PathLike[str]) -> Path:
    """Where auto writes the closest model when the budget is missed: beside the output, its
    name saying so (q.onnx -> q.closest.onnx; external data, if any, in q.closest.onnx.data)."""
    path = Path(output)
    return path.with_name(f"{path.stem}.closest{path.suffix}")


@dataclass
class _Outcome:
    candidates: list[AutoCandidate]
    step: int  # the candidate chosen: the smallest that met the budget, else the closest
    chosen: dict[str, str]
    met: bool
    miss: float
    kept: Path | None  # its file, when still on disk


def _verify(
    search: _Search,
    config: AutoConfig,
    build: Callable[[Mapping[str, str], int], Path],
    evaluate: Callable[[Path], list[OutputAgreement]],
) -> _Outcome:
    """The verification loop: build and evaluate candidates, refit the error model, re-assign
    or promote, until a candidate meets the budget and nothing smaller is worth trying, or the
    evaluations run out. Only the candidate that may be chosen stays on disk."""
    candidates: list[AutoCandidate] = []
    best: tuple[int, dict[str, str], Path] | None = None  # the smallest that met
    closest: tuple[float, int, dict[str, str], Path] | None = None
    tried: set[tuple[str, ...]] = set()
    on_disk: set[Path] = set()
    assignment = search.assign()
    for step in range(config.max_evaluations):
        tried.add(search.key(assignment))
        path = build(assignment, step)
        outputs = evaluate(path)
        met = all(r.passed for r in config.thresholds.evaluate(outputs))
        predicted = search.predicted(assignment)
        candidates.append(
            AutoCandidate(
                index=step, widths=_counts(assignment), weight_bytes=search.bytes(assignment), file_bytes=_file_bytes(path),
                predicted_cosine=_cosine(predicted), predicted_relative_error=math.sqrt(predicted), outputs=outputs, met=met,
            )
        )  # fmt: skip
        miss = _miss(outputs, config)
        if met and (best is None or search.bytes(assignment) < search.bytes(best[1])):
            best = (step, dict(assignment), path)
        if closest is None or miss < closest[0]:
            closest = (miss, step, dict(assignment), path)
        keep = best[2] if best is not None else closest[3]
        on_disk.add(path)
        for other in on_disk - {keep}:
            _remove(other)  # disk holds the candidate that may be written, no more
        on_disk = {keep}
        search.refit(assignment, _output_error(outputs))
        following: dict[str, str] | None = search.assign()
        assert following is not None
        if met and search.bytes(following) >= search.bytes(assignment):
            break  # the refitted model allows nothing smaller
        if not met and search.bytes(following) <= search.bytes(assignment):
            following = search.promote(assignment)  # the refit alone does not move: force it
        while following is not None and search.key(following) in tried:
            following = search.promote(following) if not met else None
        if following is None or (best is not None and search.bytes(following) >= search.bytes(best[1])):
            break  # nothing left, or nothing smaller than a model known to meet the budget
        assignment = following
    assert closest is not None
    if best is not None:
        return _Outcome(candidates, best[0], best[1], True, 0.0, best[2] if best[2].exists() else None)
    return _Outcome(candidates, closest[1], closest[2], False, closest[0], closest[3] if closest[3].exists() else None)


class _Search:
    """The error model and the greedy assignment over the measured layers."""

    def __init__(self, sensitivity: Sensitivity, widths: list[str], budget: float, *, floor: bool = False) -> None:
        self.layers = sensitivity.layers
        self.widths = widths
        self.budget = budget
        self.with_floor = floor  # a floor only with --static: weight-only error is the weights' alone
        self.gain = 1.0
        self.floor = 0.0  # error no width removes (activations, with --static)
        self._points: list[tuple[float, float]] = []  # (sum of local errors, measured output error)

    def key(self, assignment: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(assignment[layer.name] for layer in self.layers)

    def local(self, assignment: Mapping[str, str]) -> float:
        return sum(layer.errors[assignment[layer.name]] for layer in self.layers)

    def predicted(self, assignment: Mapping[str, str]) -> float:
        return self.floor + self.gain * self.local(assignment)

    def bytes(self, assignment: Mapping[str, str]) -> int:
        return sum(layer.bytes[assignment[layer.name]] for layer in self.layers)

    def refit(self, assignment: Mapping[str, str], measured: float) -> None:
        """Fit r_out = floor + gain * sum r_w to every candidate measured so far: one point
        gives the gain alone (a floor only for what the weights cannot explain), two or more
        a least-squares line, kept non-negative."""
        self._points.append((self.local(assignment), measured))
        xs = np.array([p[0] for p in self._points])
        ys = np.array([p[1] for p in self._points])
        if self.with_floor and len(self._points) >= 2 and np.ptp(xs) > 0:
            gain, floor = np.polyfit(xs, ys, 1)
            if gain > 0 and floor >= 0:
                self.gain, self.floor = float(gain), float(floor)
                return
        through_origin = float(xs @ ys / (xs @ xs)) if xs @ xs > 0 else 1.0
        if self.with_floor and len(self._points) == 1 and measured > xs[0] > 0:  # more than the weights explain
            self.gain, self.floor = 1.0, float(measured - xs[0])
        else:
            self.gain, self.floor = max(through_origin, 1e-12), 0.0

    def assign(self) -> dict[str, str]:
        """The greedy: upgrades by error removed per byte added until the prediction meets the
        budget, then the upgrades it does not need taken back, largest first."""
        current = {layer.name: self.widths[0] for layer in self.layers}
        while self.predicted(current) > self.budget:
            best, best_ratio = None, -1.0
            for layer in self.layers:
                now = self.widths.index(current[layer.name])
                for nxt in self.widths[now + 1 :]:
                    gained = self.gain * (layer.errors[current[layer.name]] - layer.errors[nxt])
                    cost = max(layer.bytes[nxt] - layer.bytes[current[layer.name]], 1)
                    if gained > 0 and gained / cost > best_ratio:
                        best, best_ratio = (layer.name, nxt), gained / cost
            if best is None:
                break  # nothing left to upgrade: the budget is out of reach of these widths
            current[best[0]] = best[1]
        for layer in sorted(self.layers, key=lambda candidate: -candidate.bytes[current[candidate.name]]):
            for narrower in self.widths[: self.widths.index(current[layer.name])]:
                trial = {**current, layer.name: narrower}
                if self.predicted(trial) <= self.budget:
                    current = trial
                    break
        return self._quantized(current)

    def promote(self, assignment: Mapping[str, str]) -> dict[str, str] | None:
        """The assignment with the weight contributing most to the error one width wider."""
        ranked = sorted(self.layers, key=lambda layer: -layer.errors[assignment[layer.name]])
        for layer in ranked:
            now = self.widths.index(assignment[layer.name])
            if now + 1 < len(self.widths) and layer.errors[assignment[layer.name]] > 0:
                promoted = self._quantized({**assignment, layer.name: self.widths[now + 1]})
                if self.key(promoted) != self.key(assignment):
                    return promoted
        return None

    def _quantized(self, assignment: dict[str, str]) -> dict[str, str]:
        """A model must quantize something: with every weight in float, the least sensitive
        takes the widest integer width."""
        if not self.layers or any(w != FLOAT for w in assignment.values()):
            return assignment
        widest = [w for w in self.widths if w != FLOAT][-1]
        calmest = min(self.layers, key=lambda layer: (layer.errors[widest], -layer.bytes[FLOAT]))
        return {**assignment, calmest.name: widest}


def _build(
    src: Path,
    dst: Path,
    assignment: Mapping[str, str],
    config: AutoConfig,
    configs: Mapping[str, QuantizeConfig],
    tuning: Sequence[Mapping[str, np.ndarray]],
    fixed: list[str],
    factors: dict,
) -> list[Path]:
    """Write `src` with the widths of `assignment` (weight-only, or calibrated static)."""
    base = configs[config.widths[0]] if config.widths[0] != FLOAT else configs["8"]
    widest = max(int(w) for w in config.widths if w != FLOAT)
    widths = {**{name: str(widest) for name in fixed}, **assignment}  # unmeasured weights: the safe side
    floats = tuple(n for n, w in widths.items() if w == FLOAT)
    layer_bits = tuple((n, int(w)) for n, w in widths.items() if w != FLOAT and int(w) != base.bits)
    options = dataclasses.replace(base, exclude=tuple(base.exclude) + floats, layer_bits=layer_bits)
    if config.static:
        from quantrs.calibration import CalibrationConfig, calibrate

        report = calibrate(src, dst, tuning, CalibrationConfig(weights=options), factors=factors)  # factors: as below
        return [Path(p) for p in report.files_written]
    from quantrs.pipeline import quantize

    if options.rounding == "gptq":  # the Hessians' factors are the float model's: computed once
        return [Path(p) for p in quantize(src, dst, options, data=tuning, factors=factors).files_written]
    return [Path(p) for p in quantize(src, dst, options).files_written]


def _gptq_reach(model: LoadedModel, sensitivity: Sensitivity) -> int:
    """How many of the weights auto chose widths for gptq compensates (the rest: nearest)."""
    from quantrs.gptq import find_targets

    names = [layer.name for layer in sensitivity.layers] + list(sensitivity.fixed)
    return len(find_targets(model.proto.graph, names, {n: model.weights.info(n).shape for n in names})[0])


def _output_error(outputs: Sequence[OutputAgreement]) -> float:
    """The worst output's relative squared error."""
    return max((o.relative_l2**2 for o in outputs), default=0.0)


def _cosine(r: float) -> float:
    return 1 / math.sqrt(1 + r)


def _miss(outputs: Sequence[OutputAgreement], config: AutoConfig) -> float:
    """How far the worst output is from the budget (0 when met): the largest shortfall among
    the metrics asked for."""
    worst = 0.0
    for o in outputs:
        if config.min_cosine is not None:
            worst = max(worst, config.min_cosine - o.cosine)
        if config.max_relative_error is not None:
            worst = max(worst, o.relative_l2 - config.max_relative_error)
        if config.min_top1 is not None and o.top1_agreement is not None:
            worst = max(worst, config.min_top1 - o.top1_agreement)
    return worst


def _counts(assignment: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for width in assignment.values():
        out[width] = out.get(width, 0) + 1
    return dict(sorted(out.items()))


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        p.unlink(missing_ok=True)


def _run(src: Path, path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """`path` run on the held-out samples; onnxruntime's refusal said as one line naming `src`."""
    try:
        return run_model(str(path), feeds)
    except Exception as exc:  # onnxruntime's own error types
        what = "the float model" if path == src else "a candidate"
        raise ConfigError(f"{src}: {what} does not run on the held-out samples: {first_line(exc)}") from None


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.exists())


def _say(progress: Callable[[str], None] | None, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(message)
