"""Rich text renderings of the report objects, for people (JSON comes from the same objects)."""

from __future__ import annotations

from collections import Counter

from rich.markup import escape
from rich.table import Table

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


def _print_table(console, table: Table) -> None:
    """Print a table whose cells wrap instead of being cut: names are what users copy into
    --exclude, so no cell may lose characters to an ellipsis."""
    for column in table.columns:
        column.overflow = "fold"
    console.print(table)


def _n(count: int, noun: str, plural: str = "") -> str:
    """"1 tensor", "3 tensors"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _size_change(before: float, after: float) -> str:
    """"5.23x smaller", or "1.50x larger" when the output is bigger (a small model gains more
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
    granularity = f"blocks of {report.block_size}" if report.block_size else ("per-channel" if report.per_channel else "per-tensor")
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
        f"  {_n(report.quantized_count, 'tensor')} quantized, {report.skipped_count} left as {'it is' if report.skipped_count == 1 else 'they are'}, "
        f"in {report.seconds:.2f} s"
    )
    if report.already_quantized:
        console.print(f"  the input was already partly quantized ({report.already_quantized})", highlight=False)
    for note in report.notes:
        console.print(f"  note: {escape(note)}", highlight=False)
    if report.rounding == "gptq":
        _render_gptq(console, report)
    quantized = [t for t in report.tensors if t.quantized]
    if quantized:
        table = Table(title="quantized", title_justify="left", show_edge=False)
        searched = any(t.search_gain is not None for t in quantized)
        columns = ("tensor", "shape", "axis", "storage", "MSE", "max abs err") + (("MSE vs min/max",) if searched else ())
        for col in columns:
            table.add_column(col, justify="left" if col in ("tensor", "shape", "storage") else "right")
        for t in quantized:
            axis = "-" if t.axis is None else str(t.axis) + (f" (blocks of {t.block_size})" if t.block_size else "")
            row = [_located(t.name, t.kind, t.scope), "x".join(map(str, t.shape)), axis, t.storage or "", f"{t.mse:.3g}", f"{t.max_abs_error:.3g}"]
            if searched:
                row.append("-" if t.search_gain is None else f"{1 / t.search_gain:.2f}x")
            table.add_row(*row)
        _print_table(console, table)
    skipped = [t for t in report.tensors if not t.quantized and t.dtype in FLOAT_NAMES]
    if skipped:
        table = Table(title="float tensors left as they are", title_justify="left", show_edge=False)
        table.add_column("tensor")
        table.add_column("shape")
        table.add_column("reason")
        for t in skipped:
            table.add_row(_located(t.name, t.kind, t.scope), "x".join(map(str, t.shape)) or "scalar", escape(t.reason))
        _print_table(console, table)
    others = Counter(t.dtype for t in report.tensors if not t.quantized and t.dtype not in FLOAT_NAMES)
    if others:
        listed = ", ".join(f"{n} {dtype}" for dtype, n in sorted(others.items()))
        console.print(f"  not float, left as they are: {listed}")


def render_info(report: InfoReport) -> None:
    console = stdout_console()
    console.print(f"[bold]{escape(report.path)}[/]  ({human_bytes(report.file_bytes)})")
    opsets = ", ".join(f"{d} {v}" for d, v in report.opsets.items())
    console.print(f"  IR {report.ir_version}, opsets: {opsets}" + (f", producer: {report.producer}" if report.producer else ""))
    for title, values in (("inputs", report.inputs), ("outputs", report.outputs)):
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("name")
        table.add_column("type")
        table.add_column("shape")
        for v in values:
            table.add_row(escape(v.name), v.dtype, escape("[" + ", ".join("?" if d is None else str(d) for d in v.shape) + "]"))
        _print_table(console, table)
    ops = Table(title=_n(report.node_count, "node"), title_justify="left", show_edge=False)
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, n in report.op_counts.items():
        ops.add_row(escape(op), str(n))
    _print_table(console, ops)
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
    console.print(
        f"  quantrs {b.quantrs}: OpenMP {'on' if b.openmp else 'off (serial build)'}, {b.threads} thread(s); "
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
        table = Table(show_edge=False)
        for col in ("tensor", "shape", "bits", "axis", "use / reason"):
            table.add_column(col)
        floats = [t for t in plan.tensors if t.dtype in FLOAT_NAMES]
        for t in floats:
            bits = str(t.bits) if t.quantize else "-"
            axis = "-" if t.axis is None else str(t.axis)
            reason = escape(t.reason) if t.quantize else f"[dim]skip: {escape(t.reason)}[/]"
            table.add_row(_located(t.name, t.kind, t.scope), "x".join(map(str, t.shape)) or "scalar", bits, axis, reason)
        _print_table(console, table)
        others = len(plan.tensors) - len(floats)
        if others:
            console.print(f"  and {_n(others, 'tensor')} that {'is' if others == 1 else 'are'} not float")


def render_batch(report: BatchReport) -> None:
    console = stdout_console()
    table = Table(show_edge=False)
    for col in ("model", "output", "status", "size", "time", "error / note"):
        table.add_column(col, justify="right" if col in ("size", "time") else "left")
    colours = {"ok": "green", "failed": "red", "skipped": "yellow", "cancelled": "yellow"}
    for r in report.results:
        size = f"{human_bytes(r.input_bytes)} -> {human_bytes(r.output_bytes)}" if r.output_bytes else human_bytes(r.input_bytes)
        table.add_row(escape(r.input), escape(r.output), f"[{colours[r.status]}]{r.status}[/]", size, f"{r.seconds:.2f} s", escape(r.error or ""))
    _print_table(console, table)
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("ok", "failed", "skipped", "cancelled") if report.count(s))
    where = f"on {report.scheduler}" if report.scheduler else f"with {report.jobs} job(s)"
    console.print(f"{_n(len(report.results), 'model')} {where} in {report.seconds:.2f} s: {counts}")


