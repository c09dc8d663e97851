"""The `quantrs` command line (typer). Thin: it parses options, calls the library, renders the
report, and turns every QuantrsError into one line on stderr and exit code 1 (a usage error
into one line naming the flag and exit code 2, see _Commands).

Heavy imports (numpy, onnx, onnxruntime) happen inside the commands so that `quantrs --version`
and `quantrs -h` answer at once.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from quantrs import __version__


class _Commands(TyperGroup):
    """typer's command group, with a usage error printed as one line on stderr naming the flag
    (exit 2) instead of typer's usage block and framed message, which wraps long messages
    over several lines: scripts and logs read one line, as for every other error."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def run() -> Any:
            return super(_Commands, self).main(args, prog_name, complete_var, False, windows_expand_args, **extra)

        if not standalone_mode:
            return run()
        try:
            result = run()
        except _CLICK_EXCEPTION as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                ctx = getattr(exc, "ctx", None)
                hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
                _print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        sys.exit(result if type(result) is int else 0)  # an Exit's code; a command's own return value is not one


class _Command(TyperCommand):
    """typer's command, with its arguments named as usage lines conventionally name them
    (`quantize [OPTIONS] MODEL`, `batch [OPTIONS] MODELS...`), not as typer's `{model}`: the
    metavar is the name in capitals, also in the help's argument panel and usage errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = (param.name or "").upper()

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = f"{param.metavar}..." if param.nargs != 1 else str(param.metavar)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


# click's base exception: typer 0.26+ vendors click (typer._click), older typer uses click
# itself; typer.BadParameter, public in both, derives from it.
_CLICK_EXCEPTION: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="quantrs",
    cls=_Commands,
    help="Quantize float ONNX models to INT8 and INT4 (QDQ models that run in onnxruntime).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class Method(str, Enum):
    """Calibration range pickers (quantrs.ranges.METHODS)."""

    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"
    mse = "mse"


class Target(str, Enum):
    """Runtimes static models are laid out for (quantrs.activations.TARGETS)."""

    ort_cpu = "ort-cpu"
    tensorrt = "tensorrt"


class _State:
    quiet = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"quantrs {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, only errors on stderr.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, metavar="", show_default=False, help="Log what quantrs does on stderr: -v each stage, -vv every tensor.")] = 0,
) -> None:
    _State.quiet = quiet
    if verbose:
        _setup_verbose_logging(logging.INFO if verbose == 1 else logging.DEBUG)
    # Otherwise warnings reach stderr through logging's last-resort handler, and rich's logging
    # machinery is not even imported (start-up time matters for small models).


def _setup_verbose_logging(level: int) -> None:
    from rich.logging import RichHandler

    from quantrs._console import stderr_console

    logger = logging.getLogger("quantrs")
    logger.handlers[:] = [RichHandler(console=stderr_console(), show_path=False)]
    logger.setLevel(level)
    logger.propagate = False


def _print_error(message: str) -> None:
    """One line on stderr: "error: " and the message."""
    from quantrs._console import stderr_console

    from rich.markup import escape

    # The message is data (paths, tensor names, install hints like quantrs[report]): escaped.
    stderr_console().print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line on stderr and return the Exit(code) to raise (no traceback)."""
    _print_error(message)
    return typer.Exit(code=code)


def command(function: Callable) -> Callable:
    """Register a command with the one error path: a QuantrsError escaping it is printed as
    one line on stderr (exit 1); usage errors are _Commands' (exit 2)."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        from quantrs.errors import QuantrsError

        try:
            return function(*args, **kwargs)
        except QuantrsError as exc:
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:  # commands that write say what is left (quantize, batch)
            raise _fail(f"interrupted: quantrs {function.__name__} stopped", code=130) from None

    return app.command(cls=_Command)(run)


def _quantize_options() -> list[tuple[str, object, typer.models.OptionInfo]]:
    """(parameter name, type, typer option) for every QuantizeConfig option, from its one
    declaration (quantrs.config). Defaults are None ("not given"), so that a flag given on the
    command line can override a config file; unset means QuantizeConfig's default."""
    from quantrs.config import QuantizeConfig, options

    hints = typing.get_type_hints(QuantizeConfig)
    out: list[tuple[str, Any, Any]] = []
    for f, spec in options():
        kind = spec.cli_type or hints[f.name]
        out.append((f.name, Optional[kind], typer.Option(*spec.flags, help=spec.help, show_default=False)))
    return out


