"""Rich text renderings of the report objects, for people (JSON comes from the same objects)."""

from __future__ import annotations

import functools
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from quantrs._console import stdout_console
from quantrs.report import (
    AutoReport,
    BatchReport,
    BenchmarkReport,
    CalibrationReport,
    InfoReport,
    PlanReport,
    QuantizeReport,
    ValidationReport,
)

__all__ = [
    "render_auto",
    "render_quantize",
    "render_info",
    "render_plan",
    "render_plans",
    "render_batch",
    "render_validation",
    "render_benchmark",
    "render_calibration",
    "human_bytes",
]


FLOAT_NAMES = {"FLOAT", "FLOAT16", "BFLOAT16"}


def _located(name: str, kind: str, scope: str) -> str:
    """A tensor's name (escaped: names are data, not markup), with where it lives when that is
    not a main-graph initializer."""
    where = ["Constant"] if kind == "constant" else []
    if scope:
        where.append(f"in {scope}")
    return escape(name) + (f" [dim]({escape(' '.join(where))})[/]" if where else "")


@dataclass(frozen=True)
class Col:
    """A column of a report's table. Its cells are rich markup, or (full, short) pairs for a
    column that a narrow terminal shortens."""

    header: str
    right: bool = False  # numbers
    wrap: bool = False  # free text (reasons, errors) wraps at spaces; every other cell is kept whole
    key: bool = False  # the row's name: a line of its own when no table fits
    name: bool = False  # names or paths (a consumer, an output): back when no table fits, if dropped


Cell = str | tuple[str, str]
WRAP_MIN = 16  # cells a wrapping column keeps at least (unless all its text is shorter)


def _print_table(
    console: Console,
    columns: Sequence[Col],
    rows: Sequence[Sequence[Cell]],
    *,
    title: str | None = None,
    degrade: Sequence[tuple[str, str]] = (),
) -> None:
    """Print rows as a table in which names, paths and numbers are never split or cut: they are
    what users copy into --exclude, scripts and shells. When the table is wider than the
    terminal, the steps of `degrade` are taken in turn, ("drop", header) leaving a less
    important column out, ("short", header) taking its cells' short forms; when even then no
    table fits (a name longer than the terminal is wide), each row becomes a line with its name
    and an indented line with the rest (the names and paths dropped from the table back)."""
    dropped: set[str] = set()
    short: set[str] = set()
    for step in [None, *degrade]:
        if step is not None:
            (dropped if step[0] == "drop" else short).add(step[1])
        kept = [j for j, c in enumerate(columns) if c.header not in dropped]
        heads = [columns[j] for j in kept]
        cells = [[_cell(row[j], columns[j].header in short) for j in kept] for row in rows]
        if _width_needed(heads, cells) <= console.width:
            table = Table(title=title, title_justify="left", show_edge=False)
            for c in heads:
                table.add_column(c.header, justify="right" if c.right else "left", no_wrap=not c.wrap, overflow="fold")
            for row in cells:
                table.add_row(*row)
            console.print(table)
            return
    kept = [j for j, c in enumerate(columns) if c.header not in dropped or c.name]
    _print_stacked(console, [columns[j] for j in kept], [[_cell(row[j], True) for j in kept] for row in rows], title)


def _cell(cell: Cell, short: bool) -> str:
    return cell if isinstance(cell, str) else cell[1 if short else 0]


def _width_needed(columns: Sequence[Col], rows: Sequence[Sequence[str]]) -> int:
    """The width a table needs to show every cell of the columns kept whole on one line (and
    the wrapping ones at WRAP_MIN or their longest word): rich's tables (show_edge=False) pad
    each cell with a space on both sides and draw a rule between columns."""
    total = 3 * len(columns) - 1
    for j, column in enumerate(columns):
        texts = [column.header, *(_plain(row[j]) for row in rows)]
        widest = max(cell_len(t) for t in texts)
        if column.wrap:
            longest_word = max((cell_len(w) for t in texts for w in t.split()), default=1)
            total += min(widest, max(longest_word, WRAP_MIN))
        else:
            total += widest
    return total


