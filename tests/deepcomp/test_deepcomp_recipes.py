"""Issue 4's recipes run end to end in bounded form (fewer epochs, fewer timing repetitions)."""

from pathlib import Path

import pytest
import yaml

import shrink
from shrink.deepcomp import load_compressed
from shrink.zoo import DigitsCNN

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _bounded(name: str, tmp_path: Path, max_epochs: int = 1) -> Path:
    recipe = yaml.safe_load((RECIPES / name).read_text())
    for stage in recipe["stages"]:
        for key in ("epochs", "prune_epochs", "cluster_epochs"):
            if key in stage:
                stage[key] = min(stage[key], max_epochs)
    recipe["evaluate"] = {"batch_sizes": [1], "threads": 1, "reps": 1, "warmup": 0}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
def test_deep_compression_recipe_writes_the_file_and_reports_it(tmp_path):
    result = shrink.run(_bounded("deep_compression.yaml", tmp_path), tmp_path / "out", progress=False)
    names = [row.name for row in result.report.rows]
    assert names[0] == "baseline" and len(names) == 2
    assert any("deep compression file" in n for row in result.report.rows for n in row.notes)
    decoded = load_compressed(tmp_path / "out" / "model.dcz", DigitsCNN)
    for key, value in result.model.state_dict().items():
        assert (decoded.state_dict()[key] == value).all(), key


@pytest.mark.slow
def test_distill_recipe_trains_a_student_and_recovers_it(tmp_path):
    # three epochs a stage: after one, a fresh student lands near 50% or below depending on the CPU's float kernels
    result = shrink.run(_bounded("distill_digits.yaml", tmp_path, max_epochs=3), tmp_path / "out", progress=False)
    rows = {row.name: row for row in result.report.rows}
    assert rows["student (KD from the CNN)"].params < 0.25 * rows["baseline"].params
    recovered = rows["pruned student + KD recovery"].metrics["accuracy"]
    assert recovered > 50.0 and recovered > rows["student pruned 70%"].metrics["accuracy"]
