"""report.html: the table plus accuracy-vs-size and accuracy-vs-latency plots, embedded as PNG images."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shrink.export.artifact import atomic_write_bytes  # noqa: E402
from shrink.report.table import Report  # noqa: E402

__all__ = ["write_html", "scatter_png"]


def _primary_metric(report: Report) -> str:
    keys = list(dict.fromkeys(k for r in report.rows for k in r.metrics))
    return keys[0] if keys else report.metric


def scatter_png(points: list[tuple[str, float, float]], xlabel: str, ylabel: str, logx: bool = False) -> bytes:
    """A labelled scatter plot as PNG bytes."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, x, y in points:
        ax.scatter([x], [y])
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def write_html(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write the report as a self-contained HTML page (atomically)."""
    metric = _primary_metric(report)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in report.columns())
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in report.cells())
    plots = []
    pts = [(r.name, r.size_bytes / 1024, r.metrics[metric]) for r in report.rows if metric in r.metrics]
    if pts:
        plots.append(_img(scatter_png(pts, "size on disk (KiB)", metric, logx=True), f"{metric} vs size"))
    batch = next((b for r in report.rows for b in r.latency), None)
    if batch is not None:
        pts = [
            (r.name, r.latency[batch]["median_ms"], r.metrics[metric])
            for r in report.rows
            if metric in r.metrics and batch in r.latency
        ]
        plots.append(_img(scatter_png(pts, f"median latency, batch {batch} (ms)", metric), f"{metric} vs latency"))
    notes = "".join(f"<li>{html.escape(r.name)}: {html.escape(n)}</li>" for r in report.rows for n in r.notes)
    machine = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in report.machine.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;font-size:13px}}th{{background:#f3f3f3}}img{{margin:1em 1em 0 0}}</style></head><body>
<h1>{html.escape(report.title)}</h1><table><tr>{head}</tr>{body}</table>
<h2>Plots</h2>{"".join(plots)}<h2>Notes</h2><ul>{notes or "<li>none</li>"}</ul>
<h2>Machine</h2><ul>{machine}</ul></body></html>"""
    atomic_write_bytes(path, page.encode())
    return Path(path)