def _mark(passed: bool) -> str:
    return "[green]✓[/]" if passed else "[bold red]✗[/]"


def render_validation(report: ValidationReport) -> None:
    console = stdout_console()
    console.print(f"[bold]{escape(report.original)}[/] vs [bold]{escape(report.quantized)}[/]")
    console.print(f"  {human_bytes(report.original_bytes)} -> {human_bytes(report.quantized_bytes)} ({_size_change(report.original_bytes, report.quantized_bytes)})")
    for c in report.checks:
        console.print(f"{_mark(c.passed)} {c.name}" + (f": {c.detail}" if c.detail else ""), highlight=False)
    if report.outputs:
        table = Table(title=f"output agreement over {report.samples} sample(s) ({report.samples_source})", title_justify="left", show_edge=False)
        for col in ("output", "cosine", "max abs error", "relative L2", "top-1"):
            table.add_column(col, justify="left" if col == "output" else "right")
        for o in report.outputs:
            top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.2%}"
            table.add_row(escape(o.name), f"{o.cosine:.6f}", f"{o.max_abs_error:.4g}", f"{o.relative_l2:.4g}", top1)
        _print_table(console, table)
    for t in report.thresholds:
        # The relation printed is the one that holds: "0.98 < 0.99 MISSED", never a false ">=".
        wanted_at_least = t.name.startswith("min")
        relation = (">=" if wanted_at_least else "<=") if t.passed else ("<" if wanted_at_least else ">")
        verdict = "" if t.passed else " [bold red]MISSED[/]"
        console.print(f"{_mark(t.passed)} {t.name}: {escape(t.output)} {t.value:.6g} {relation} {t.limit}{verdict}", highlight=False)
    if report.layers is not None:
        table = Table(title="layers ranked by the error they inject (worst first)", title_justify="left", show_edge=False)
        for col in ("#", "weight", "consumer", "storage", "weight SQNR dB", "local SQNR dB", "local rel. L2"):
            table.add_column(col, justify="right" if "SQNR" in col or col in ("#", "local rel. L2") else "left")
        for i, l in enumerate(report.layers, 1):
            local = "-" if l.local_sqnr_db is None else f"{l.local_sqnr_db:.2f}"
            rel = "-" if l.local_relative_l2 is None else f"{l.local_relative_l2:.4g}"
            table.add_row(str(i), escape(l.name), escape(l.consumer), l.storage, f"{l.weight_sqnr_db:.2f}", local, rel)
        _print_table(console, table)
    if report.activations:
        table = Table(title="activations (static model) ranked by the error of their 8-bit grid", title_justify="left", show_edge=False)
        for col in ("#", "activation", "storage", "scale", "SQNR dB", "rel. L2", "clipped"):
            table.add_column(col, justify="left" if col in ("activation", "storage") else "right")
        for i, a in enumerate(report.activations, 1):
            table.add_row(str(i), escape(a.name), a.storage, f"{a.scale:.4g}", f"{a.sqnr_db:.2f}", f"{a.relative_l2:.4g}", f"{a.clipped:.2%}")
        _print_table(console, table)
    if report.suggested_exclude:
        flags = " ".join(f"--exclude {name}" for name in report.suggested_exclude)
        console.print(f"suggestion ({report.suggestion_note}): {flags}", highlight=False)
    elif report.suggestion_note:
        console.print(f"no suggestion: {report.suggestion_note}")
    console.print("[bold green]VALIDATION PASSED[/]" if report.passed else "[bold red]VALIDATION FAILED[/]")


