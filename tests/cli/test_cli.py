"""The `shrink` command: --version, python -m shrink, stages [TYPE], stage lines, table layouts, checkpoints."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

import shrink
from shrink.cli import main
from shrink.console import StageLines, table_width
from shrink.recipe import run
from shrink.stage_doc import field_docs
from shrink.stages import registered_types

RECIPE = """model: {zoo: digits_student, kwargs: {pretrained: true}}
data: {zoo: digits}
stages:
  - {type: magnitude_pruning, sparsity: 0.5, name: "pruned 50%"}
  - {type: finetune, epochs: 1}
  - {type: int8_static, observer: minmax, name: "int8 (fake-quant)"}
  - {type: onnx_export, filename: q.onnx}
evaluate: {batch_sizes: [1, 4], reps: 2, warmup: 0}
"""


def test_version_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "shrink", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"shrink {shrink.__version__}"


def test_stages_lists_every_type_and_shows_one_types_fields(capsys):
    assert main(["stages"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in registered_types())
    assert main(["stages", "int8_static"]) == 0
    text = capsys.readouterr().out
    for f in field_docs(registered_types()["int8_static"]):
        assert f"  {f.name}: {f.type} = {f.default}" in text
    assert "  weight_bits: int (≥ 2, ≤ 8) = 8" in text and "bits per weight" in text
    assert "  observer: 'minmax' |" in text and "= 'percentile'" in text


def test_stages_with_an_unknown_type_is_one_error_line(capsys):
    assert main(["stages", "int8_statc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown stage type 'int8_statc'" in err[0] and "int8_static" in err[0]


def test_stage_lines_on_a_terminal_and_in_a_log():
    log, tty = io.StringIO(), io.StringIO()
    for sink, terminal in ((log, False), (tty, True)):
        lines = StageLines(sink, terminal=terminal)
        lines(2, 5, "finetune", None)
        lines(2, 5, "finetune", 3.14159)
    assert log.getvalue() == "stage 2/5 finetune …\nstage 2/5 finetune took 3.1 s\n"
    assert tty.getvalue() == "stage 2/5 finetune … took 3.1 s\n"
    assert table_width(io.StringIO()) is None  # not a terminal: plain layout


@pytest.mark.slow
def test_run_prints_stage_lines_plain_table_and_removes_checkpoints(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    took = [line for line in err if " took " in line]
    assert [line.split(" took ")[0] for line in took] == [
        "stage 1/5 pruned 50%",
        "stage 2/5 finetune",
        "stage 3/5 int8 (fake-quant)",
        "stage 4/5 onnx_export",
        "stage 5/5 evaluate 5 models",
    ]
    assert "\r" not in captured.err  # no progress bars when stderr is not a terminal
    assert "┃" not in captured.out and "Δ accuracy" in captured.out  # piped: the plain layout
    row = next(line for line in captured.out.splitlines() if line.startswith("onnxruntime"))
    assert "int8 (real, integer kernels)" in row and " fp32 " not in row
    out = tmp_path / "out"
    assert not (out / "checkpoints").exists() and (out / "model.shrink").is_file()
    html = (out / "report.html").read_text()
    assert 'id="recipe"' in html and "magnitude_pruning" in html


@pytest.mark.slow
def test_keep_checkpoints_and_quiet(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.replace("[1, 4]", "[1]"))
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "--quiet", "--keep-checkpoints"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and (tmp_path / "out" / "checkpoints" / "02-finetune" / "last.pt").is_file()
    result = run(recipe, tmp_path / "again", progress=False)
    assert not Path(result.out_dir, "checkpoints").exists()