def with_quantize_options(command: Callable) -> Callable:
    """Give a command every quantize option; they reach it as `options`, a dict of the
    QuantizeConfig fields that were given on the command line."""
    declared = _quantize_options()
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # this module's annotations are strings
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values() if p.name != "options"]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option])
        for name, kind, option in declared
    ]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        given = {name: kwargs.pop(name) for name, _, _ in declared}
        return command(*args, options=config_fields(given), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


def config_fields(given: dict) -> dict:
    """The QuantizeConfig fields given on the command line (None and empty lists: not given),
    parsed as their declaration says; a bad value is a usage error naming the flag."""
    from quantrs.config import options
    from quantrs.errors import OptionError

    fields = {}
    for f, spec in options():
        value = given.get(f.name)
        if value is None or value == []:
            continue
        try:
            fields[f.name] = spec.parse(value) if spec.parse is not None else value
        except OptionError as exc:
            raise typer.BadParameter(exc.detail, param_hint=f"'{spec.flag}'") from None
    return fields


def quantize_config(options: dict):
    """QuantizeConfig(**options), a bad value being a usage error (exit 2) naming its flag."""
    from quantrs.config import QuantizeConfig
    from quantrs.errors import OptionError

    try:
        return QuantizeConfig(**options)
    except OptionError as exc:
        raise typer.BadParameter(exc.detail, param_hint=_flag(exc.field)) from None


def _flag(field: str) -> str:
    from quantrs.config import options

    return next((f"'{spec.flag}'" for f, spec in options() if f.name == field), f"'{field}'")


@command
@with_quantize_options
def quantize(
    model: Annotated[Path, typer.Argument(help="The float ONNX model.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the quantized model.", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be quantized (bits, axis, or why not); write nothing.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Report as text or JSON (on stdout).")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    data: Annotated[Optional[Path], typer.Option("--data", help="Samples for --rounding gptq (as for calibrate): .npy, .npz or a folder.", show_default=False)] = None,
    *,
    options: dict,
) -> None:
    """Quantize the weights of MODEL to INT8 or INT4 (per channel unless --per-tensor) and write a QDQ model to --output."""
    from quantrs.errors import OptionError, UnknownNameError
    from quantrs.pipeline import dry_run as plan_only
    from quantrs.pipeline import quantize as run

    if output is None and not dry_run:
        raise typer.BadParameter("is required (or use --dry-run)", param_hint="'--output' / '-o'")
    config = quantize_config(options)
    if config.rounding == "gptq" and data is None and not dry_run:
        raise typer.BadParameter("is required by --rounding gptq (its calibration samples)", param_hint="'--data'")
    if data is not None and config.rounding != "gptq":
        raise typer.BadParameter("is read only by --rounding gptq", param_hint="'--data'")
    try:
        if dry_run:
            _emit(plan_only(model, config, output_path=output), fmt, "render_plan")
            return
        assert output is not None  # checked above
        before = _identity(output)
        try:
            with _progress(quiet) as bar:
                report = run(model, output, config, data=data, progress=bar, stage=bar.stage if bar is not None else None)
        except KeyboardInterrupt:
            raise _fail(_interrupted(f"quantizing {model}", output, before), code=130) from None
    except UnknownNameError as exc:  # a flag's value, so a usage error
        raise typer.BadParameter(f"{exc} ({model})", param_hint=_flag(exc.field)) from None
    except OptionError as exc:  # a flag that does not fit this model
        raise typer.BadParameter(exc.detail, param_hint=_flag(exc.field)) from None
    _emit(report, fmt, "render_quantize")


@command
@with_quantize_options
def batch(
    models: Annotated[list[str], typer.Argument(help="Models: files, folders (their *.onnx) or glob patterns.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write the quantized models to.", show_default=False)],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Models quantized at once, in local processes.")] = 1,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip models whose output exists (rerun after an interruption).")] = False,
    continue_on_error: Annotated[bool, typer.Option("--continue-on-error", help="Go on with the other models when one fails.")] = False,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Run on this Dask scheduler (tcp://host:8786); needs quantrs\\[dask].", show_default=False)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Summary as text or JSON (on stdout).")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    options: dict,
) -> None:
    """Quantize many models into one folder; exit code 1 if any failed."""
    from quantrs.batch import expand_inputs, make_jobs

    config = quantize_config(options)
    _refuse_gptq(config)
    work = make_jobs(expand_inputs(models), output, config)
    _run_batch(work, fmt, quiet, n_jobs=jobs, skip_existing=skip_existing, continue_on_error=continue_on_error, scheduler=scheduler)


@command
@with_quantize_options
def config(
    file: Annotated[Path, typer.Argument(help="A YAML (.yaml/.yml) or TOML (.toml) config file.", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan of every model; write nothing.")] = False,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Override the file's batch.jobs.", show_default=False)] = None,
    skip_existing: Annotated[Optional[bool], typer.Option("--skip-existing/--no-skip-existing", help="Override the file's batch.skip_existing.", show_default=False)] = None,
    continue_on_error: Annotated[Optional[bool], typer.Option("--continue-on-error/--stop-on-error", help="Override the file's batch.continue_on_error.", show_default=False)] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Run on this Dask scheduler; needs quantrs\\[dask].", show_default=False)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Text or JSON (on stdout).")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    *,
    options: dict,
) -> None:
    """Run the models and batch a config file describes. Flags given here override the file."""
    from quantrs.configfile import jobs_from_config, load_config
    from quantrs.errors import UnknownNameError
    from quantrs.pipeline import dry_run as plan_only

    _refuse_gptq(quantize_config(options))  # flags given here: a bad value is a usage error naming the flag
    loaded = load_config(file)
    work = jobs_from_config(loaded, file.parent, options, file=file)
    gptq = next((j for j in work if j.config.rounding == "gptq"), None)
    if gptq is not None:  # a config file names no samples (a dry run would plan what cannot run)
        raise _fail(f"{gptq.origin}: rounding: gptq needs the model's samples: use quantrs quantize --data ({gptq.input})")
    if dry_run:
        plans = []
        for j in work:
            try:
                plans.append(plan_only(j.input, j.config, output_path=j.output))
            except UnknownNameError as exc:
                raise _fail(f"{j.origin}: {exc.field}: {exc} ({j.input})") from None
        _emit(plans, fmt, "render_plans")
        return
    section = loaded.batch
    _run_batch(
        work,
        fmt,
        quiet,
        n_jobs=jobs if jobs is not None else (section.jobs if section else 1),
        skip_existing=_first(skip_existing, section and section.skip_existing, False),
        continue_on_error=_first(continue_on_error, section and section.continue_on_error, False),
        scheduler=scheduler,
    )


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _interrupted(doing: str, output: Path, before: tuple[int, int, int] | None) -> str:
    """What an interruption left at `output`: outputs are written into a temporary folder and
    renamed into place (quantrs.writer), so either nothing changed or the whole model is there."""
    if _identity(output) != before:  # the signal came after the rename
        return f"interrupted after {doing}: {output} was written completely"
    left = f": {output} is as it was" if before is not None else f" at {output}"
    return f"interrupted while {doing}: nothing written{left}"


def _refuse_gptq(config) -> None:
    """batch and config jobs quantize many models from one set of options: gptq's samples are
    each model's own, so it is a usage error there."""
    if config.rounding == "gptq":
        raise typer.BadParameter("gptq needs each model's own samples: use quantrs quantize --data", param_hint="'--rounding'")


def _run_batch(work, fmt: OutputFormat, quiet: bool, **options) -> None:
    """Run the jobs with a progress bar, print the summary, then each failure's cause as one
    line on stderr (as every other command says its error: the summary's cell wraps it), and
    exit 1 if any model failed."""
    from quantrs.batch import run_batch

    finished = [0]
    try:
        with _progress(quiet, what="models") as bar:

            def progress(done: int, total: int, nbytes: int, total_bytes: int) -> None:
                finished[0] = done
                if bar is not None:
                    bar(done, total, nbytes, total_bytes)

            report = run_batch(work, progress=progress, **options)
    except KeyboardInterrupt:
        # Outputs are written atomically: what exists is complete, so a rerun can skip it.
        left = len(work) - finished[0]
        raise _fail(f"interrupted: {finished[0]} done, {left} not finished; rerun with --skip-existing to finish them", code=130) from None
    _emit(report, fmt, "render_batch")
    for result in report.results:
        if result.status == "failed":
            cause = "; ".join(line.strip() for line in (result.error or "failed").splitlines() if line.strip())
            named = result.input in cause or result.output in cause
            _print_error(cause if named else f"{result.input}: {cause}")
    if not report.ok:
        raise typer.Exit(code=1)


def _first(*values):
    return next(v for v in values if v is not None)


def _emit(report, fmt: OutputFormat, renderer: str) -> None:
    """JSON of the report on stdout (always one object: several plans go under "plans"), or the
    rich rendering for people."""
    if fmt is OutputFormat.json:
        data = {"plans": [r.to_dict() for r in report]} if isinstance(report, list) else report.to_dict()
        _print_json(data)
        return
    from quantrs import render

    getattr(render, renderer)(report)


@command
def calibrate(
    model: Annotated[Path, typer.Argument(help="The float ONNX model.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Calibration samples: .npy, .npz (by input name; N samples may be stacked on axis 0), a folder of them, or onnxruntime test_data_set_* folders.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the quantized model.", show_default=False)],
    target: Annotated[Target, typer.Option("--target", help="ort-cpu: onnxruntime's QDQ form; tensorrt: NVIDIA's explicit-quantization rules (symmetric INT8, float biases, Q/DQ on inputs only).")] = "ort-cpu",  # type: ignore[assignment]
    method: Annotated[Method, typer.Option("--method", help="Range selection.")] = "minmax",  # type: ignore[assignment]
    percentile: Annotated[float, typer.Option("--percentile", help="For --method percentile: the share of values kept, in (50, 100].")] = 99.999,
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="One weight scale per output channel.")] = True,
    symmetric_activations: Annotated[bool, typer.Option("--symmetric-activations", help="INT8 activations with zero point 0 (default UINT8).")] = False,
    reduce_range: Annotated[bool, typer.Option("--reduce-range", help="7-bit weights, for x86 CPUs without VNNI (see README).")] = False,
    max_samples: Annotated[Optional[int], typer.Option("--max-samples", min=1, help="Use at most this many samples.", show_default=False)] = None,
    min_samples: Annotated[int, typer.Option("--min-samples", min=1, help="Refuse to calibrate on fewer samples.")] = 1,
    rounding: Annotated[str, typer.Option("--rounding", help="The weights' codes: nearest, or gptq (compensated on the samples, as quantize --rounding gptq).")] = "nearest",
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Node or weight name to leave in float (repeatable).", show_default=False)] = None,
    exclude_op_type: Annotated[Optional[list[str]], typer.Option("--exclude-op-type", help="Op type to leave in float (repeatable).", show_default=False)] = None,
    exclude_regex: Annotated[Optional[list[str]], typer.Option("--exclude-regex", help="Leave nodes or weights whose name matches in float (repeatable).", show_default=False)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Report as text or JSON (on stdout).")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", hidden=True)] = False,  # quantize's: refused with what to use
) -> None:
    """Static INT8: calibrate activation ranges on --data, quantize weights and activations (QDQ)."""
    from quantrs.calibration import CalibrationConfig
    from quantrs.calibration import calibrate as run

    if dynamic:
        raise typer.BadParameter(
            "calibrate writes static INT8 (activation ranges from --data); for activations quantized at run time use "
            "'quantrs quantize MODEL -o OUT --dynamic' (no samples needed)",
            param_hint="'--dynamic'",
        )
    if not 50 < percentile <= 100:
        raise typer.BadParameter(f"must be in (50, 100], not {percentile}", param_hint="'--percentile'")
    if Target(target) is Target.tensorrt and reduce_range:
        raise typer.BadParameter("not with --target tensorrt (INT8 weights, [-127, 127])", param_hint="'--reduce-range'")
    if Target(target) is Target.tensorrt and not per_channel:
        raise typer.BadParameter("not with --target tensorrt (its weights are per channel)", param_hint="'--per-tensor'")
    weights = quantize_config(
        {"min_elements": 0, "exclude": tuple(exclude or ()), "exclude_op_types": tuple(exclude_op_type or ()), "exclude_regex": tuple(exclude_regex or ()),
         "rounding": rounding}
    )  # fmt: skip
    config = CalibrationConfig(
        method=Method(method).value, percentile=percentile, per_channel=per_channel, symmetric_activations=symmetric_activations,
        reduce_range=reduce_range, target=Target(target).value, max_samples=max_samples, min_samples=min_samples, weights=weights,
    )
    from quantrs.errors import UnknownNameError

    try:
        with _counting(quiet, "calibrating", "samples") as progress:
            report = run(model, output, data, config, progress=progress)
    except UnknownNameError as exc:  # a flag's value, so a usage error
        raise typer.BadParameter(f"{exc} ({model})", param_hint=_flag(exc.field)) from None
    _emit(report, fmt, "render_calibration")


