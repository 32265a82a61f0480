"""report.html and the text table: structure, comparisons with the baseline, unstable latencies, layouts."""

import base64
import re
import shutil
import subprocess
from html import unescape

import pytest

from shrink.errors import FileFormatError
from shrink.report import Report, Row, write_html
from shrink.report.format import clean_note
from shrink.report.html import render_html


def _lat(median: float, lo: float, hi: float) -> dict:
    return {"median_ms": median, "min_ms": lo, "max_ms": hi}


def _report():
    rows = [
        Row("fp32", "torch eager", "fp32", {"accuracy": 99.0}, 100, 100, 4000, 1000, {"1": _lat(1.0, 0.9, 1.2)}),
        Row(
            "int8",
            "onnxruntime",
            "int8 (real, integer kernels)",
            {"accuracy": 98.7},
            None,
            None,
            1000,
            1000,
            {"1": _lat(0.4, 0.3, 0.5)},
            ["weights per-channel"],
        ),
    ]
    return Report(rows=rows, metric="accuracy")


def big_report(n: int = 13) -> Report:
    """n models crowded near 99% (one far below), batch 1 and 32, one unstable baseline b32 latency."""
    rows = []
    for i in range(n):
        acc = 58.3 if i == 5 else 98.9 - 0.05 * i
        sim = i % 3 == 2
        b32 = _lat(285.7, 0.963, 348.9) if i == 0 else _lat(10.0 - 0.5 * i, 9.5 - 0.5 * i, 10.5 - 0.5 * i)
        rows.append(
            Row(
                "baseline" if i == 0 else f"model {i} with a longish name",
                "torch eager" if sim or i % 2 else "onnxruntime",
                "fake-quant (simulated)" if sim else "fp32" if i == 0 else "int8 (real, integer kernels)",
                {"accuracy": acc},
                95_000 - 5000 * i,
                90_000 - 6000 * i,
                380_000 // (i + 1),
                5_000_000,
                {"1": _lat(0.5 - 0.02 * i, (0.5 - 0.02 * i) * 0.95, (0.5 - 0.02 * i) * 1.1), "32": b32},
                [f"int8_static: int8_static: note {i}"] if sim else [],
            )
        )
    return Report(rows=rows, metric="accuracy", machine={"cpu": "test cpu", "threads": 2}, title="big report")


def test_html_has_table_plot_notes_and_recipe(tmp_path):
    path = write_html(_report(), tmp_path / "report.html", recipe="model: {zoo: digits_cnn}\n")
    text = path.read_text()
    assert text.count("<tr") == 3  # header + 2 models
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 1 and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "weights per-channel" in text and 'id="recipe">model: {zoo: digits_cnn}' in text


def test_big_report_compares_with_the_baseline_and_flags_unstable_latency():
    report = big_report()
    text = render_html(report)
    body = re.search(r"<tbody>(.*)</tbody>", text, re.S)
    assert body is not None and body.group(1).count("<tr") == 13
    for header in ("Δ accuracy", "×smaller", "latency b1 (ms)", "latency b32 (ms)", "×faster b1", "×faster b32"):
        assert f"<th>{header}</th>" in text
    assert text.count(
        'class="num unstable"'
    ) == 1 and "batch 32 unstable (slowest round > 1.5x the fastest) for baseline:" in unescape(text)
    assert text.count('class="sim wrap"') == 4 and text.count('class="real wrap"') == 9
    assert "int8_static: int8_static" not in text and "int8_static: note 2" in text
    cells = report.cells()
    cols = report.columns()
    row3 = dict(zip(cols, cells[3], strict=True))
    assert row3["Δ accuracy"] == "-0.15" and row3["×smaller"] == "×4.00"
    assert row3["×faster b1"] == "×1.14"  # 0.5 / 0.44