@functools.lru_cache(maxsize=8192)
def _plain(markup: str) -> str:
    """The text a cell shows (without markup); cached: a table is measured at each step."""
    return Text.from_markup(markup).plain if "[" in markup else markup


def _print_stacked(console: Console, columns: Sequence[Col], rows: Sequence[Sequence[str]], title: str | None) -> None:
    """Rows without a table: the name (after what precedes it, such as a rank) on a line of its
    own, never wrapped by rich, then the other cells as "header value" on an indented line."""
    if title:
        console.print(f"[italic]{escape(title)}[/]", highlight=False)
    k = next((j for j, c in enumerate(columns) if c.key), 0)
    for row in rows:
        console.print(" " + " ".join(row[: k + 1]), soft_wrap=True, highlight=False)
        rest = [f"{columns[j].header}: {row[j]}" for j in range(k + 1, len(columns)) if row[j] not in ("", "-")]
        if rest:
            console.print("     " + ", ".join(rest), highlight=False)


def _n(count: int, noun: str, plural: str = "") -> str:
    """ "1 tensor", "3 tensors"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _size_change(before: float, after: float) -> str:
    """ "5.23x smaller", or "1.50x larger" when the output is bigger (a small model gains more
    scales and DequantizeLinear nodes than its codes save)."""
    if not before or not after or before == after:
        return "the same size" if before == after else "size unknown"
    return f"{before / after:.2f}x smaller" if after < before else f"{after / before:.2f}x larger"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def render_quantize(report: QuantizeReport) -> None:
    console = stdout_console()
    granularity = (
        f"blocks of {report.block_size}" if report.block_size else ("per-channel" if report.per_channel else "per-tensor")
    )
    scheme = "symmetric" if report.symmetric else "asymmetric"
    console.print(f"[bold green]Quantized[/] {escape(report.input)} -> {escape(report.output)}")
    console.print(f"  {report.bits}-bit {granularity} {scheme}, stored as {report.storage}")
    opset = f"{report.opset_before}" + (f" -> {report.opset_after} (converted)" if report.opset_converted else "")
    console.print(f"  opset {opset}")
    console.print(
        f"  size {human_bytes(report.input_bytes)} -> {human_bytes(report.output_bytes)} "
        f"({_size_change(report.input_bytes, report.output_bytes)}); weights {human_bytes(report.float_weight_bytes)} -> "
        f"{human_bytes(report.quantized_weight_bytes)}"
    )
    console.print(
        f"  {_n(report.quantized_count, 'tensor')} quantized, {report.skipped_count} left as "
        f"{'it is' if report.skipped_count == 1 else 'they are'}, in {report.seconds:.2f} s"
    )
    if report.already_quantized:
        console.print(f"  the input was already partly quantized ({report.already_quantized})", highlight=False)
    for note in report.notes:
        console.print(f"  note: {escape(note)}", highlight=False)
    if report.rounding == "gptq":
        _render_gptq(console, report)
    quantized = [t for t in report.tensors if t.quantized]
    if quantized:
        searched = any(t.search_gain is not None for t in quantized)
        columns = [
            Col("tensor", key=True),
            Col("shape"),
            Col("axis", right=True),
            Col("storage"),
            Col("MSE", right=True),
            Col("max abs err", right=True),
        ]
        columns += [Col("MSE vs min/max", right=True)] if searched else []
        rows = []
        for t in quantized:
            row: list[Cell] = [
                _located(t.name, t.kind, t.scope),
                "x".join(map(str, t.shape)),
                _axis(t.axis, t.block_size, report.block_size),
            ]
            row += [t.storage or "", f"{t.mse:.3g}", f"{t.max_abs_error:.3g}"]
            if searched:
                row.append("-" if t.search_gain is None else f"{1 / t.search_gain:.2f}x")
            rows.append(row)
        steps = [
            ("drop", "MSE vs min/max"),
            ("drop", "max abs err"),
            ("short", "axis"),
            ("drop", "storage"),
            ("drop", "MSE"),
            ("drop", "shape"),
        ]
        _print_table(console, columns, rows, title="quantized", degrade=steps)
    skipped = [t for t in report.tensors if not t.quantized and t.dtype in FLOAT_NAMES]
    if skipped:
        rows = [[_located(t.name, t.kind, t.scope), "x".join(map(str, t.shape)) or "scalar", escape(t.reason)] for t in skipped]
        columns = [Col("tensor", key=True), Col("shape"), Col("reason", wrap=True)]
        _print_table(console, columns, rows, title="float tensors left as they are", degrade=[("drop", "shape")])
    others = Counter(t.dtype for t in report.tensors if not t.quantized and t.dtype not in FLOAT_NAMES)
    if others:
        listed = ", ".join(f"{n} {dtype}" for dtype, n in sorted(others.items()))
        console.print(f"  not float, left as they are: {listed}")


def _axis(axis: int | None, block_size: int | None, blocks: int | None) -> Cell:
    """A tensor's axis: "1 (blocks of 32)", short "1" when its blocks are those the report's
    heading names (else "1 (32)")."""
    if axis is None:
        return "-"
    if not block_size:
        return str(axis)
    return f"{axis} (blocks of {block_size})", str(axis) if block_size == blocks else f"{axis} ({block_size})"


def render_info(report: InfoReport) -> None:
    console = stdout_console()
    console.print(f"[bold]{escape(report.path)}[/]  ({human_bytes(report.file_bytes)})")
    opsets = ", ".join(f"{d} {v}" for d, v in report.opsets.items())
    console.print(f"  IR {report.ir_version}, opsets: {opsets}" + (f", producer: {report.producer}" if report.producer else ""))
    for title, values in (("inputs", report.inputs), ("outputs", report.outputs)):
        rows = [
            [escape(v.name), v.dtype, escape("[" + ", ".join("?" if d is None else str(d) for d in v.shape) + "]")]
            for v in values
        ]
        _print_table(console, [Col("name", key=True), Col("type"), Col("shape")], rows, title=title)
    ops = [[escape(op), str(n)] for op, n in report.op_counts.items()]
    _print_table(console, [Col("op type", key=True), Col("count", right=True)], ops, title=_n(report.node_count, "node"))
    console.print(
        f"  float weights: {_n(report.float_weight_count, 'tensor')}, {report.float_weight_elements:,} values, "
        f"{human_bytes(report.float_weight_bytes)}" + (" (external data)" if report.external_data else "")
    )
    types = ", ".join(f"{n} {dtype}" for dtype, n in report.float_weight_dtypes.items())
    where = [f"{report.constant_weight_count} in Constant nodes"] if report.constant_weight_count else []
    if report.subgraph_count:
        where.append(f"{report.subgraph_weight_count} inside {report.subgraph_count} If/Loop/Scan bodies")
    if types or where:
        console.print("    " + "; ".join(x for x in [types, *where] if x), highlight=False)
    if report.quantized_ops:
        listed = ", ".join(f"{n} {op}" for op, n in report.quantized_ops.items())
        console.print(f"  already quantized: {listed}", highlight=False)
    b = report.build
    kernels = {"avx512": "AVX-512", "avx2": "AVX2"}.get(b.simd, "portable")
    console.print(
        f"  quantrs {b.quantrs}: OpenMP {'on' if b.openmp else 'off (serial build)'}, {b.threads} thread(s), "
        f"{kernels} kernels; "
        f"numpy {b.numpy}, onnx {b.onnx}, onnxruntime {b.onnxruntime}"
    )


def render_plan(plan: PlanReport) -> None:
    render_plans([plan])


def render_plans(plans: list[PlanReport]) -> None:
    """The dry run: for each model, every float tensor with its bits and axis, or why not."""
    console = stdout_console()
    for plan in plans:
        target = f" -> {escape(plan.output)}" if plan.output else ""
        console.print(f"[bold]{escape(plan.input)}[/]{target}: {_n(plan.quantized_count, 'tensor')} would be quantized")
        floats = [t for t in plan.tensors if t.dtype in FLOAT_NAMES]
        rows = []
        for t in floats:
            bits = str(t.bits) if t.quantize else "-"
            axis = "-" if t.axis is None else str(t.axis)
            reason = escape(t.reason) if t.quantize else f"[dim]skip: {escape(t.reason)}[/]"
            rows.append([_located(t.name, t.kind, t.scope), "x".join(map(str, t.shape)) or "scalar", bits, axis, reason])
        columns = [Col("tensor", key=True), Col("shape"), Col("bits"), Col("axis"), Col("use / reason", wrap=True)]
        _print_table(console, columns, rows, degrade=[("drop", "shape")])
        others = len(plan.tensors) - len(floats)
        if others:
            console.print(f"  and {_n(others, 'tensor')} that {'is' if others == 1 else 'are'} not float")


def render_batch(report: BatchReport) -> None:
    console = stdout_console()
    colours = {"ok": "green", "failed": "red", "skipped": "yellow", "cancelled": "yellow"}
    rows = []
    for r in report.results:
        size = f"{human_bytes(r.input_bytes)} -> {human_bytes(r.output_bytes)}" if r.output_bytes else human_bytes(r.input_bytes)
        error = (r.error or "").removeprefix(f"{r.input}: ")  # the row names the model
        rows.append(
            [escape(r.input), escape(r.output), f"[{colours[r.status]}]{r.status}[/]", size, f"{r.seconds:.2f} s", escape(error)]
        )
    columns = [
        Col("model", key=True),
        Col("output", name=True),
        Col("status"),
        Col("size", right=True),
        Col("time", right=True),
        Col("error / note", wrap=True),
    ]
    _print_table(console, columns, rows, degrade=[("drop", "time"), ("drop", "size")])  # the summary names every output
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("ok", "failed", "skipped", "cancelled") if report.count(s))
    where = f"on {report.scheduler}" if report.scheduler else f"with {report.jobs} job(s)"
    console.print(f"{_n(len(report.results), 'model')} {where} in {report.seconds:.2f} s: {counts}")


def _mark(passed: bool) -> str:
    return "[green]✓[/]" if passed else "[bold red]✗[/]"


def render_validation(report: ValidationReport) -> None:
    console = stdout_console()
    console.print(f"[bold]{escape(report.original)}[/] vs [bold]{escape(report.quantized)}[/]")
    console.print(
        f"  {human_bytes(report.original_bytes)} -> {human_bytes(report.quantized_bytes)} "
        f"({_size_change(report.original_bytes, report.quantized_bytes)})"
    )
    for c in report.checks:
        console.print(f"{_mark(c.passed)} {c.name}" + (f": {c.detail}" if c.detail else ""), highlight=False)
    if report.outputs:
        rows = []
        for o in report.outputs:
            top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.2%}"
            rows.append([escape(o.name), f"{o.cosine:.6f}", f"{o.max_abs_error:.4g}", f"{o.relative_l2:.4g}", top1])
        columns = [
            Col("output", key=True),
            Col("cosine", right=True),
            Col("max abs error", right=True),
            Col("relative L2", right=True),
            Col("top-1", right=True),
        ]
        title = f"output agreement over {report.samples} sample(s) ({report.samples_source})"
        _print_table(console, columns, rows, title=title, degrade=[("drop", "max abs error"), ("drop", "relative L2")])
    for t in report.thresholds:
        # The relation printed is the one that holds: "0.98 < 0.99 MISSED", never a false ">=".
        wanted_at_least = t.name.startswith("min")
        relation = (">=" if wanted_at_least else "<=") if t.passed else ("<" if wanted_at_least else ">")
        verdict = "" if t.passed else " [bold red]MISSED[/]"
        console.print(
            f"{_mark(t.passed)} {t.name}: {escape(t.output)} {t.value:.6g} {relation} {t.limit}{verdict}", highlight=False
        )
    if report.layers is not None:
        rows = []
        for i, layer in enumerate(report.layers, 1):
            local = "-" if layer.local_sqnr_db is None else f"{layer.local_sqnr_db:.2f}"
            rel = "-" if layer.local_relative_l2 is None else f"{layer.local_relative_l2:.4g}"
            rows.append(
                [str(i), escape(layer.name), escape(layer.consumer), layer.storage, f"{layer.weight_sqnr_db:.2f}", local, rel]
            )
        columns = [
            Col("#", right=True),
            Col("weight", key=True),
            Col("consumer", name=True),
            Col("storage"),
            Col("weight SQNR dB", right=True),
        ]
        columns += [Col("local SQNR dB", right=True), Col("local rel. L2", right=True)]
        steps = [("drop", "local rel. L2"), ("drop", "weight SQNR dB"), ("drop", "storage"), ("drop", "consumer")]
        _print_table(console, columns, rows, title="layers ranked by the error they inject (worst first)", degrade=steps)
    if report.activations:
        rows = [
            [str(i), escape(a.name), a.storage, f"{a.scale:.4g}", f"{a.sqnr_db:.2f}", f"{a.relative_l2:.4g}", f"{a.clipped:.2%}"]
            for i, a in enumerate(report.activations, 1)
        ]
        columns = [
            Col("#", right=True),
            Col("activation", key=True),
            Col("storage"),
            *(Col(h, right=True) for h in ("scale", "SQNR dB", "rel. L2", "clipped")),
        ]
        title = "activations (static model) ranked by the error of their 8-bit grid"
        _print_table(console, columns, rows, title=title, degrade=[("drop", "scale"), ("drop", "storage"), ("drop", "rel. L2")])
    if report.suggested_exclude:
        # On a line of its own, never wrapped, each name quoted for the shell: pasted, it parses.
        console.print(f"suggestion ({escape(report.suggestion_note)}), to add to the quantize command:", highlight=False)
        flags = " ".join(f"--exclude {shlex.quote(name)}" for name in report.suggested_exclude)
        console.print(escape(flags), soft_wrap=True, highlight=False)
    elif report.suggestion_note:
        console.print(f"no suggestion: {report.suggestion_note}")
    console.print("[bold green]VALIDATION PASSED[/]" if report.passed else "[bold red]VALIDATION FAILED[/]")


def render_benchmark(report: BenchmarkReport) -> None:
    console = stdout_console()
    o, q = report.original, report.quantized
    rows = [["file", human_bytes(o.file_bytes), human_bytes(q.file_bytes)]]
    for dtype in sorted(set(o.weight_bytes_by_dtype) | set(q.weight_bytes_by_dtype)):
        rows.append(
            [
                f"  {dtype} weights",
                human_bytes(o.weight_bytes_by_dtype.get(dtype, 0)),
                human_bytes(q.weight_bytes_by_dtype.get(dtype, 0)),
            ]
        )
    rows.append(["load (median)", f"{o.load_seconds * 1e3:.1f} ms", f"{q.load_seconds * 1e3:.1f} ms"])
    rows.append(["latency median", f"{o.latency_ms_median:.3f} ms", f"{q.latency_ms_median:.3f} ms"])
    rows.append(
        [
            "latency p10-p90",
            f"{o.latency_ms_p10:.3f}-{o.latency_ms_p90:.3f} ms",
            f"{q.latency_ms_p10:.3f}-{q.latency_ms_p90:.3f} ms",
        ]
    )
    _print_table(console, [Col("", key=True), Col("original", right=True), Col("quantized", right=True)], rows)
    if report.runtime_ops is not None:
        from quantrs.benchmarking import ACTIVATION_DQ

        fused = {op: n for op, n in report.runtime_ops.items() if op not in ("DequantizeLinear", ACTIVATION_DQ)}
        left = report.runtime_ops.get("DequantizeLinear", 0)
        unfused = report.runtime_ops.get(ACTIVATION_DQ, 0)
        fused_text = ", ".join(f"{n} {op}" for op, n in fused.items()) or "none"
        console.print(
            f"onnxruntime fuses quantized weights into integer kernels: {fused_text}; "
            f"{left} DequantizeLinear of weights still run at every inference (their weights are computed in float)"
            + (f"; {unfused} of activations too (float compute around them)" if unfused else ""),
            highlight=False,
        )
    threads = "the CPUs this process may use" if report.threads is None else str(report.threads)
    console.print(
        f"{_size_change(report.original.file_bytes, report.quantized.file_bytes)}, {report.speedup:.2f}x the speed; "
        f"{report.runs} runs after {report.warmup} warm-up, threads: {threads}, inputs {report.batch_inputs}",
        highlight=False,
    )


def render_calibration(report: CalibrationReport) -> None:
    console = stdout_console()
    console.print(f"[bold green]Calibrated[/] {escape(report.input)} -> {escape(report.output)} (for {report.target})")
    biases = f" and {_n(len(report.quantized_biases), 'bias', 'biases')} (INT32)" if report.quantized_biases else ""
    console.print(
        f"  {report.method} ranges from {report.samples} sample(s); {_n(len(report.activations), 'activation')}, "
        f"{_n(len(report.quantized_weights), 'weight')} (INT8){biases} quantized",
        highlight=False,
    )
    console.print(
        f"  size {human_bytes(report.input_bytes)} -> {human_bytes(report.output_bytes)} in {report.seconds:.2f} s "
        f"({report.inference_seconds:.2f} s of float inference, {report.inference_groups} run(s) per sample)",
        highlight=False,
    )
    if report.rounding == "gptq":
        rest = len(report.quantized_weights) - len(report.compensated)
        console.print(
            f"  gptq: codes of {len(report.compensated)} weight(s) compensated on the samples"
            + (f"; {rest} rounded to nearest" if rest else ""),
            highlight=False,
        )
    for o in report.fidelity:
        top1 = "" if o.top1_agreement is None else f", top-1 agreement {o.top1_agreement:.2%}"
        console.print(
            f"  {escape(o.name)}: cosine {o.cosine:.6f}, relative L2 {o.relative_l2:.4g}{top1} "
            f"(float vs quantized on the last {report.fidelity_samples} calibration sample(s), not held out)",
            highlight=False,
        )
    if report.left_float:
        console.print(f"  {len(report.left_float)} activation(s) left in float:", highlight=False)
        for item in report.left_float:
            console.print(f"    {escape(item.name)}: {escape(item.reason)}", highlight=False)
    rows = [[escape(a.name), f"{a.lo:.4g}", f"{a.hi:.4g}", f"{a.scale:.4g}", str(a.zero_point)] for a in report.activations]
    columns = [Col("tensor", key=True), *(Col(h, right=True) for h in ("min", "max", "scale", "zero point"))]
    _print_table(console, columns, rows, title="activation ranges", degrade=[("drop", "min"), ("drop", "max")])


def _render_gptq(console: Console, report: QuantizeReport) -> None:
    """Which weights got compensated codes (their MSE is higher by design: they keep the layer's
    output, not the weight), and why the others did not."""
    quantized = [t for t in report.tensors if t.quantized and t.gptq is not None]
    compensated = sum(t.gptq == "" for t in quantized)
    nearest = [(t.name, t.gptq) for t in quantized if t.gptq]
    if compensated:
        console.print(
            f"  gptq: codes of {compensated} weight(s) compensated on {report.samples} sample(s) (their MSE is higher by design)"
            + (f"; {len(nearest)} rounded to nearest" if nearest else ""),
            highlight=False,
        )
    else:
        console.print(f"  [yellow]gptq reached no weight:[/] all {len(nearest)} rounded to nearest", highlight=False)
    for name, why in nearest[:5]:
        console.print(f"    {escape(name)}: {escape(why)}", highlight=False)
    if len(nearest) > 5:
        console.print(f"    ... and {len(nearest) - 5} more (--format json gives every reason)", highlight=False)


def render_auto(report: AutoReport) -> None:
    console = stdout_console()
    budget = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.budget.items())
    chosen = report.candidates[report.chosen]
    if report.met:
        console.print(f"[bold green]Met[/] {budget}: {escape(report.input)} -> {escape(report.output)}", highlight=False)
    else:
        console.print(
            f"[bold red]Missed[/] {budget} by {report.miss:.4g} with widths {', '.join(report.choices)}: nothing written at "
            f"{escape(report.output)}; the closest model is {escape(report.closest or '')}",
            highlight=False,
        )
    widths = ", ".join(f"{n} weight(s) at {w}" + ("" if w == "float" else " bits") for w, n in chosen.widths.items())
    if report.quant_format != "qdq" or report.rounding != "nearest":
        widths += (
            f" ({report.quant_format}"
            + (f", gptq codes for {report.compensated} of them" if report.rounding == "gptq" else "")
            + ")"
        )
    narrowest = (
        f", uniform {report.choices[0]}-bit {human_bytes(report.narrowest_weight_bytes)}" if report.choices[0] != "8" else ""
    )
    console.print(
        f"  {widths}; weights {human_bytes(report.weight_bytes)} (float {human_bytes(report.float_weight_bytes)}"
        + (
            f", uniform 8-bit {human_bytes(report.uniform_int8_weight_bytes)}"
            if report.uniform_int8_weight_bytes is not None
            else ""
        )
        + f"{narrowest}); file {human_bytes(report.input_bytes)} -> {human_bytes(report.output_bytes)}",
        highlight=False,
    )
    from quantrs.config import error_budget

    budget_error = error_budget(report.budget.get("min_cosine"), report.budget.get("max_relative_error"))
    if report.static and budget_error is not None and report.floor > budget_error / 2:
        console.print(
            f"  [yellow]note:[/] the activations' own error (floor {report.floor:.3g}) takes "
            f"{report.floor / budget_error:.0%} of the budget, so the weights have little room: "
            "quantize activations less (calibrate --exclude...), or drop --static",
            highlight=False,
        )
    console.print(
        f"  {report.evaluations} evaluation(s) on {report.held_out_samples} held-out sample(s); sensitivity on "
        f"{report.sensitivity_samples} of {report.tuning_samples} sample(s) in {report.sensitivity_seconds:.1f} s; "
        f"{report.seconds:.1f} s in all; error model: gain {report.gain:.3g}, floor {report.floor:.3g}",
        highlight=False,
    )
    rows = []
    for c in report.candidates:
        worst = min(c.outputs, key=lambda o: o.cosine)
        rows.append([
            str(c.index + 1) + (" *" if c.index == report.chosen else ""),
            ", ".join(f"{n}x{w}" for w, n in c.widths.items()),
            human_bytes(c.weight_bytes),
            f"{c.predicted_cosine:.5f}",
            f"{worst.cosine:.5f}",
            f"{max(o.relative_l2 for o in c.outputs):.4g}",
            "met" if c.met else "missed",
        ])  # fmt: skip
    columns = [
        Col("#", right=True),
        Col("widths", key=True),
        *(Col(h, right=True) for h in ("weights", "predicted cosine", "measured cosine", "relative L2", "budget")),
    ]
    title = "candidates (predicted vs measured on held-out samples)"
    _print_table(console, columns, rows, title=title, degrade=[("drop", "predicted cosine"), ("drop", "relative L2")])
    errors = [f"error at {w}" for w in report.choices]
    rows = [
        [escape(layer.name), escape(layer.consumer), layer.width, *[f"{layer.errors[w]:.3g}" for w in report.choices]]
        for layer in report.layers
    ]
    columns = [
        Col("weight", key=True),
        Col("consumer", name=True),
        Col("width", right=True),
        *(Col(h, right=True) for h in errors),
    ]
    title = "widths (local relative squared error at each width)"
    _print_table(console, columns, rows, title=title, degrade=[("drop", "consumer"), *(("drop", h) for h in errors[1:])])
    if report.fixed:
        widest = max(w for w in report.choices if w != "float")
        console.print(f"  inside bodies, not measured, at {widest} bits: {escape(', '.join(report.fixed))}", highlight=False)
