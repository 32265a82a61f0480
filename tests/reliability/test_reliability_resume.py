"""Nothing is lost: a `shrink run` killed with SIGKILL mid-training resumes with --resume and writes the same model
file, byte for byte, as an uninterrupted run; the same recipe and seed always give the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shrink.errors import ConfigError, FileFormatError
from shrink.recipe import run

SHRINK = Path(sys.executable).with_name("shrink")
EPOCHS = 4
RECIPE = f"""
title: resume test
model: {{zoo: digits_student}}
data: {{zoo: digits, kwargs: {{batch_size: 128}}}}
seed: 3
stages:
  - {{type: magnitude_pruning, sparsity: 0.6}}
  - {{type: finetune, epochs: {EPOCHS}, lr: 0.001}}
evaluate: {{batch_sizes: [1], reps: 1, warmup: 0}}
"""


def _cli(*args: str) -> list[str]:
    return [str(SHRINK), "run", *args, "--quiet"]


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_gives_identical_model(tmp_path, digits_teacher):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # same threads in every run
    full, killed = tmp_path / "full", tmp_path / "killed"
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    uninterrupted = subprocess.Popen(_cli(str(recipe), "--out", str(full)), **quiet)  # runs alongside
    proc = subprocess.Popen(_cli(str(recipe), "--out", str(killed)), **quiet)
    ckpt = killed / "checkpoints" / "02-finetune" / "last.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < EPOCHS
    assert not (killed / "model.shrink").exists()

    resumed = subprocess.run(
        _cli(str(recipe), "--out", str(killed), "--resume", "--keep-checkpoints"), timeout=300, **quiet
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read().decode()[-2000:]
    assert torch.load(ckpt, weights_only=True)["epoch"] == EPOCHS
    assert (killed / "model.shrink").read_bytes() == (full / "model.shrink").read_bytes()


SMALL = """
model: {zoo: digits_student}
data: {zoo: digits, kwargs: {batch_size: 256}}
seed: 1
stages:
  - {type: magnitude_pruning, sparsity: 0.7, criterion: random}
  - {type: finetune, epochs: 1}
evaluate: {batch_sizes: [1], reps: 1, warmup: 0}
"""


def test_same_recipe_and_seed_give_byte_identical_model_file(tmp_path, digits_teacher):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL)
    run(recipe, tmp_path / "a", progress=False)
    torch.manual_seed(12345)  # global state before the run must not matter
    run(recipe, tmp_path / "b", progress=False, keep_checkpoints=True)
    assert (tmp_path / "a" / "model.shrink").read_bytes() == (tmp_path / "b" / "model.shrink").read_bytes()
    # resuming a finished run restores every stage from its checkpoint: same bytes again
    run(recipe, tmp_path / "b", resume=True, progress=False)
    assert (tmp_path / "a" / "model.shrink").read_bytes() == (tmp_path / "b" / "model.shrink").read_bytes()


def test_resume_with_changed_recipe_or_damaged_checkpoint(tmp_path, digits_teacher, user_sees):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL)
    run(recipe, tmp_path / "out", progress=False, keep_checkpoints=True)
    recipe.write_text(SMALL.replace("epochs: 1", "epochs: 2"))
    user_sees(
        "resume",
        "--resume after editing the recipe",
        lambda: run(recipe, tmp_path / "out", resume=True, progress=False),
        ConfigError,
        "r.yaml",
        "cannot resume",
        "stage 2 changed",
        "without --resume",
    )
    recipe.write_text(SMALL)
    ckpt = tmp_path / "out" / "checkpoints" / "02-finetune" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    user_sees(
        "resume",
        "--resume with a truncated training checkpoint",
        lambda: run(recipe, tmp_path / "out", resume=True, progress=False),
        FileFormatError,
        "r.yaml",
        "stage 2 (finetune",
        "last.pt",
        "cannot resume from this checkpoint",
    )
