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
from typing import TYPE_CHECKING, Annotated, Any, Optional, Protocol, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from quantrs import __version__
from quantrs.config import AutoConfig, BatchOptions, CalibrationConfig, QuantizeConfig, Thresholds  # light: the option tables

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from _typeshed import DataclassInstance

    from quantrs._console import Bar
    from quantrs.batch import Job
    from quantrs.report import PlanReport


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
    quiet: Quiet = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            metavar="",
            show_default=False,
            help="Log what quantrs does on stderr: -v each stage, -vv every tensor.",
        ),
    ] = 0,
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
    def run(*args: object, **kwargs: object) -> object:
        from quantrs.errors import QuantrsError

        try:
            return function(*args, **kwargs)
        except QuantrsError as exc:
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:  # commands that write say what is left (quantize, batch)
            raise _fail(f"interrupted: quantrs {function.__name__} stopped", code=130) from None

    return app.command(cls=_Command)(run)


# Options every command that has them spells and explains alike.
Format = Annotated[OutputFormat, typer.Option("--format", help="Report as text or JSON (on stdout).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
Data = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Samples: .npy, .npz (by input name; N samples may be stacked on axis 0), a folder of them, "
        "or onnxruntime test_data_set_* folders.",
        show_default=False,
    ),
]
Output = Annotated[Path, typer.Option("--output", "-o", help="Where to write the quantized model.", show_default=False)]


def _declared(cls: type, names: Sequence[str] | None = None, hidden: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """(field name, type, typer option) for the options `cls` declares (quantrs.config), or the
    fields `names` of them. Defaults are None ("not given"): unset means the config's default,
    and a flag given on the command line can override a config file."""
    from quantrs.config import options

    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any, Any]] = []
    for f, spec in options(cls):
        if names is None or f.name in names:
            kind = spec.cli_type or hints[f.name]
            out.append(
                (f.name, Optional[kind], typer.Option(*spec.flags, help=spec.help, show_default=False, hidden=f.name in hidden))
            )
    return out


def _given(cls: type, values: dict) -> dict:
    """The fields of `cls` given on the command line (None and empty lists: not given), parsed as
    their declaration says; a bad value is a usage error naming the flag."""
    from quantrs.config import options
    from quantrs.errors import OptionError

    fields = {}
    for f, spec in options(cls):
        value = values.get(f.name)
        if value is None or value == []:
            continue
        try:
            fields[f.name] = spec.parse(value) if spec.parse is not None else value
        except OptionError as exc:
            raise typer.BadParameter(exc.detail, param_hint=f"'{spec.flag}'") from None
    return fields


