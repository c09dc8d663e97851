"""A self-contained HTML page for a validation report: the summary, the per-layer error ranking
as a chart, and weight-distribution plots of the worst layers. Charts are drawn by matplotlib
(the optional extra `quantrs[report]`) and embedded as PNG, so the page has no dependencies.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from quantrs.errors import ConfigError, OutputError, QuantrsError
from quantrs.report import AutoReport, ValidationReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_html_report", "write_auto_html", "require_matplotlib", "check_report_path"]

WORST_LAYERS_PLOTTED = 4


def _pyplot() -> ModuleType:
    """matplotlib.pyplot, drawing off screen (Agg)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--report needs matplotlib: pip install 'quantrs[report]'") from None
    return plt


def require_matplotlib() -> None:
    """ConfigError now, when the page could not be drawn later."""
    _pyplot()


def check_report_path(path: Path, models: Sequence[Path], outputs: Sequence[Path] = ()) -> None:
    """Refuse, before any work, a page path that is a file the command reads (a model or its
    external data) or writes (`outputs`): writing the page would destroy it."""
    from quantrs.model import load_model
    from quantrs.pipeline import input_files, output_files, same_file

    files: list[Path] = []
    for model in models:
        try:
            files += input_files(load_model(model))
        except QuantrsError:  # the command itself says why it cannot read it
            files.append(model)
    for out in outputs:
        files += output_files(out)
    for f in files:
        if same_file(path, f):
            raise OutputError(f"{path}: the --report page would overwrite {f}; choose another path")
        if path.resolve() == f.resolve():
            raise OutputError(f"{path}: the --report page would be overwritten by {f}; choose another path")


def _write_page(path: Path, text: str) -> None:
    """Atomically: a page appears whole or not at all, and never writes through a link."""
    folder = path.parent if str(path.parent) else Path(".")
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _ranking_chart(plt: ModuleType, report: ValidationReport) -> str | None:
    layers = [layer for layer in report.layers or [] if layer.local_sqnr_db is not None or math.isfinite(layer.weight_sqnr_db)]
    if not layers:
        return None
    layers = layers[:30]
    values = [layer.local_sqnr_db if layer.local_sqnr_db is not None else layer.weight_sqnr_db for layer in layers]
    values = [v if math.isfinite(v) else 99.0 for v in values]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(layers) + 1.2))
    ax.barh(range(len(layers)), values, color="#c0392b")
    ax.set_yticks(range(len(layers)), [layer.name for layer in layers], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR at the layer's output, dB (lower hurts more)")
    ax.set_title("Layers ranked by the error they inject")
    data = _png(fig)
    plt.close(fig)
    return data


def _distribution_chart(plt: ModuleType, name: str, original: np.ndarray, dequantized: np.ndarray) -> str:
    fig, ax = plt.subplots(figsize=(6, 2.6))
    bins = np.linspace(float(original.min()), float(original.max()), 80) if original.size else 10
    ax.hist(original.ravel(), bins=bins, alpha=0.6, label="float32", color="#2c7fb8")
    ax.hist(dequantized.ravel(), bins=bins, alpha=0.6, label="dequantized", color="#e6550d")
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=8)
    data = _png(fig)
    plt.close(fig)
    return data


