"""The stage reference (``shrink stages``, ``make docs``) documents every field and prints clean summary lines."""

from __future__ import annotations

import pytest

from shrink.stage_doc import _first_line, describe, field_docs, reference_markdown, summary
from shrink.stages import registered_types

STAGES = registered_types()


def test_every_stage_field_has_a_doc():
    missing = [
        f"{name}.{f.name} ({cls.__module__}.{cls.__name__})"
        for name, cls in STAGES.items()
        for f in field_docs(cls)
        if not f.doc.strip()
    ]
    assert not missing, f"{len(missing)} stage fields have no doc (add a `#:` comment above each):\n" + "\n".join(
        missing
    )


def test_field_docs_are_one_line():
    multi = [f"{name}.{f.name}" for name, cls in STAGES.items() for f in field_docs(cls) if "\n" in f.doc]
    assert multi == []


def test_first_line_collapses_docstring_indentation():
    class Fake:
        """First sentence runs over
        two lines,   with   spaces.

        Second paragraph, left out.
        """

    assert _first_line(Fake) == "First sentence runs over two lines, with spaces."


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_summary_has_no_double_spaces(name: str):
    line = _first_line(STAGES[name])
    assert line, f"{name}: the config class has no docstring"
    assert "  " not in line, f"{name}: summary {line!r} has a run of spaces"
    assert f"  {line}" in describe(name).splitlines()
    assert f"\n{line}\n" in reference_markdown()


def test_summary_table_ends_each_row_with_the_clean_first_line():
    rows = summary().splitlines()
    for name, cls in STAGES.items():
        line = _first_line(cls)
        row = next(r for r in rows if r.split(" ", 1)[0] == name)
        assert row.endswith(f"  {line}"), row