@command
def auto(
    model: Annotated[Path, typer.Argument(help="The float ONNX model.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the chosen model.", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="Samples (as for calibrate; each row of a dynamic batch axis is one): sensitivity, and the held-out quarter unless --eval-data.", show_default=False)],
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Budget: cosine to the float outputs, in (0, 1) (1 is only the float model).", show_default=False)] = None,
    max_relative_error: Annotated[Optional[float], typer.Option("--max-relative-error", help="Budget: relative L2 error of the outputs, in (0, 1].", show_default=False)] = None,
    min_top1: Annotated[Optional[float], typer.Option("--min-top1", help="Also: top-1 agreement (classifiers), in (0, 1].", show_default=False)] = None,
    choices: Annotated[str, typer.Option("--choices", help="Widths a weight may get, from 4, 8, float.")] = "4,8,float",
    block_size: Annotated[int, typer.Option("--block-size", help="4-bit weights in blocks of this size (16-256); 0: per channel. 8-bit ones are per channel (in matmulnbits form: MatMul weights in these blocks).")] = 32,
    static: Annotated[bool, typer.Option("--static", help="Also quantize activations (calibrated INT8); the budget is measured on that model.")] = False,
    rounding: Annotated[str, typer.Option("--rounding", help="nearest, or gptq: codes compensated on the tuning samples (weight-only).")] = "nearest",
    quant_format: Annotated[str, typer.Option("--quant-format", help="qdq, or matmulnbits: MatMul weights as onnxruntime's MatMulNBits and tables as GatherBlockQuantized, 4- and 8-bit in blocks (weight-only).")] = "qdq",
    eval_data: Annotated[Optional[Path], typer.Option("--eval-data", help="Held-out samples for verification (default: the last quarter of --data).", show_default=False)] = None,
    max_evaluations: Annotated[int, typer.Option("--max-evaluations", min=1, help="Candidates built and run, at most.")] = 6,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Node or weight name to keep in float (repeatable).", show_default=False)] = None,
    exclude_regex: Annotated[Optional[list[str]], typer.Option("--exclude-regex", help="Keep nodes or weights whose name matches in float (repeatable).", show_default=False)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Report as text or JSON (on stdout).")] = OutputFormat.text,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also an HTML page with the size/accuracy trade-off (needs quantrs\\[report]).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """The smallest model whose outputs stay within a budget of the float model's: a width per
    layer from one sensitivity pass, verified on held-out samples. Exit 1 when the budget is out
    of reach: nothing is written at --output, the closest model goes beside it (q.closest.onnx)."""
    from quantrs.auto import AutoConfig, closest_path
    from quantrs.auto import auto as run

    widths = _auto_flags(min_cosine, max_relative_error, min_top1, choices, block_size, report, static, quant_format)
    weights = quantize_config(
        {"exclude": tuple(exclude or ()), "exclude_regex": tuple(exclude_regex or ()), "quant_format": quant_format, "rounding": rounding}
    )
    config = AutoConfig(
        min_cosine=min_cosine, max_relative_error=max_relative_error, min_top1=min_top1, choices=widths,
        block_size=block_size or None, static=static, max_evaluations=max_evaluations, weights=weights,
    )  # fmt: skip
    if report is not None:
        from quantrs.html_report import check_report_path, require_matplotlib

        require_matplotlib()  # before the search, not after it
        check_report_path(report, [model], [output, closest_path(output)])
    from quantrs.errors import OptionError, UnknownNameError

    say = None if quiet or _State.quiet or fmt is OutputFormat.json else _progress_line
    try:
        result = run(model, output, data, config, eval_data=eval_data, progress=say)
    except UnknownNameError as exc:  # a flag's value, so a usage error
        raise typer.BadParameter(f"{exc} ({model})", param_hint=_flag(exc.field)) from None
    except OptionError as exc:  # a flag that does not fit this model
        raise typer.BadParameter(exc.detail, param_hint=_flag(exc.field)) from None
    if report is not None:
        from quantrs.html_report import write_auto_html

        write_auto_html(result, report)
    _emit(result, fmt, "render_auto")
    if not result.met:
        budget = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.budget.items())
        raise _fail(f"{model}: missed {budget} by {result.miss:.4g}; nothing written at {output}; the closest model is {result.closest}")


def _auto_flags(
    min_cosine: float | None,
    max_relative_error: float | None,
    min_top1: float | None,
    choices: str,
    block_size: int,
    report: Path | None,
    static: bool,
    quant_format: str,
) -> tuple[str, ...]:
    """auto's flags checked together (a usage error names the flag); the widths --choices lists."""
    from quantrs.auto import ONLY_FLOAT, WIDTHS

    if min_cosine == 1:  # no error at all, as --max-relative-error 0 (refused below)
        raise typer.BadParameter(ONLY_FLOAT, param_hint="'--min-cosine'")
    for flag, value, interval in (("--min-cosine", min_cosine, "(0, 1)"), ("--max-relative-error", max_relative_error, "(0, 1]"), ("--min-top1", min_top1, "(0, 1]")):
        if value is not None and not 0 < value <= 1:
            raise typer.BadParameter(f"must be in {interval}, not {value}", param_hint=f"'{flag}'")
    if min_cosine is None and max_relative_error is None:
        raise typer.BadParameter(
            "a budget is needed: --min-cosine or --max-relative-error (--min-top1 is checked besides)", param_hint="'--min-cosine'"
        )
    widths = tuple(c.strip() for c in choices.split(",") if c.strip())
    unknown = [c for c in widths if c not in WIDTHS]
    if unknown or not widths or set(widths) == {"float"}:
        raise typer.BadParameter(f"{choices!r}: a comma-separated list of 4, 8 and float, with 4 or 8", param_hint="'--choices'")
    if block_size and (not 16 <= block_size <= 256 or block_size & (block_size - 1)):
        raise typer.BadParameter(f"must be a power of two from 16 to 256, or 0, not {block_size}", param_hint="'--block-size'")
    if report is not None:
        from quantrs.writer import folder_problem

        problem = folder_problem(report)
        if problem is not None:
            raise typer.BadParameter(f"{report}: {problem}", param_hint="'--report'")
    if static and quant_format != "qdq":
        raise typer.BadParameter(f"{quant_format}: --static writes QDQ (calibrated activations); matmulnbits is weight-only", param_hint="'--quant-format'")
    if not block_size and quant_format == "matmulnbits":
        raise typer.BadParameter("0 (per channel) is not a MatMulNBits layout: give a block size with --quant-format matmulnbits", param_hint="'--block-size'")
    return widths


def _progress_line(message: str) -> None:
    from quantrs._console import stderr_console

    stderr_console().print(f"[dim]{message}...[/]", highlight=False)


@command
def validate(
    original: Annotated[Path, typer.Argument(help="The float model.", show_default=False)],
    quantized: Annotated[Path, typer.Argument(help="The quantized model.", show_default=False)],
    data: Annotated[Optional[Path], typer.Option("--data", help="Samples: .npy, .npz (by input name) or a folder of them. Default: generated from the inputs.", show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Generated samples when --data is not given.")] = 8,
    detailed: Annotated[bool, typer.Option("--detailed", help="Per-layer errors, a ranking of the layers that hurt most, and a suggested --exclude list.")] = False,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Fail when an output's cosine similarity is lower.", show_default=False)] = None,
    max_relative_error: Annotated[Optional[float], typer.Option("--max-relative-error", help="Fail when an output's relative L2 error is higher.", show_default=False)] = None,
    min_top1: Annotated[Optional[float], typer.Option("--min-top1", help="Fail when a classifier output's top-1 agreement is lower (0-1).", show_default=False)] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write a self-contained HTML report here (needs quantrs\\[report]).", show_default=False)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Text or JSON (on stdout).")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Check that QUANTIZED still behaves like ORIGINAL; exit code 1 if a check or threshold fails."""
    from quantrs.validation import Thresholds
    from quantrs.validation import validate as run

    thresholds = Thresholds(min_cosine=min_cosine, max_relative_l2=max_relative_error, min_top1=min_top1)
    if report is not None:
        from quantrs.html_report import check_report_path, require_matplotlib

        require_matplotlib()  # before the validation, not after it
        check_report_path(report, [original, quantized])
    with _counting(quiet, "running both models", "sample runs") as progress:
        result = run(original, quantized, data=data, samples=samples, detailed=detailed or report is not None, thresholds=thresholds, progress=progress)
    if report is not None:
        from quantrs.html_report import write_html_report

        write_html_report(result, report)
    _emit(result, fmt, "render_validation")
    if not result.passed:
        raise typer.Exit(code=1)


@command
def benchmark(
    original: Annotated[Path, typer.Argument(help="The float model.", show_default=False)],
    quantized: Annotated[Path, typer.Argument(help="The quantized model.", show_default=False)],
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed inference runs per model.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 3,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="onnxruntime intra-op threads (default: the CPUs this process may use).", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="A sample to run (.npy/.npz/folder); default: generated.", show_default=False)] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Text or JSON (on stdout).")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Compare file size, weight bytes by type, load time and inference latency in onnxruntime."""
    from quantrs.benchmarking import benchmark as run

    with _counting(quiet, "timing", "runs") as progress:
        result = run(original, quantized, runs=runs, warmup=warmup, threads=threads, data=data, progress=progress)
    _emit(result, fmt, "render_benchmark")


@command
def info(
    model: Annotated[Path, typer.Argument(help="An ONNX model.", show_default=False)],
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Text or JSON (on stdout).")] = OutputFormat.text,
) -> None:
    """Show a model's opset, inputs/outputs, node counts and float weights, and this build."""
    from quantrs.info import inspect_model

    report = inspect_model(model)
    _emit(report, fmt, "render_info")


def _print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _progress(quiet: bool, what: str = "tensors"):
    from quantrs._console import progress_bar

    return progress_bar(what, disabled=quiet or _State.quiet)


def _counting(quiet: bool, doing: str, what: str):
    from quantrs._console import count_bar

    return count_bar(doing, what, disabled=quiet or _State.quiet)


def main() -> None:
    app()