def write_html_report(report: ValidationReport, path: str | os.PathLike[str]) -> Path:
    """Write the page and return its path."""
    from quantrs.model import load_model
    from quantrs.dequantize import dequantized_weights

    plt = _pyplot()
    path = Path(path)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>quantrs validation</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
        ".ok{color:#1a7f37}.bad{color:#c0392b;font-weight:bold}</style></head><body>",
        f"<h1>quantrs validation: {'<span class=ok>PASSED</span>' if report.passed else '<span class=bad>FAILED</span>'}</h1>",
        f"<p>{esc(report.original)} ({report.original_bytes:,} bytes) vs {esc(report.quantized)} "
        f"({report.quantized_bytes:,} bytes); {report.samples} sample(s), {esc(report.samples_source)}.</p>",
        "<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>",
    ]
    for c in report.checks:
        parts.append(
            f"<tr><td>{esc(c.name)}</td><td class={'ok' if c.passed else 'bad'}>{'pass' if c.passed else 'FAIL'}</td>"
            f"<td>{esc(c.detail)}</td></tr>"
        )
    parts.append(
        "</table><h2>Output agreement</h2><table>"
        "<tr><th>output</th><th>cosine</th><th>max abs error</th><th>relative L2</th><th>top-1</th></tr>"
    )
    for o in report.outputs:
        top1 = "" if o.top1_agreement is None else f"{o.top1_agreement:.2%}"
        parts.append(
            f"<tr><td>{esc(o.name)}</td><td>{o.cosine:.6f}</td><td>{o.max_abs_error:.4g}</td><td>{o.relative_l2:.4g}</td><td>{top1}</td></tr>"
        )
    parts.append("</table>")
    if report.thresholds:
        parts.append("<h2>Thresholds</h2><table><tr><th>threshold</th><th>output</th><th>value</th><th>result</th></tr>")
        for t in report.thresholds:
            parts.append(
                f"<tr><td>{t.name} {t.limit}</td><td>{esc(t.output)}</td><td>{t.value:.6g}</td>"
                f"<td class={'ok' if t.passed else 'bad'}>{'pass' if t.passed else 'MISSED'}</td></tr>"
            )
        parts.append("</table>")
    if report.suggested_exclude is not None or report.suggestion_note:
        parts.append(
            f"<p><b>Suggested exclude list:</b> {esc(', '.join(report.suggested_exclude or []) or '-')} "
            f"({esc(report.suggestion_note)})</p>"
        )
    if report.layers:
        chart = _ranking_chart(plt, report)
        if chart:
            parts.append(f"<h2>Per-layer error</h2><img alt='per-layer ranking' src='data:image/png;base64,{chart}'>")
        parts.append(
            "<table><tr><th>#</th><th>weight</th><th>consumer</th><th>storage</th>"
            "<th>weight SQNR dB</th><th>local SQNR dB</th><th>local rel. L2</th></tr>"
        )
        for i, layer in enumerate(report.layers, 1):
            local = "" if layer.local_sqnr_db is None else f"{layer.local_sqnr_db:.2f}"
            rel = "" if layer.local_relative_l2 is None else f"{layer.local_relative_l2:.4g}"
            parts.append(
                f"<tr><td>{i}</td><td>{esc(layer.name)}</td><td>{esc(layer.consumer)}</td><td>{layer.storage}</td>"
                f"<td>{layer.weight_sqnr_db:.2f}</td><td>{local}</td><td>{rel}</td></tr>"
            )
        parts.append("</table><h2>Weight distributions of the worst layers</h2>")
        orig, quant = load_model(report.original), load_model(report.quantized)
        deq = dequantized_weights(orig, quant)
        for layer in report.layers[:WORST_LAYERS_PLOTTED]:
            if layer.name in deq:
                chart = _distribution_chart(plt, layer.name, np.asarray(orig.weights.array(layer.name)), deq[layer.name][1])
                parts.append(f"<img alt='{esc(layer.name)}' src='data:image/png;base64,{chart}'>")
    parts.append("<p style='color:#888;font-size:12px'>made by quantrs validate --report</p></body></html>")
    _write_page(path, "\n".join(parts))
    return path


def write_auto_html(report: AutoReport, path: str | os.PathLike[str]) -> Path:
    """A page for `quantrs auto`: the size/accuracy trade-off of the candidates tried (measured
    and predicted), and the width chosen for each layer with its local errors."""
    plt = _pyplot()
    path = Path(path)
    esc = html.escape
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sizes = [c.weight_bytes / 1e6 for c in report.candidates]
    measured = [min(o.cosine for o in c.outputs) for c in report.candidates]
    predicted = [c.predicted_cosine for c in report.candidates]
    ax.scatter(sizes, measured, color=["#1a7f37" if c.met else "#c0392b" for c in report.candidates], label="measured", zorder=3)
    ax.scatter(sizes, predicted, marker="x", color="#555", label="predicted", zorder=2)
    for c, x, y in zip(report.candidates, sizes, measured):
        ax.annotate(str(c.index + 1), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if "min_cosine" in report.budget:
        ax.axhline(report.budget["min_cosine"], color="#999", linestyle="--", label="budget")
    ax.set_xlabel("weights (MB)")
    ax.set_ylabel("cosine to float (worst output)")
    ax.legend(fontsize=8)
    chart = _png(fig)
    plt.close(fig)
    verdict = "<span class=ok>MET</span>" if report.met else f"<span class=bad>MISSED by {report.miss:.4g}</span>"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>quantrs auto</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}"
        ".ok{color:#1a7f37}.bad{color:#c0392b;font-weight:bold}</style></head><body>",
        f"<h1>quantrs auto: {verdict}</h1>",
        f"<p>{esc(report.input)} -> "
        f"{esc(report.output if report.met else f'{report.closest} (the closest model; nothing at {report.output})')}; "
        f"budget {esc(str(report.budget))}; candidate {report.chosen + 1} "
        f"written ({report.output_bytes:,} bytes); {report.evaluations} evaluation(s), {report.seconds:.1f} s.</p>",
        f"<h2>Size and accuracy of the candidates</h2><img alt='trade-off' src='data:image/png;base64,{chart}'>",
        "<h2>Widths</h2><table><tr><th>weight</th><th>consumer</th><th>width</th>"
        + "".join(f"<th>error at {esc(w)}</th>" for w in report.choices)
        + "</tr>",
    ]
    for layer in report.layers:
        cells = "".join(f"<td>{layer.errors[w]:.3g}</td>" for w in report.choices)
        parts.append(f"<tr><td>{esc(layer.name)}</td><td>{esc(layer.consumer)}</td><td>{esc(layer.width)}</td>{cells}</tr>")
    parts.append("</table></body></html>")
    _write_page(path, "\n".join(parts))
    return path
