"""Every python snippet in docs/guides runs as written (the blocks of one guide share a namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDES = sorted((Path(__file__).resolve().parents[2] / "docs" / "guides").glob("*.md"))
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def test_there_is_a_guide_per_family():
    assert {g.stem for g in GUIDES} >= {"prune", "quant", "distill", "lowrank", "deepcomp"}


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
def test_guide_snippets_run(guide: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = BLOCK.findall(guide.read_text(encoding="utf-8"))
    assert blocks, f"{guide.name} has no python snippet"
    namespace: dict[str, object] = {"__name__": f"guide_{guide.stem}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{guide.name}[block {i + 1}]", "exec"), namespace)  # noqa: S102


def test_stage_reference_lists_every_stage_and_field():
    from shrink.stage_doc import reference_markdown
    from shrink.stages import registered_types

    text = reference_markdown()
    for name, cls in registered_types().items():
        assert f"\n## {name}\n" in text
        assert all(f"| `{field}` |" in text for field in cls.model_fields)


@pytest.mark.slow
def test_make_docs_builds_without_warnings(tmp_path):
    pytest.importorskip("pdoc", reason="pdoc is a dev requirement (requirements-dev.txt)")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "docs_build", Path(__file__).resolve().parents[2] / "docs" / "build.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.build(tmp_path) == []
    assert (tmp_path / "api" / "shrink.html").is_file() and (tmp_path / "guides" / "quant.html").is_file()
    assert "int8_static" in (tmp_path / "stages.html").read_text()
