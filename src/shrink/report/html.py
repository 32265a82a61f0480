"""report.html: one self-contained page that reads at a glance.

The table (with Δ metric, ×smaller and ×faster against the baseline, unstable latencies marked), the plots of quality
against size and against latency at every measured batch size (numbered points matching the table's ``#``), the
notes, the machine and the recipe that produced it.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shrink._atomic import atomic_write_bytes  # noqa: E402
from shrink.report.format import LEGEND, UNSTABLE_SPREAD, is_unstable  # noqa: E402
from shrink.report.table import Report  # noqa: E402

__all__ = ["write_html", "scatter_png", "render_html"]


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


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}h1{font-size:1.5em}
h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 5px;font-size:12px;white-space:nowrap}
td.wrap{white-space:normal;min-width:7em}td small{color:#666}
.scroll{overflow-x:auto}td.wrap:nth-child(2){min-width:12em}th{background:#f3f3f3;position:sticky;top:0}td.num{text-align:right}
td.unstable{background:#fde2e2}td.unstable small{color:#b00020;font-weight:bold}tr.baseline td{background:#f6f9ff}
.real{color:#16691b}.sim{color:#9a5b00}.mark{font-size:15px}.legend{max-width:70em;font-size:13px;color:#444}
img{max-width:100%;margin-top:.5em}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:12px}
li{font-size:13px}"""


def _row_html(index: int, cells: list[str], columns: list[str], report: Report) -> str:
    from shrink.report.plots import colour, is_simulated

    row = report.rows[index]
    sim = is_simulated(row)
    glyph = "△" if sim else "●"
    out = [f'<td class="mark" style="color:{matplotlib.colors.to_hex(colour(index))}">{glyph} {index + 1}</td>']
    for col, cell in zip(columns, cells, strict=True):
        text = html.escape(cell)
        if col == "execution":
            kind = ("sim", "simulated") if sim else ("real", "real")
            tag = "" if kind[1] in cell else f" [{kind[1]}]"
            out.append(f'<td class="{kind[0]} wrap">{glyph} {text}{tag}</td>')
        elif col.startswith("latency b") and " [" in cell:
            median, spread = cell.split(" [", 1)
            unstable = is_unstable(row.latency.get(col[len("latency b") :].split()[0], {}))
            css = "num unstable" if unstable else "num"
            flag = f' title="unstable: slowest round > {UNSTABLE_SPREAD:g}x the fastest"' if unstable else ""
            spread = "[" + spread.removesuffix(" !")
            out.append(f'<td class="{css}"{flag}>{html.escape(median)}<br><small>{html.escape(spread)}</small></td>')
        else:
            out.append(f'<td class="{"wrap" if col in ("model", "runtime") else "num"}">{text}</td>')
    return f'<tr class="{"baseline" if index == 0 else ""}">' + "".join(out) + "</tr>"


def _table_html(report: Report) -> str:
    columns = report.columns()
    head = "<th>#</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join(_row_html(i, cells, columns, report) for i, cells in enumerate(report.cells()))
    table = f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _kernels_html(report: Report) -> str:
    """Layer x runtime-row table of the kernel computing each layer (rows that ran an exported graph); "" if none."""
    rows = [(i, r) for i, r in enumerate(report.rows) if r.kernels]
    if not rows:
        return ""
    layers = list(dict.fromkeys(layer for _, r in rows for layer in r.kernels))
    head = "<th>layer</th>" + "".join(f"<th>{i + 1}. {html.escape(r.name)}</th>" for i, r in rows)
    body = "".join(
        f"<tr><td>{html.escape(layer)}</td>"
        + "".join(f"<td>{html.escape(r.kernels.get(layer, '-'))}</td>" for _, r in rows)
        + "</tr>"
        for layer in layers
    )
    return (
        '<h2>Kernels per layer</h2><p class="legend">The ONNX Runtime op that computes each layer after graph '
        "optimization, and its arithmetic.</p>"
        f'<div class="scroll"><table id="kernels"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _list(items: list[str], empty: str = "none") -> str:
    return "<ul>" + ("".join(f"<li>{html.escape(i)}</li>" for i in items) or f"<li>{empty}</li>") + "</ul>"


def render_html(report: Report, recipe: str | None = None) -> str:
    """The report page as a string (see the module docstring)."""
    from shrink.report.plots import report_png

    metric = _primary_metric(report)
    png = report_png(report, metric)
    plots = _img(png, f"{metric} vs size and vs latency at each batch size") if png else "<p>no metric to plot</p>"
    warnings = report.warnings()
    machine = [f"{k}: {v}" for k, v in report.machine.items()]
    base = report.baseline.name if report.baseline else "-"
    recipe_html = f'<h2>Recipe</h2><pre id="recipe">{html.escape(recipe)}</pre>' if recipe else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(report.title)}</h1>
<p class="legend">{len(report.rows)} models, each compared with the baseline <b>{html.escape(base)}</b>.
● real execution (measured on the runtime's kernels), △ simulated (fake-quant: accuracy is an estimate and speed
is not that of an integer kernel). {html.escape(LEGEND)}</p>
<h2>Results</h2>{_table_html(report)}
{_kernels_html(report)}
<h2>Warnings</h2>{_list(warnings, "no unstable latency")}
<h2>Plots</h2><p class="legend">Numbers are the table's <b>#</b>. Error = 100 - accuracy (1 - a fidelity;
perplexity and mse as they are) on a log axis, better up; bars span the fastest to the slowest timed round; a red
ring marks an unstable latency.</p>
{plots}
<h2>Notes</h2>{_list(report.notes())}
<h2>Machine</h2>{_list(machine)}
{recipe_html}</body></html>"""


def write_html(report: Report, path: str | os.PathLike[str], recipe: str | None = None) -> Path:
    """Write the report as a self-contained HTML page (atomically); ``recipe``: the recipe text, shown at the end."""
    atomic_write_bytes(path, render_html(report, recipe).encode())
    return Path(path)
