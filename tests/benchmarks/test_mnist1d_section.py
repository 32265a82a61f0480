"""The MNIST-1D section's tables and targets from given per-seed results (no training): the paper rows, a family
that refuses the model, and the KD / pruning targets read off the seeds."""

import benchmarks.mnist1d as bench
from benchmarks.common import Table
from benchmarks.mnist1d_families import BN_REAL, BN_ZEROQ, CHANNELS, METHODS, UNSTRUCTURED


def _seed_results(seed: int) -> dict:
    out = {name: (90.0 + seed, 90.0 + seed) for name in METHODS}
    out[bench.HARD] = (80.0 + seed, 80.0 + seed)
    out[bench.KD] = (81.0 + seed, 81.0 + seed + 0.1 * (seed % 2))  # ahead by 1.0-1.1 on every seed
    out[UNSTRUCTURED] = (88.0 + seed, 88.9 + seed)  # 1.1 points down: misses
    out[BN_ZEROQ] = "ModelError: ZeroQ: Mnist1dCNN has no BatchNorm layer"
    return out


def test_section_from_given_results(monkeypatch):
    paper = [(n, s, {"logistic": 33.0, "mlp": 66.0, "cnn": 90.9, "gru": 90.0}[n] + s * 0.0, 100) for n in bench.PAPER
             for s in bench.PAPER_SEEDS]  # fmt: skip
    monkeypatch.setattr(bench, "JUDGE_SEEDS", (0, 1, 2, 3, 4))  # the figures below are for 5 seeds
    monkeypatch.setattr(bench, "_run_jobs", lambda quick: (paper, [_seed_results(s) for s in bench.JUDGE_SEEDS]))
    monkeypatch.setattr(bench, "recurrent_table", lambda: Table("recurrent", ["model"]))
    section = bench.run(quick=False)
    met = {t.name: t.met for t in section.targets}
    assert met["MNIST-1D logistic: paper's test accuracy reproduced (mean of 3 seeds)"] is True
    assert met["MNIST-1D cnn: paper's test accuracy reproduced (mean of 3 seeds)"] is False  # 3.1 below 94
    assert met["MNIST-1D: KD student beats hard-label student by more than seed noise"] is True
    assert met[f"MNIST-1D CNN {UNSTRUCTURED}: mean drop"] is False
    assert met[f"MNIST-1D CNN {CHANNELS}: mean drop"] is True
    families = section.tables[1].markdown()
    assert "not run: ModelError: ZeroQ" in families
    assert "over 5 seeds (test accuracy on 21,000 signals" in families and "seed 4242" in families
    # the CNN+BN real-calibration row is judged against the fp32 CNN+BN (same here), not the plain CNN
    assert f"| {BN_REAL} | 92 | 92.00 ± 1.96 | 0.00 ± 0.00 | no difference shown |" in families
    pairs = section.tables[2].markdown()
    assert "| student 10 ch, KD | student 10 ch, hard labels |" in pairs and "better" in pairs
    assert "Greydanus" in section.tables[0].note and section.tables[3].title == "recurrent"
