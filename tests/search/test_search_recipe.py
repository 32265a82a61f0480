"""The bundled hardware-aware recipe runs end to end; the search stage parses as a recipe stage."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from shrink.recipe import load_recipe, run

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe() -> Path:
    return Path(str(resources.files("shrink").joinpath("recipes/hw_search.yaml")))


@pytest.mark.slow
def test_mixed_precision_recipe_runs(tmp_path):
    """Slow: the recipe's report times every model at 2 threads."""
    result = run(_recipe(), tmp_path, progress=False)
    row = result.report.row("mixed precision @ 4-bit bytes (simulated)")
    assert "simulated" in row.execution
    assert row.metrics["accuracy"] > 95.0
    assert any("mixed precision (milp" in n for n in row.notes)
    assert (tmp_path / "report.html").exists()


def test_search_stage_parses_in_a_recipe(tmp_path):
    """The search stage line the recipe's comment offers parses as written."""
    text = _recipe().read_text()
    offered = next(line for line in text.splitlines() if line.startswith("#   - {type: search"))
    path = tmp_path / "r.yaml"
    path.write_text(text.replace("stages:\n", f"stages:\n  {offered.lstrip('# ')}\n"))
    stages = load_recipe(path).configs()
    assert [s.config.type_name for s in stages] == ["search", "mixed_precision"]
    assert stages[0].config.backend == "ray" and stages[0].config.objective == "latency"
