"""The `quantrs` command line (typer). Thin: it parses options, calls the library, renders the
report, and turns every QuantrsError into one line on stderr and exit code 1.

Heavy imports (numpy, onnx, onnxruntime) happen inside the commands so that `quantrs --version`
and `quantrs -h` answer at once.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantrs import __version__

app = typer.Typer(
    name="quantrs",
    help="Quantize float32 ONNX models to INT8 and INT4 (QDQ models that run in onnxruntime).",
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what quantrs does (on stderr).")] = False,
) -> None:
    _State.quiet = quiet
    if verbose:
        _setup_verbose_logging()
    # Otherwise warnings reach stderr through logging's last-resort handler, and rich's logging
    # machinery is not even imported (start-up time matters for small models).


def _setup_verbose_logging() -> None:
    from rich.logging import RichHandler

    from quantrs._console import stderr_console

    logger = logging.getLogger("quantrs")
    logger.handlers[:] = [RichHandler(console=stderr_console(), show_path=False)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def _fail(message: str) -> typer.Exit:
    """Print one line on stderr and return the Exit(1) to raise (no traceback)."""
    from quantrs._console import stderr_console

    stderr_console().print(f"[bold red]error:[/bold red] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="The float32 ONNX model.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the quantized model.")],
    bits: Annotated[int, typer.Option("--bits", "-b", help="8 (INT8) or 4 (INT4).")] = 8,
    per_channel: Annotated[bool, typer.Option("--per-channel", help="One scale per output channel.")] = False,
    symmetric: Annotated[bool, typer.Option("--symmetric", help="Signed codes with zero point 0.")] = False,
    int4_as_int8: Annotated[
        bool,
        typer.Option("--int4-as-int8", help="Keep 4-bit codes one per INT8 byte (opset 13) for runtimes without opset 21."),
    ] = False,
    min_elements: Annotated[int, typer.Option("--min-elements", help="Leave smaller tensors in float.")] = 1024,
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", help="Initializer name to leave in float (repeatable).")
    ] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Kernel threads (default: all CPUs).")] = None,
    external_data: Annotated[
        bool, typer.Option("--external-data", help="Write the weights to OUTPUT.data beside the model.")
    ] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Report as text or JSON (on stdout).")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Quantize the weights of MODEL to INT8 or INT4 and write a QDQ model to --output."""
    from quantrs.config import QuantizeConfig
    from quantrs.errors import QuantrsError
    from quantrs.pipeline import quantize as run

    try:
        if bits not in (4, 8):
            raise typer.BadParameter("must be 4 or 8", param_hint="'--bits'")
        config = QuantizeConfig(
            bits=bits,
            per_channel=per_channel,
            symmetric=symmetric,
            native_int4=not int4_as_int8,
            min_elements=min_elements,
            exclude=tuple(exclude or ()),
            n_threads=threads,
            external_data=external_data,
        )
        with _progress(quiet) as progress:
            report = run(model, output, config, progress=progress)
    except QuantrsError as exc:
        raise _fail(str(exc)) from None
    if fmt is OutputFormat.json:
        _print_json(report.to_dict())
    else:
        from quantrs.render import render_quantize

        render_quantize(report)


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="An ONNX model.", show_default=False)],
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Text or JSON (on stdout).")] = OutputFormat.text,
) -> None:
    """Show a model's opset, inputs/outputs, node counts and float weights, and this build."""
    from quantrs.errors import QuantrsError
    from quantrs.info import inspect_model

    try:
        report = inspect_model(model)
    except QuantrsError as exc:
        raise _fail(str(exc)) from None
    if fmt is OutputFormat.json:
        _print_json(report.to_dict())
    else:
        from quantrs.render import render_info

        render_info(report)


def _print_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _progress(quiet: bool):
    from quantrs._console import tensor_progress

    return tensor_progress(disabled=quiet or _State.quiet)


def main() -> None:
    app()
