"""Shipped digits weights, the content-keyed cache, thread-count independence and racing processes."""

import hashlib
import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load, load_file
from torch import nn

from shrink.zoo import digits as digits_module
from shrink.zoo import digits_student, digits_teacher, pretrained
from shrink.zoo.digits_weights import train_shipped

WEIGHTS = Path(pretrained.__file__).with_name("weights")


def test_shipped_files_match_the_manifest_and_the_current_training_settings():
    manifest = json.loads((WEIGHTS / "manifest.json").read_text())
    assert len(manifest) == 2
    for filename, entry in manifest.items():
        data = (WEIGHTS / filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"] < 500_000
    for name, build in (("digits_cnn", digits_module.DigitsCNN), ("digits_student", digits_module.DigitsStudent)):
        key = pretrained.weights_key(name, build(), {**digits_module.TRAINING[name], "seed": 0})
        assert f"{name}-{key}.safetensors" in manifest  # changed training settings need `python -m ...digits_weights`


def test_first_use_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    monkeypatch.setattr(digits_module, "train_digits", lambda *a, **k: pytest.fail("trained on first use"))
    start = time.perf_counter()
    teacher, student = digits_teacher(progress=False), digits_student(pretrained=True)
    assert time.perf_counter() - start < 5.0
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing written to the cache either
    assert not teacher.training and not student.training
    again = digits_teacher()
    assert all(
        torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_damaged_shipped_file_is_an_error(tmp_path, monkeypatch):
    name = next(p.name for p in WEIGHTS.glob("digits_student-*.safetensors"))
    (tmp_path / name).write_bytes((WEIGHTS / name).read_bytes()[:-8] + b"\0" * 8)
    (tmp_path / "manifest.json").write_bytes((WEIGHTS / "manifest.json").read_bytes())
    monkeypatch.setattr(pretrained, "_weights_dir", lambda: tmp_path)
    with pytest.raises(RuntimeError, match="damaged"):
        digits_student(pretrained=True)


def _bytes_with_threads(threads: int) -> bytes:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = digits_module.DigitsStudent()
    settings = {"epochs": 2, "seed": 0}

    def train(m: nn.Module) -> None:
        digits_module.train_digits(m, epochs=2, seed=0, progress=False)

    return pretrained.train_to_bytes("digits_student", model, settings, train)


@pytest.mark.slow
def test_trained_weights_do_not_depend_on_the_callers_thread_count():
    before = torch.get_num_threads()
    try:
        assert _bytes_with_threads(1) == _bytes_with_threads(2)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


def _test_accuracy(state: dict[str, torch.Tensor]) -> float:
    model = digits_module.DigitsStudent()
    model.load_state_dict(state)
    model.eval()
    data = digits_module.digits_data()
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.test)
    return 100.0 * right / sum(len(y) for _, y in data.test)


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_student():
    """Bit for bit on a CPU whose float kernels round as the training machine's did; elsewhere (oneDNN picks its
    kernels and blockings by instruction set and cache sizes, which changes float rounding) the retrained student
    must reach the shipped one's test accuracy within one point."""
    filename, data = train_shipped("digits_student")  # ~10 s; the teacher: python -m shrink.zoo.digits_weights --check
    shipped = (WEIGHTS / filename).read_bytes()
    if data == shipped:
        return
    retrained, original = _test_accuracy(load(data)), _test_accuracy(load(shipped))
    assert original > 90.0 and abs(retrained - original) <= 1.0, (retrained, original)


def test_other_seeds_are_trained_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    monkeypatch.setitem(digits_module.TRAINING, "digits_student", {**digits_module.TRAINING["digits_student"]})
    digits_module.TRAINING["digits_student"]["epochs"] = 1
    first = digits_student(pretrained=True, seed=3, progress=False)
    (path,) = (tmp_path / "zoo").glob("digits_student-*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert path.name.endswith(f"-{f.metadata()['key']}.safetensors")
    monkeypatch.setattr(digits_module, "train_digits", lambda *a, **k: pytest.fail("trained again"))
    second = digits_student(pretrained=True, seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    shipped = load_file(str(next(WEIGHTS.glob("digits_student-*.safetensors"))))
    assert not torch.equal(first.state_dict()["classifier.4.weight"], shipped["classifier.4.weight"])  # seed 3 != 0


def test_a_damaged_cache_file_is_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    model, calls = nn.Linear(3, 2), []
    path = pretrained.cache_dir("zoo") / f"toy-{pretrained.weights_key('toy', model, {'n': 1})}.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable cached zoo weights"):
        pretrained.load_or_train("toy", model, {"n": 1}, calls.append)
    assert len(calls) == 1 and path.stat().st_size > 100


def _race_worker(cache: str, log: str, out: str) -> None:
    import os

    os.environ["SHRINK_CACHE"] = cache

    def train(m: nn.Module) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other process to reach the lock
        with torch.no_grad():
            m.weight.fill_(1.5)

    model = pretrained.load_or_train("toy", nn.Linear(3, 2), {"n": 2}, train)
    Path(out).write_text(str(float(model.weight.sum())))


def test_two_racing_processes_train_once_and_read_the_same_file(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    log, outs = tmp_path / "log", [tmp_path / "a", tmp_path / "b"]
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path / "c"), str(log), str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1  # one trained, the other waited for the lock and read the file
    assert [o.read_text() for o in outs] == ["9.0", "9.0"]
    assert not list((tmp_path / "c").rglob("*.tmp"))
