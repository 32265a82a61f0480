"""Fuzz the report.json reader: any byte string or JSON value gives a Report or FileFormatError, nothing else.

``make fuzz`` raises the example count through SHRINK_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shrink.errors import FileFormatError
from shrink.report import Report, Row

N = int(os.environ.get("SHRINK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck), database=None)

_VALID = Report(
    rows=[Row("fp32", "torch eager", "fp32", {"accuracy": 99.0}, 10, 10, 40, 5, {"1": {"median_ms": 1.0}})],
    metric="accuracy",
).to_dict()
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _read(data: bytes) -> Report | None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "report.json"
        path.write_bytes(data)
        try:
            return Report.from_json(path)
        except FileFormatError as exc:
            assert "report.json: not a valid shrink report" in str(exc)
            return None


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_report_bytes(data: bytes) -> None:
    result = _read(data)
    assert result is None or isinstance(result, Report)


@FUZZ
@given(st.sampled_from(["rows", "metric", "machine", "title"]), _JSON)
def test_fuzz_report_fields(key: str, value: object) -> None:
    doc = json.loads(json.dumps(_VALID))
    doc[key] = value
    result = _read(json.dumps(doc).encode())
    assert result is None or isinstance(result, Report)


def test_valid_report_reads_back() -> None:
    result = _read(json.dumps(_VALID).encode())
    assert result is not None and result.rows[0].metrics == {"accuracy": 99.0}
