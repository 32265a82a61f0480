"""Inputs that used to end `shrink run` in a traceback: each is now one `shrink: error: ...` line naming the field or
path, with a non-zero exit; saves killed mid-write leave no temporary file behind for long; --quiet is quiet."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from torch import nn

import shrink
from shrink.cli import main
from shrink.errors import ConfigError
from shrink.recipe import build_model, run

HEAD = "model: {zoo: digits_cnn}\ndata: {zoo: digits}\nevaluate: {batch_sizes: [1], reps: 1, warmup: 0}\n"


def _recipe(tmp_path: Path, text: str = HEAD) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code != 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shrink: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_out_naming_an_existing_file(tmp_path, user_sees, capsys):
    recipe = _recipe(tmp_path)
    target = tmp_path / "taken"
    target.write_text("user data")
    run_it = lambda: run(recipe, target, progress=False)  # noqa: E731
    user_sees("output directory", "--out naming an existing file", run_it, ConfigError, "taken", "not a directory")
    _one_error_line(capsys, ["run", str(recipe), "--out", str(target), "--quiet"], "taken", "not a directory")
    assert target.read_text() == "user data"  # the user's file is untouched


def test_out_in_a_read_only_directory(tmp_path, user_sees, capsys, monkeypatch):
    recipe = _recipe(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    out = locked / "out"
    if os.geteuid() == 0:  # root writes through permission bits: fail the write as a read-only directory would
        real = Path.write_bytes

        def denied(self: Path, data: bytes) -> int:
            if self.parent == out:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", denied)
    try:
        run_it = lambda: run(recipe, out, progress=False)  # noqa: E731
        user_sees("output directory", "--out inside a read-only directory", run_it, ConfigError, "out", "Permission")
        _one_error_line(capsys, ["run", str(recipe), "--out", str(out), "--quiet"], str(out), "Permission denied")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "text,fragments",
    [
        (HEAD + "stages:\n  - {type: [magnitude_pruning]}\n", ["stage 1", "field 'type'"]),
        (HEAD + "seed: -1\n", ["field 'seed'"]),
        (HEAD + f"seed: {2**70}\n", ["field 'seed'"]),
        (HEAD.replace("[1]", "[1000000000000]"), ["field 'evaluate.batch_sizes.0'"]),
    ],
    ids=["stage type list", "seed -1", "seed 2**70", "batch size 1e12"],
)
def test_bad_recipe_fields_are_one_line_from_the_cli(tmp_path, capsys, text, fragments):
    recipe = _recipe(tmp_path, text)
    _one_error_line(capsys, ["run", str(recipe), "--out", str(tmp_path / "out"), "--quiet"], "r.yaml", *fragments)


KILLED_SAVE = textwrap.dedent("""
    import os, sys, time
    from torch import nn
    import shrink
    os.fsync = lambda fd: time.sleep(60)  # hold the save between writing its temporary file and the rename
    shrink.save(nn.Linear(64, 64), sys.argv[1])
""")


def _killed_save(path: Path) -> Path:
    """Start a save of ``path`` in another process and SIGKILL it mid-write; returns the temporary file it left."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)])
    tmp = path.with_name(f".{path.name}.{proc.pid}.tmp")
    deadline = time.monotonic() + 60
    while not (tmp.exists() and tmp.stat().st_size > 0) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return tmp


def test_next_save_removes_temporary_files_of_killed_saves(tmp_path):
    path = tmp_path / "model.shrink"
    left = [_killed_save(path) for _ in range(2)]
    # the second save, killed too, already removed the first one's file: killed saves never pile up
    assert [t.exists() for t in left] == [False, True]
    live = path.with_name(f".{path.name}.{os.getppid()}.tmp")  # a save still running in a live process
    live.write_bytes(b"partial")
    shrink.save(nn.Linear(4, 4), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.shrink", live.name])
    assert shrink.load(path, lambda: nn.Linear(4, 4)).in_features == 4


def test_quiet_reaches_the_zoo_teacher(monkeypatch):
    from shrink import zoo

    assert "progress" in inspect.signature(zoo.MODELS["digits_cnn"]).parameters
    seen = []

    def teacher(seed: int = 0, progress: bool = True) -> nn.Module:
        seen.append(progress)
        return nn.Linear(2, 2)

    monkeypatch.setitem(zoo.MODELS, "digits_cnn", teacher)
    spec = shrink.recipe.ModelSpec(zoo="digits_cnn")
    build_model(spec, "r.yaml: model", progress=False)
    build_model(spec, "r.yaml: model", progress=True)
    build_model(shrink.recipe.ModelSpec(zoo="digits_cnn", kwargs={"progress": True}), "w", progress=False)
    assert seen == [False, True, True]  # an explicit recipe kwarg wins