def test_plot_has_a_legend_entry_per_model_and_no_overlapping_labels():
    import matplotlib.pyplot as plt

    from shrink.report import plots

    seen = {}
    real_label = plots._label

    def spy(ax, points):
        real_label(ax, points)
        renderer = ax.figure.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        seen[ax.get_title()] = (len(points), boxes, ax.get_xscale(), ax.get_yscale(), ax.get_xlabel())
        legend = ax.figure.legends[0]
        seen["legend"] = [t.get_text() for t in legend.get_texts()]

    pytest.MonkeyPatch().setattr(plots, "_label", spy)
    try:
        png = plots.report_png(big_report(), "accuracy")
    finally:
        plots._label = real_label
        plt.close("all")
    assert png is not None and png[:4] == b"\x89PNG"
    assert len(seen["legend"]) == 14  # 13 models + the unstable-latency ring
    assert sum("(simulated)" in t for t in seen["legend"]) == 4
    panels = [v for k, v in seen.items() if k != "legend"]
    assert len(panels) == 3  # size, latency b1, latency b32
    for count, boxes, xscale, yscale, xlabel in panels:
        assert count == 13 and len(boxes) == 13 and xscale == yscale == "log"
        assert "(KiB" in xlabel or "(ms per batch" in xlabel
        overlaps = sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert overlaps == 0


def test_text_table_layouts():
    report = big_report()
    plain = report.render()  # a file or a pipe: no box drawing
    assert "┃" not in plain and "│" not in plain and "median [fastest–slowest]" in plain
    assert "warning: latency at batch 32 unstable (slowest round > 1.5x the fastest) for baseline:" in plain
    assert "batch 1 unstable" not in plain
    assert "285.700 [0.963–348.900] !" in plain
    small = _report().render(width=200)
    assert "┃" in small and max(len(line) for line in small.splitlines()[:8]) <= 200
    narrow = report.render(width=60)  # too narrow for the table: one block per model
    assert "┃" not in narrow and "\n  ×smaller" in narrow.replace("×smaller ", "×smaller")
    assert max(len(line) for line in narrow.split("\n\nlatency:")[0].splitlines()) <= 60


def test_when_every_latency_is_unstable_one_line_says_so():
    report = big_report(4)
    for row in report.rows:
        row.latency["1"] = _lat(1.0, 0.5, 9.0)
    assert [w.split(": the machine")[0] for w in report.warnings()] == [
        "latency at batch 1 unstable (slowest round > 1.5x the fastest) for all 4 models",
        "latency at batch 32 unstable (slowest round > 1.5x the fastest) for baseline",
    ]


def test_notes_do_not_repeat_their_prefix():
    assert clean_note("int8_static: int8_static: weights u8") == "int8_static: weights u8"
    assert clean_note("a: a: a: x") == "a: x"
    assert clean_note("svd: kept fc (rank 4)") == "svd: kept fc (rank 4)"


def test_report_json_round_trip():
    r = _report()
    again = Report.from_dict(r.to_dict())
    assert again.rows[1].metrics == {"accuracy": 98.7}
    assert "int8 (real, integer kernels)" in again.render()


def test_report_from_json_round_trip_and_bad_files(tmp_path):
    path = _report().to_json(tmp_path / "report.json")
    assert Report.from_json(path).rows[0].size_bytes == 4000
    for i, text in enumerate(["{not json", "[1, 2]", '{"rows": [{"name": 1}], "metric": "accuracy"}', '{"rows": 3}']):
        bad = tmp_path / f"bad{i}.json"
        bad.write_text(text)
        with pytest.raises(FileFormatError, match=f"bad{i}.json: not a valid shrink report"):
            Report.from_json(bad)


@pytest.mark.slow
def test_html_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = write_html(big_report(), tmp_path / "report.html", recipe="stages: []\n")
    shot = tmp_path / "r.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1400,2000"]
    subprocess.run([*cmd, page.as_uri()], check=True, timeout=120, capture_output=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a page with a table and a plot, not blank