def render_benchmark(report: BenchmarkReport) -> None:
    console = stdout_console()
    table = Table(show_edge=False)
    table.add_column("")
    table.add_column("original", justify="right")
    table.add_column("quantized", justify="right")
    o, q = report.original, report.quantized
    table.add_row("file", human_bytes(o.file_bytes), human_bytes(q.file_bytes))
    for dtype in sorted(set(o.weight_bytes_by_dtype) | set(q.weight_bytes_by_dtype)):
        table.add_row(f"  {dtype} weights", human_bytes(o.weight_bytes_by_dtype.get(dtype, 0)), human_bytes(q.weight_bytes_by_dtype.get(dtype, 0)))
    table.add_row("load (median)", f"{o.load_seconds * 1e3:.1f} ms", f"{q.load_seconds * 1e3:.1f} ms")
    table.add_row("latency median", f"{o.latency_ms_median:.3f} ms", f"{q.latency_ms_median:.3f} ms")
    table.add_row("latency p10-p90", f"{o.latency_ms_p10:.3f}-{o.latency_ms_p90:.3f} ms", f"{q.latency_ms_p10:.3f}-{q.latency_ms_p90:.3f} ms")
    _print_table(console, table)
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
        f"{_size_change(report.original.file_bytes, report.quantized.file_bytes)}, {report.speedup:.2f}x the speed; {report.runs} runs after {report.warmup} "
        f"warm-up, threads: {threads}, inputs {report.batch_inputs}",
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
            f"  gptq: codes of {len(report.compensated)} weight(s) compensated on the samples" + (f"; {rest} rounded to nearest" if rest else ""),
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
    table = Table(title="activation ranges", title_justify="left", show_edge=False)
    for col in ("tensor", "min", "max", "scale", "zero point"):
        table.add_column(col, justify="left" if col == "tensor" else "right")
    for a in report.activations:
        table.add_row(escape(a.name), f"{a.lo:.4g}", f"{a.hi:.4g}", f"{a.scale:.4g}", str(a.zero_point))
    _print_table(console, table)


def _render_gptq(console, report: QuantizeReport) -> None:
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
        widths += f" ({report.quant_format}" + (f", gptq codes for {report.compensated} of them" if report.rounding == "gptq" else "") + ")"
    narrowest = f", uniform {report.choices[0]}-bit {human_bytes(report.narrowest_weight_bytes)}" if report.choices[0] != "8" else ""
    console.print(
        f"  {widths}; weights {human_bytes(report.weight_bytes)} (float {human_bytes(report.float_weight_bytes)}"
        + (f", uniform 8-bit {human_bytes(report.uniform_int8_weight_bytes)}" if report.uniform_int8_weight_bytes is not None else "")
        + f"{narrowest}); file {human_bytes(report.input_bytes)} -> {human_bytes(report.output_bytes)}",
        highlight=False,
    )
    from quantrs.auto import error_budget

    budget_error = error_budget(report.budget.get("min_cosine"), report.budget.get("max_relative_error"))
    if report.static and budget_error is not None and report.floor > budget_error / 2:
        console.print(
            f"  [yellow]note:[/] the activations' own error (floor {report.floor:.3g}) takes {report.floor / budget_error:.0%} of the "
            "budget, so the weights have little room: quantize activations less (calibrate --exclude...), or drop --static",
            highlight=False,
        )
    console.print(
        f"  {report.evaluations} evaluation(s) on {report.held_out_samples} held-out sample(s); sensitivity on "
        f"{report.sensitivity_samples} of {report.tuning_samples} sample(s) in {report.sensitivity_seconds:.1f} s; {report.seconds:.1f} s in all; "
        f"error model: gain {report.gain:.3g}, floor {report.floor:.3g}",
        highlight=False,
    )
    table = Table(title="candidates (predicted vs measured on held-out samples)", title_justify="left", show_edge=False)
    for col in ("#", "widths", "weights", "predicted cosine", "measured cosine", "relative L2", "budget"):
        table.add_column(col, justify="left" if col == "widths" else "right")
    for c in report.candidates:
        worst = min(c.outputs, key=lambda o: o.cosine)
        table.add_row(
            str(c.index + 1) + (" *" if c.index == report.chosen else ""),
            ", ".join(f"{n}x{w}" for w, n in c.widths.items()),
            human_bytes(c.weight_bytes),
            f"{c.predicted_cosine:.5f}",
            f"{worst.cosine:.5f}",
            f"{max(o.relative_l2 for o in c.outputs):.4g}",
            "met" if c.met else "missed",
        )
    _print_table(console, table)
    layers = Table(title="widths (local relative squared error at each width)", title_justify="left", show_edge=False)
    layers.add_column("weight")
    layers.add_column("consumer")
    layers.add_column("width", justify="right")
    for w in report.choices:
        layers.add_column(f"error at {w}", justify="right")
    for layer in report.layers:
        layers.add_row(
            escape(layer.name), escape(layer.consumer), layer.width, *[f"{layer.errors[w]:.3g}" for w in report.choices]
        )
    _print_table(console, layers)
    if report.fixed:
        widest = max(w for w in report.choices if w != "float")
        console.print(f"  inside bodies, not measured, at {widest} bits: {escape(', '.join(report.fixed))}", highlight=False)
