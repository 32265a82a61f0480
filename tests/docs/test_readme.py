"""Every python snippet of the README runs as written, each in a namespace of its own, in a scratch folder (they
write files)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_a_bring_your_own_model_example_of_at_most_ten_lines():
    first = [line for line in _blocks()[0].splitlines() if line.strip()]
    assert len(first) <= 10, first
    for step in ("shrink.prune(", "shrink.save(", "shrink.evaluate("):
        assert any(step in line for line in first), step


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_blocks())), ids=lambda i: f"block{i + 1}")
def test_readme_snippet_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _blocks()[index]
    exec(compile(code, f"README.md[python block {index + 1}]", "exec"), {"__name__": "readme"})  # noqa: S102


def test_readme_and_docs_point_only_inside_the_repository():
    """A user has the repository and nothing beside it: no link or path in the README or docs/ leaves it."""
    root = README.parent
    pages = [README, *sorted((root / "docs").rglob("*.md"))]
    outside = [p.relative_to(root) for p in pages if "../shared" in p.read_text(encoding="utf-8")]
    assert not outside, outside
    for target in re.findall(r"\]\(([^)#]+)", README.read_text(encoding="utf-8")):
        if not target.startswith(("http://", "https://")):
            assert (root / target).resolve().is_relative_to(root.resolve()), target
            assert (root / target).exists(), f"README links to {target}, which does not exist"
