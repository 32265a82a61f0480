"""The user's model (and teacher) are never changed by the non-in-place API, whether the step succeeds or fails:
checked for every registered config (search excepted) on the digits student CNN, with good and with mis-shaped data."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from shrink.api import Context, apply
from shrink.errors import ConfigError
from shrink.stages import registered_types

#: values tried, in order, for configs that need more than their defaults (a config takes the first that validates)
CANDIDATES = [
    {},
    {"sparsity": 0.5},
    {"final_sparsity": 0.5},
    {"ratio": 0.25},
    {"energy": 0.9},
    {"rank": 2},
    {"budget_fraction": 0.5},
]
#: configs whose defaults validate but do nothing runnable
OVERRIDES = {"layer_removal": {"count": 1}}
#: fields set small wherever a config has them, so that every run stays short
SMALL = {
    "epochs": 1,
    "epochs_per_cycle": 1,
    "cycles": 1,
    "finetune_epochs": 0,
    "pruning_steps": 1,
    "trials": 2,
    "steps": 2,
    "iterations": 2,
    "max_iter": 5,
    "calibration_batches": 2,
    "start_epoch": 0,
    "frequency": 1,
    "prune_epochs": 1,
    "cluster_epochs": 1,
    "n_iter": 5,
    "num_samples": 8,
    "batch_size": 8,
    "init_observer": "minmax",
}
#: CPU seconds a config may take on the digits student; slower ones fail the test (they would slow the suite)
BUDGET_S = 10.0


#: results whose saved file does not reproduce the model (reported to their owners)
KNOWN_ROUND_TRIP_ISSUES = {"float_cast"}  # the fp16 model's input cast does not survive shrink.load


def _round_trips(result: nn.Module, directory) -> bool:
    """Whether ``shrink.load(shrink.save(result))`` (rebuilt from the original factory) gives the same outputs."""
    import shrink
    from shrink.zoo import digits_student

    x = torch.rand(3, 1, 8, 8)
    try:
        loaded = shrink.load(shrink.save(result, directory / "result.shrink"), digits_student)
        with torch.no_grad():
            return bool(torch.allclose(loaded(x), result(x), atol=1e-5))
    except Exception:  # noqa: BLE001 - a failure to reload is what this reports
        return False


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ids": {k: id(v) for k, v in [*model.named_parameters(), *model.named_buffers()]},
        "classes": {n: type(m) for n, m in model.named_modules()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
        ),
    }


def _assert_unchanged(model: nn.Module, before: dict, what: str) -> None:
    after = _snapshot(model)
    for key in ("ids", "classes", "training", "grad", "hooks"):
        assert after[key] == before[key], f"{what}: the user's model changed ({key})"
    assert after["state"].keys() == before["state"].keys(), f"{what}: state_dict keys changed"
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{what}: {k} changed"


def _config(name: str):
    cls = registered_types()[name]
    for kwargs in [OVERRIDES[name]] if name in OVERRIDES else CANDIDATES:
        small = {k: v for k, v in SMALL.items() if k in cls.model_fields and k not in kwargs}
        for extra in (small, {}):
            try:
                return cls(**kwargs, **extra)
            except ConfigError:
                continue
    return None


def _contexts(digits, teacher, tmp_path):
    train = []
    for i, batch in enumerate(digits.train):
        train.append(batch)
        if i == 1:
            break
    x = digits.example_inputs
    good = dict(
        example_inputs=x,
        train=train,
        calibration=[b[0] for b in train],
        val=train[:1],
        teacher=teacher,
        progress=False,
        out_dir=tmp_path,
    )
    bad_x = torch.randn(4, 3, 5, 5)
    bad = dict(
        example_inputs=bad_x,
        train=[(bad_x, torch.zeros(4, dtype=torch.long))],
        calibration=[bad_x],
        val=[(bad_x, torch.zeros(4, dtype=torch.long))],
        teacher=teacher,
        progress=False,
        out_dir=tmp_path,
    )
    return {"good data": good, "mis-shaped data": bad}


def test_registered_configs_never_change_the_users_model(digits_teacher, digits, tmp_path, shrink_modules):
    from shrink.zoo import digits_student

    teacher = digits_teacher
    model = digits_student().eval()  # small, so that every algorithm runs in about a second
    before, before_teacher = _snapshot(model), _snapshot(teacher)
    ran, slow, outcomes, uncovered, broken = [], [], {}, [], []
    for name, cls in registered_types().items():
        if cls.family == "search":
            continue  # search stages run many trials; covered by their own package's tests
        cfg = _config(name)
        if cfg is None:
            uncovered.append(name)
            continue
        for label, ctx in _contexts(digits, teacher, tmp_path / name).items():
            start = time.process_time()
            try:
                result = apply(model, cfg, Context(checkpoint_dir=tmp_path / name / label, **ctx))
                outcomes[(name, label)] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure must still leave the model as it was
                outcomes[(name, label)] = type(exc).__name__
            else:
                if label == "good data" and cfg.family != "export" and not _round_trips(result, tmp_path / name):
                    broken.append(name)
            _assert_unchanged(model, before, f"{name} on {label} ({outcomes[(name, label)]})")
            _assert_unchanged(teacher, before_teacher, f"teacher during {name} on {label}")
            if time.process_time() - start > BUDGET_S:
                slow.append(name)
        ran.append(name)
    assert {"magnitude_pruning", "finetune"} <= set(ran)
    assert outcomes[("magnitude_pruning", "good data")] == "ok"
    assert outcomes[("finetune", "mis-shaped data")] != "ok"
    assert set(broken) <= KNOWN_ROUND_TRIP_ISSUES, f"results that shrink.save/shrink.load do not reproduce: {broken}"
    assert not slow, f"configs over {BUDGET_S}s on the digits CNN (make their small settings smaller): {slow}"
    if uncovered:
        pytest.skip(f"checked {len(ran)} configs; no sample values in CANDIDATES for {uncovered}")
