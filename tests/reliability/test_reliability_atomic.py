"""Outputs are written atomically: a write that dies half-way leaves the previous file intact (or no file), never a
half-written one that loads."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import shrink
from shrink._atomic import atomic_write_bytes


def _crash(*args, **kwargs):
    raise OSError(28, "No space left on device (simulated)")


def test_interrupted_model_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.shrink"
    shrink.save(nn.Linear(4, 4), path)
    before = path.read_bytes()
    monkeypatch.setattr(os, "fsync", _crash)  # dies after the bytes are written, before the rename
    with pytest.raises(OSError, match="No space left"):
        shrink.save(nn.Linear(4, 8), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.shrink"], "a temporary file was left behind"
    assert shrink.load(path, lambda: nn.Linear(4, 4)).out_features == 4


def test_interrupted_write_of_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _crash)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "report.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_onnx_export_leaves_no_target(tmp_path, monkeypatch):
    def half_export(model, args, f, **kwargs):
        with open(f, "wb") as out:
            out.write(b"\x08\x07partial")
        raise RuntimeError("killed during export (simulated)")

    monkeypatch.setattr(torch.onnx, "export", half_export)
    with pytest.raises(RuntimeError, match="simulated"):
        shrink.export.onnx(nn.Linear(4, 2), tmp_path / "model.onnx", torch.zeros(1, 4))
    assert not (tmp_path / "model.onnx").exists()


def test_training_checkpoint_is_replaced_atomically(tmp_path, monkeypatch):
    from shrink.train import fit

    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    fit(nn.Linear(4, 2), data, epochs=1, checkpoint_dir=tmp_path, progress=False)
    before = (tmp_path / "last.pt").read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04half")
        raise OSError("killed while saving (simulated)")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="simulated"):
        fit(nn.Linear(4, 2), data, epochs=2, checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
