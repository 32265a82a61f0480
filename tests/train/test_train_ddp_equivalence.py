"""torchrun with 2 CPU processes (gloo) trains to the weights and buffers of one process, within 1e-5, after one
epoch: fine-tuning with uneven last batches (15 samples split 8 / 7), a BatchNorm CNN (statistics over the global
batch), distillation and QAT through their stages, and a recipe under ``python -m shrink.cli run``. With dropout the
two ranks draw different masks. Only rank 0 prints and writes. Slow: starts 2 + 1 + 2 + 1 Python processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

FACTORIES = textwrap.dedent("""
    import torch
    from torch import nn
    from shrink.data import DataBundle

    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 4))

    def bn_cnn(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def batches(n=75, size=15, seed=1):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 1, 8, 8, generator=g)
        y = (x[:, 0, :4].sum((1, 2)) > 0).long() + 2 * (x[:, 0, 4:].sum((1, 2)) > 0).long()
        return [(x[i : i + size], y[i : i + size]) for i in range(0, n, size)]

    def data():
        train = batches()
        return DataBundle(train=train, val=train[:1], test=train[:2], calibration=train[:2],
                          example_inputs=train[0][0][:1], name="ddp")
""")

CASES = textwrap.dedent("""
    import sys
    import torch
    from torch import nn
    from shrink.api import Context, apply
    from shrink.distillation.stage import KnowledgeDistillation
    from shrink.quant.qat import QAT
    from shrink.train import distributed
    from shrink.train.finetune import FineTune
    from ddp_factories import batches, bn_cnn, mlp

    out = sys.argv[1]
    torch.set_num_threads(1)
    distributed.setup()
    train = batches()

    def ctx(teacher=None):
        return Context(example_inputs=train[0][0][:1], train=train, calibration=train[:2], teacher=teacher,
                       progress=False)

    def done(name, model):
        if distributed.is_main():
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}/{name}.pt")

    finetune = FineTune(epochs=1, lr=0.1, optimizer="sgd")
    done("mlp_uneven", apply(mlp(), finetune, ctx()))
    done("bn_cnn_uneven", apply(bn_cnn(), finetune, ctx()))
    # a last global batch of 1 sample: rank 1's slice is empty and must add nothing
    done("mlp_last_batch_of_1", apply(mlp(), finetune, Context(train=batches(76, 15), progress=False)))
    kd = KnowledgeDistillation(epochs=1, lr=0.05, optimizer="sgd", alpha=0.7, temperature=2.0)
    done("distill", apply(bn_cnn(seed=1), kd, ctx(teacher=bn_cnn(seed=2).eval())))
    # LSQ (learned steps, the default) scales the activation steps' gradient by the global batch's element count
    for method in ("ste", "lsq"):
        qat = QAT(epochs=1, lr=1e-3, optimizer="sgd", weight_bits=8, activation_bits=8, freeze_bn_epoch=2,
                  method=method)
        done(f"qat_{method}", apply(bn_cnn(), qat, ctx()))

    # dropout: the first step's mask on each rank (16-sample batches: equal 8 / 8 slices)
    torch.manual_seed(0)
    drop = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 4))
    masks = []
    drop[2].register_forward_hook(lambda m, i, o: masks.append((o == 0) & (i[0] != 0)))
    apply(drop, FineTune(epochs=1, lr=0.1, optimizer="sgd"), Context(train=batches(32, 16), progress=False))
    torch.save(masks[0], f"{out}/mask.rank{distributed.rank()}.pt")
""")

RECIPE = """
model: {factory: "ddp_factories:bn_cnn"}
data: {factory: "ddp_factories:data"}
seed: 3
stages:
  - {type: finetune, epochs: 1, lr: 0.1, optimizer: sgd}
evaluate: {batch_sizes: [1], reps: 1, warmup: 0}
"""


def _run(tmp_path: Path, args: list[str], ranks: int) -> subprocess.CompletedProcess[str]:
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [*(launch if ranks > 1 else [sys.executable]), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(a) == sorted(b), what
    for k in a:
        diff = float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0
        assert diff <= 1e-5, f"{what}: {k} differs by {diff:.3g}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "ddp_factories.py").write_text(FACTORIES)
    (tmp / "cases.py").write_text(CASES)
    for name in ("two", "one"):
        (tmp / name).mkdir()
    _run(tmp, ["cases.py", str(tmp / "two")], ranks=2)
    _run(tmp, ["cases.py", str(tmp / "one")], ranks=1)
    return tmp


@pytest.mark.parametrize(
    "case", ["mlp_uneven", "mlp_last_batch_of_1", "bn_cnn_uneven", "distill", "qat_ste", "qat_lsq"]
)
def test_two_processes_train_like_one(runs, case):
    two, one = torch.load(runs / "two" / f"{case}.pt"), torch.load(runs / "one" / f"{case}.pt")
    if case in ("bn_cnn_uneven", "distill"):
        assert any("running_var" in k for k in two)  # BatchNorm statistics are compared too
    _assert_close(two, one, case)


def test_ranks_draw_different_dropout_masks(runs):
    a, b = torch.load(runs / "two" / "mask.rank0.pt"), torch.load(runs / "two" / "mask.rank1.pt")
    assert a.shape == b.shape == (8, 32)
    assert 0.3 < float(a.float().mean()) < 0.7 and not torch.equal(a, b)


def test_recipe_under_torchrun_matches_one_process_and_only_rank_0_prints(tmp_path):
    import shrink
    from shrink.export.artifact import load

    (tmp_path / "ddp_factories.py").write_text(FACTORIES)
    (tmp_path / "r.yaml").write_text(RECIPE)
    cli = ["-m", "shrink.cli", "run", "r.yaml", "--quiet", "--out"]
    two = _run(tmp_path, [*cli, str(tmp_path / "two")], ranks=2)
    one = _run(tmp_path, [*cli, str(tmp_path / "one")], ranks=1)
    assert two.stdout.count("wrote ") == 1 and one.stdout.count("wrote ") == 1
    assert two.stdout.count("report.html") == one.stdout.count("report.html")
    sys.path.insert(0, str(tmp_path))
    try:
        from ddp_factories import bn_cnn  # type: ignore[import-not-found]

        a = load(tmp_path / "two" / "model.shrink", bn_cnn).state_dict()
        b = load(tmp_path / "one" / "model.shrink", bn_cnn).state_dict()
    finally:
        sys.path.remove(str(tmp_path))
    _assert_close(a, b, "recipe")
    assert not torch.equal(a["0.weight"], bn_cnn().state_dict()["0.weight"])  # it did train
    left = sorted(p.name for p in (tmp_path / "two").iterdir() if p.name.startswith("."))
    assert left == [] and shrink is not None  # no probe or temporary file of either rank is left behind
