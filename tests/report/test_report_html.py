import base64
import re

from shrink.report import Report, Row, write_html


def _report():
    rows = [
        Row(
            "fp32",
            "torch eager",
            "fp32",
            {"accuracy": 99.0},
            100,
            100,
            4000,
            1000,
            {"1": {"median_ms": 1.0, "min_ms": 0.9, "max_ms": 1.2}},
        ),
        Row(
            "int8",
            "onnxruntime",
            "int8 (real, integer kernels)",
            {"accuracy": 98.7},
            None,
            None,
            1100,
            1000,
            {"1": {"median_ms": 0.4, "min_ms": 0.3, "max_ms": 0.5}},
            ["weights per-channel"],
        ),
    ]
    return Report(rows=rows, metric="accuracy")


def test_html_has_table_and_two_embedded_plots(tmp_path):
    path = write_html(_report(), tmp_path / "report.html")
    text = path.read_text()
    assert text.count("<tr>") == 3
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "weights per-channel" in text


def test_report_json_round_trip():
    r = _report()
    again = Report.from_dict(r.to_dict())
    assert again.rows[1].metrics == {"accuracy": 98.7}
    assert "int8 (real, integer kernels)" in again.render()


def test_report_from_json_round_trip_and_bad_files(tmp_path):
    import pytest

    from shrink.errors import FileFormatError

    path = _report().to_json(tmp_path / "report.json")
    assert Report.from_json(path).rows[0].size_bytes == 4000
    for i, text in enumerate(["{not json", "[1, 2]", '{"rows": [{"name": 1}], "metric": "accuracy"}', '{"rows": 3}']):
        bad = tmp_path / f"bad{i}.json"
        bad.write_text(text)
        with pytest.raises(FileFormatError, match=f"bad{i}.json: not a valid shrink report"):
            Report.from_json(bad)