def with_options(cls: type, into: str, *, build: bool = True) -> Callable[[Callable], Callable]:
    """Give a command the options `cls` declares, and those of QuantizeConfig its WEIGHT_OPTIONS
    name (with quantize's flags and help). They reach the command as the keyword `into`: the
    config built from them (a bad value or combination: a usage error naming the flag, exit 2),
    or, with build=False, a dict of the fields given on the command line."""

    weight_names = getattr(cls, "WEIGHT_OPTIONS", ())
    own, weights = _declared(cls), _declared(QuantizeConfig, weight_names, getattr(cls, "HIDDEN", ()))

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)  # this module's annotations are strings
        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values() if p.name != into]
        taken = {p.name for p in params}
        declared = own + weights
        clash = taken & {name for name, _, _ in declared}
        assert not clash, f"{command.__name__}: parameters {clash} are also options of {cls.__name__}"
        params += [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option])
            for name, kind, option in declared
        ]

        @functools.wraps(command)
        def wrapper(*args: object, **kwargs: object) -> object:
            given = _given(cls, {name: kwargs.pop(name) for name, _, _ in own})
            weight_fields = _given(QuantizeConfig, {name: kwargs.pop(name) for name, _, _ in weights})
            return command(*args, **{into: _build(cls, given, weight_fields) if build else given}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper

    return decorate


_Config = TypeVar("_Config", bound="DataclassInstance")  # a config class of quantrs.config


def _build(cls: type[_Config], given: dict, weight_fields: dict) -> _Config:
    """cls(**given), its `weights` the class's default weights with `weight_fields` set; a bad
    value is a usage error naming its flag."""
    import dataclasses

    from quantrs.errors import OptionError

    try:
        if weight_fields:
            default: Any = next(f for f in dataclasses.fields(cls) if f.name == "weights").default_factory
            given = {**given, "weights": dataclasses.replace(default(), **weight_fields)}
        return cls(**given)
    except OptionError as exc:
        raise typer.BadParameter(exc.detail, param_hint=_flag(exc.field)) from None


def with_quantize_options(command: Callable) -> Callable:
    """Give a command every quantize option; they reach it as `options`, a dict of the
    QuantizeConfig fields that were given on the command line."""

    return with_options(QuantizeConfig, "options", build=False)(command)


def quantize_config(options: dict) -> QuantizeConfig:
    """QuantizeConfig(**options), a bad value being a usage error (exit 2) naming its flag."""
    from quantrs.errors import OptionError

    try:
        return QuantizeConfig(**options)
    except OptionError as exc:
        raise typer.BadParameter(exc.detail, param_hint=_flag(exc.field)) from None


def _flag(field: str) -> str:
    """The flag that sets a config field, quoted as click quotes it (any command's config)."""
    from quantrs.config import flag_of

    return f"'{flag_of(field) or field}'"


@command
@with_quantize_options
def quantize(
    model: Annotated[Path, typer.Argument(help="The float ONNX model.", show_default=False)],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Where to write the quantized model.", show_default=False)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be quantized (bits, axis, or why not); write nothing.")
    ] = False,
    fmt: Format = OutputFormat.text,
    quiet: Quiet = False,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            help="Samples for --rounding gptq or --smooth (as for calibrate): .npy, .npz or a folder.",
            show_default=False,
        ),
    ] = None,
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
    if config.smooth is not None and data is None and not dry_run:
        raise typer.BadParameter("is required by --smooth (the activations' maxima per channel)", param_hint="'--data'")
    if data is not None and config.rounding != "gptq" and config.smooth is None:
        raise typer.BadParameter("is read only by --rounding gptq and --smooth", param_hint="'--data'")
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
@with_options(BatchOptions, "run")
@with_quantize_options
def batch(
    models: Annotated[
        list[str], typer.Argument(help="Models: files, folders (their *.onnx) or glob patterns.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The folder to write the quantized models to.", show_default=False)
    ],
    fmt: Format = OutputFormat.text,
    quiet: Quiet = False,
    *,
    options: dict,
    run: BatchOptions,
) -> None:
    """Quantize many models into one folder; exit code 1 if any failed."""
    from quantrs.batch import expand_inputs, make_jobs

    config = quantize_config(options)
    _refuse_gptq(config)
    work = make_jobs(expand_inputs(models), output, config)
    _run_batch(work, fmt, quiet, run)


