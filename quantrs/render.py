"""Rich text renderings of the report objects, for people (JSON comes from the same objects)."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from quantrs._console import stdout_console
from quantrs.report import BatchReport, InfoReport, PlanReport, QuantizeReport

__all__ = ["render_quantize", "render_info", "render_plans", "render_batch", "human_bytes"]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def render_quantize(report: QuantizeReport) -> None:
    console = stdout_console()
    granularity = "per-channel" if report.per_channel else "per-tensor"
    scheme = "symmetric" if report.symmetric else "asymmetric"
    console.print(f"[bold green]Quantized[/] {report.input} -> {report.output}")
    console.print(f"  {report.bits}-bit {granularity} {scheme}, stored as {report.storage}")
    opset = f"{report.opset_before}" + (f" -> {report.opset_after} (converted)" if report.opset_converted else "")
    console.print(f"  opset {opset}")
    console.print(
        f"  size {human_bytes(report.input_bytes)} -> {human_bytes(report.output_bytes)} "
        f"({report.compression:.2f}x smaller); weights {human_bytes(report.float_weight_bytes)} -> "
        f"{human_bytes(report.quantized_weight_bytes)}"
    )
    console.print(
        f"  {report.quantized_count} tensors quantized, {report.skipped_count} left as they are, "
        f"in {report.seconds:.2f} s"
    )
    quantized = [t for t in report.tensors if t.quantized]
    if quantized:
        table = Table(title="quantized", title_justify="left", show_edge=False)
        for col in ("tensor", "shape", "axis", "storage", "MSE", "max abs err"):
            table.add_column(col, justify="right" if col in ("MSE", "max abs err", "axis") else "left")
        for t in quantized:
            axis = "-" if t.axis is None else str(t.axis)
            table.add_row(t.name, "x".join(map(str, t.shape)), axis, t.storage or "", f"{t.mse:.3g}", f"{t.max_abs_error:.3g}")
        console.print(table)
    skipped = [t for t in report.tensors if not t.quantized and t.dtype == "FLOAT"]
    if skipped:
        table = Table(title="float32 tensors left as they are", title_justify="left", show_edge=False)
        table.add_column("tensor")
        table.add_column("shape")
        table.add_column("reason")
        for t in skipped:
            table.add_row(t.name, "x".join(map(str, t.shape)) or "scalar", t.reason)
        console.print(table)
    others = Counter(t.dtype for t in report.tensors if not t.quantized and t.dtype != "FLOAT")
    if others:
        listed = ", ".join(f"{n} {dtype}" for dtype, n in sorted(others.items()))
        console.print(f"  not float32, left as they are: {listed}")


def render_info(report: InfoReport) -> None:
    console = stdout_console()
    console.print(f"[bold]{report.path}[/]  ({human_bytes(report.file_bytes)})")
    opsets = ", ".join(f"{d} {v}" for d, v in report.opsets.items())
    console.print(f"  IR {report.ir_version}, opsets: {opsets}" + (f", producer: {report.producer}" if report.producer else ""))
    for title, values in (("inputs", report.inputs), ("outputs", report.outputs)):
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("name")
        table.add_column("type")
        table.add_column("shape")
        for v in values:
            table.add_row(v.name, v.dtype, "[" + ", ".join("?" if d is None else str(d) for d in v.shape) + "]")
        console.print(table)
    ops = Table(title=f"{report.node_count} nodes", title_justify="left", show_edge=False)
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, n in report.op_counts.items():
        ops.add_row(op, str(n))
    console.print(ops)
    console.print(
        f"  float32 weights: {report.float_weight_count} tensors, {report.float_weight_elements:,} values, "
        f"{human_bytes(report.float_weight_bytes)}" + (" (external data)" if report.external_data else "")
    )
    b = report.build
    console.print(
        f"  quantrs {b.quantrs}: OpenMP {'on' if b.openmp else 'off (serial build)'}, {b.threads} thread(s); "
        f"numpy {b.numpy}, onnx {b.onnx}, onnxruntime {b.onnxruntime}"
    )


def render_plans(plans: list[PlanReport]) -> None:
    """The dry run: for each model, every float32 tensor with its bits and axis, or why not."""
    console = stdout_console()
    for plan in plans:
        target = f" -> {plan.output}" if plan.output else ""
        console.print(f"[bold]{plan.input}[/]{target}: {plan.quantized_count} tensors would be quantized")
        table = Table(show_edge=False)
        for col in ("tensor", "shape", "bits", "axis", "use / reason"):
            table.add_column(col)
        floats = [t for t in plan.tensors if t.dtype == "FLOAT"]
        for t in floats:
            bits = str(t.bits) if t.quantize else "-"
            axis = "-" if t.axis is None else str(t.axis)
            reason = t.reason if t.quantize else f"[dim]skip: {t.reason}[/]"
            table.add_row(t.name, "x".join(map(str, t.shape)) or "scalar", bits, axis, reason)
        console.print(table)
        others = len(plan.tensors) - len(floats)
        if others:
            console.print(f"  and {others} tensors that are not float32")


def render_batch(report: BatchReport) -> None:
    console = stdout_console()
    table = Table(show_edge=False)
    for col in ("model", "status", "size", "time", "error"):
        table.add_column(col, justify="right" if col in ("size", "time") else "left")
    colours = {"ok": "green", "failed": "red", "skipped": "yellow", "cancelled": "yellow"}
    for r in report.results:
        size = f"{human_bytes(r.input_bytes)} -> {human_bytes(r.output_bytes)}" if r.output_bytes else human_bytes(r.input_bytes)
        table.add_row(r.input, f"[{colours[r.status]}]{r.status}[/]", size, f"{r.seconds:.2f} s", r.error or "")
    console.print(table)
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("ok", "failed", "skipped", "cancelled") if report.count(s))
    where = f"on {report.scheduler}" if report.scheduler else f"with {report.jobs} job(s)"
    console.print(f"{len(report.results)} models {where} in {report.seconds:.2f} s: {counts}")