@command
@with_options(BatchOptions, "run", build=False)
@with_quantize_options
def config(
    file: Annotated[Path, typer.Argument(help="A YAML (.yaml/.yml) or TOML (.toml) config file.", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan of every model; write nothing.")] = False,
    fmt: Format = OutputFormat.text,
    quiet: Quiet = False,
    *,
    options: dict,
    run: dict,
) -> None:
    """Run the models and batch a config file describes. Flags given here override the file (its batch section too)."""
    from quantrs.configfile import jobs_from_config, load_config
    from quantrs.errors import UnknownNameError
    from quantrs.pipeline import dry_run as plan_only

    _refuse_gptq(quantize_config(options))  # flags given here: a bad value is a usage error naming the flag
    loaded = load_config(file)
    work = jobs_from_config(loaded, file.parent, options, file=file)
    gptq = next((j for j in work if j.config.rounding == "gptq"), None)
    if gptq is not None:  # a config file names no samples (a dry run would plan what cannot run)
        raise _fail(f"{gptq.origin}: rounding: gptq needs the model's samples: use quantrs quantize --data ({gptq.input})")
    smooth = next((j for j in work if j.config.smooth is not None), None)
    if smooth is not None:
        raise _fail(f"{smooth.origin}: smooth needs the model's samples: use quantrs quantize --data ({smooth.input})")
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
    file_fields = (
        {}
        if section is None
        else {"jobs": section.jobs, "skip_existing": section.skip_existing, "continue_on_error": section.continue_on_error}
    )
    settings = _build(BatchOptions, {**file_fields, **run}, {})
    _run_batch(work, fmt, quiet, settings)


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


def _refuse_gptq(config: QuantizeConfig) -> None:
    """batch and config jobs quantize many models from one set of options: gptq's and
    --smooth's samples are each model's own, so they are usage errors there."""
    if config.rounding == "gptq":
        raise typer.BadParameter("gptq needs each model's own samples: use quantrs quantize --data", param_hint="'--rounding'")
    if config.smooth is not None:
        raise typer.BadParameter("needs each model's own samples: use quantrs quantize --data", param_hint="'--smooth'")


def _run_batch(work: Sequence[Job], fmt: OutputFormat, quiet: bool, settings: BatchOptions) -> None:
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

            report = run_batch(
                work,
                n_jobs=settings.jobs,
                skip_existing=settings.skip_existing,
                continue_on_error=settings.continue_on_error,
                scheduler=settings.scheduler,
                progress=progress,
            )
    except KeyboardInterrupt:
        # Outputs are written atomically: what exists is complete, so a rerun can skip it.
        left = len(work) - finished[0]
        raise _fail(
            f"interrupted: {finished[0]} done, {left} not finished; rerun with --skip-existing to finish them", code=130
        ) from None
    _emit(report, fmt, "render_batch")
    for result in report.results:
        if result.status == "failed":
            cause = "; ".join(line.strip() for line in (result.error or "failed").splitlines() if line.strip())
            named = result.input in cause or result.output in cause
            _print_error(cause if named else f"{result.input}: {cause}")
    if not report.ok:
        raise typer.Exit(code=1)


class _Report(Protocol):
    """What every command's report has (quantrs.report): its JSON form."""

    def to_dict(self) -> dict[str, Any]: ...


def _emit(report: _Report | list[PlanReport], fmt: OutputFormat, renderer: str) -> None:
    """JSON of the report on stdout (always one object: several plans go under "plans"), or the
    rich rendering for people."""
    if fmt is OutputFormat.json:
        data = {"plans": [r.to_dict() for r in report]} if isinstance(report, list) else report.to_dict()
        _print_json(data)
        return
    from quantrs import render

    getattr(render, renderer)(report)


@command
@with_options(CalibrationConfig, "config")
def calibrate(
    model: Annotated[Path, typer.Argument(help="The float ONNX model.", show_default=False)],
    data: Data,
    output: Output,
    fmt: Format = OutputFormat.text,
    quiet: Quiet = False,
    *,
    config: CalibrationConfig,
) -> None:
    """Static INT8: calibrate activation ranges on --data, quantize weights and activations (QDQ)."""
    from quantrs.calibration import calibrate as run
    from quantrs.errors import UnknownNameError

    try:
        with _counting(quiet, "calibrating", "samples") as progress:
            report = run(model, output, data, config, progress=progress)
    except UnknownNameError as exc:  # a flag's value, so a usage error
        raise typer.BadParameter(f"{exc} ({model})", param_hint=_flag(exc.field)) from None
    _emit(report, fmt, "render_calibration")


@command
@with_options(AutoConfig, "config")
def auto(
    model: Annotated[Path, typer.Argument(help="The float ONNX model.", show_default=False)],
    output: Output,
    data: Data,
    eval_data: Annotated[
        Optional[Path],
        typer.Option(
            "--eval-data",
            help="Held-out samples for verification (default: the last quarter of --data; "
            "each row of a dynamic batch axis is one sample).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Optional[Path],
        typer.Option(
            "--report", help="Also an HTML page with the size/accuracy trade-off (needs quantrs\\[report]).", show_default=False
        ),
    ] = None,
    fmt: Format = OutputFormat.text,
    quiet: Quiet = False,
    *,
    config: AutoConfig,
) -> None:
    """The smallest model whose outputs stay within a budget of the float model's: a width per
    layer from one sensitivity pass, verified on held-out samples. Exit 1 when the budget is out
    of reach: nothing is written at --output, the closest model goes beside it (q.closest.onnx)."""
    from quantrs.auto import auto as run
    from quantrs.auto import closest_path

    if report is not None:
        from quantrs.html_report import check_report_path, require_matplotlib
        from quantrs.writer import folder_problem

        problem = folder_problem(report)
        if problem is not None:
            raise typer.BadParameter(f"{report}: {problem}", param_hint="'--report'")
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
        raise _fail(
            f"{model}: missed {budget} by {result.miss:.4g}; nothing written at {output}; the closest model is {result.closest}"
        )


def _progress_line(message: str) -> None:
    from quantrs._console import stderr_console

    stderr_console().print(f"[dim]{message}...[/]", highlight=False)


@command
@with_options(Thresholds, "thresholds")
def validate(
    original: Annotated[Path, typer.Argument(help="The float model.", show_default=False)],
    quantized: Annotated[Path, typer.Argument(help="The quantized model.", show_default=False)],
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            help="Samples: .npy, .npz (by input name) or a folder of them. Default: generated from the inputs.",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Generated samples when --data is not given.")] = 8,
    detailed: Annotated[
        bool,
        typer.Option(
            "--detailed", help="Per-layer errors, a ranking of the layers that hurt most, and a suggested --exclude list."
        ),
    ] = False,
    report: Annotated[
        Optional[Path],
        typer.Option("--report", help="Write a self-contained HTML report here (needs quantrs\\[report]).", show_default=False),
    ] = None,
    fmt: Format = OutputFormat.text,
    quiet: Quiet = False,
    *,
    thresholds: Thresholds,
) -> None:
    """Check that QUANTIZED still behaves like ORIGINAL; exit code 1 if a check or threshold fails."""
    from quantrs.validation import validate as run

    if report is not None:
        from quantrs.html_report import check_report_path, require_matplotlib

        require_matplotlib()  # before the validation, not after it
        check_report_path(report, [original, quantized])
    with _counting(quiet, "running both models", "sample runs") as progress:
        result = run(
            original,
            quantized,
            data=data,
            samples=samples,
            detailed=detailed or report is not None,
            thresholds=thresholds,
            progress=progress,
        )
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
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads", min=1, help="onnxruntime intra-op threads (default: the CPUs this process may use).", show_default=False
        ),
    ] = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="A sample to run (.npy/.npz/folder); default: generated.", show_default=False)
    ] = None,
    fmt: Format = OutputFormat.text,
    quiet: Quiet = False,
) -> None:
    """Compare file size, weight bytes by type, load time and inference latency in onnxruntime."""
    from quantrs.benchmarking import benchmark as run

    with _counting(quiet, "timing", "runs") as progress:
        result = run(original, quantized, runs=runs, warmup=warmup, threads=threads, data=data, progress=progress)
    _emit(result, fmt, "render_benchmark")


@command
def info(
    model: Annotated[Path, typer.Argument(help="An ONNX model.", show_default=False)],
    fmt: Format = OutputFormat.text,
) -> None:
    """Show a model's opset, inputs/outputs, node counts and float weights, and this build."""
    from quantrs.info import inspect_model

    report = inspect_model(model)
    _emit(report, fmt, "render_info")


def _print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _progress(quiet: bool, what: str = "tensors") -> AbstractContextManager[Bar | None]:
    from quantrs._console import progress_bar

    return progress_bar(what, disabled=quiet or _State.quiet)


def _counting(quiet: bool, doing: str, what: str) -> AbstractContextManager[Callable[[int, int], None] | None]:
    from quantrs._console import count_bar

    return count_bar(doing, what, disabled=quiet or _State.quiet)


def main() -> None:
    app()
