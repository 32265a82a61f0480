"""Issue 4, distillation: Hinton KD of the digits student (3 seeds) and MiniLM FFN SVD + embedding distillation."""

from __future__ import annotations

import copy
import os
import statistics

import torch

import shrink
from benchmarks.common import Section, Table, Target
from shrink.distill import EmbeddingDistillation, KnowledgeDistillation
from shrink.eval.counts import count_params
from shrink.eval.metrics import accuracy, embedding_fidelity, predict
from shrink.lowrank import SVDDecomposition
from shrink.select import Selector
from shrink.train import FineTune

TITLE = "Distillation (issue 4)"


def _acc(model, data) -> float:
    out, target = predict(model, data.test)
    return accuracy(out, target)


def _digits_kd(quick: bool, section: Section) -> None:
    from shrink.zoo import digits_data, digits_student, digits_teacher

    teacher = digits_teacher(progress=False)
    seeds, epochs = ((0,), 6) if quick else ((0, 1, 2), 20)
    cfg = KnowledgeDistillation(epochs=epochs, lr=3e-3, temperature=4.0, alpha=0.9)
    hard_cfg = FineTune(epochs=epochs, lr=3e-3)
    table = Table(
        "Digits: student trained on hard labels vs with KD (same epochs, same seeds)",
        ["seed", "teacher acc %", "hard-label student %", "KD student %"],
    )
    hard, kd = [], []
    base = None
    for seed in seeds:
        data = digits_data(seed=seed)
        base = _acc(teacher, data)
        torch.manual_seed(seed)
        h = shrink.finetune(digits_student(seed=seed), hard_cfg, train=data.train, progress=False)
        torch.manual_seed(seed)
        k = shrink.distill(digits_student(seed=seed), teacher, cfg, train=data.train, progress=False)
        hard.append(_acc(h, data))
        kd.append(_acc(k, data))
        table.add(seed, base, hard[-1], kd[-1])
    ratio = count_params(digits_student())[0] / count_params(teacher)[0]
    mean_h, mean_k = statistics.mean(hard), statistics.mean(kd)
    table.add("mean", base, mean_h, mean_k)
    table.note = (
        f"student/teacher parameters: {ratio:.3f}; {epochs} epochs, Adam lr 3e-3, KD T=4, alpha=0.9. "
        "Test split has 360 images (one image = 0.28 points)."
    )
    section.tables.append(table)
    section.targets += [
        Target(
            4,
            "KD student beats hard-label student (mean over seeds)",
            "KD > hard",
            f"{mean_k:.2f}% vs {mean_h:.2f}% ({len(seeds)} seeds)",
            mean_k > mean_h,
        ),
        Target(
            4,
            "KD student within 1 point of the teacher",
            "≥ teacher - 1",
            f"{mean_k:.2f}% vs {base:.2f}%",
            base is not None and mean_k >= base - 1.0,
        ),
        Target(4, "student has ≤ 1/4 of the teacher's parameters", "≤ 0.25", f"{ratio:.3f}", ratio <= 0.25),
    ]


def _minilm(quick: bool, section: Section) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from shrink.zoo.minilm import load_minilm, load_sentences, minilm_tokenizer, tokenize

    sentences = load_sentences()
    n_train = 64 if quick else len(sentences) // 2
    tok = minilm_tokenizer()
    train = [tokenize(tok, sentences[i : i + 16]) for i in range(0, n_train, 16)]
    held_out = [tokenize(tok, sentences[i : i + 32]) for i in range(len(sentences) // 2, len(sentences), 32)]
    teacher = load_minilm()
    ffn = Selector(include=(r"re:encoder\.encoder\.layer\.\d+\.(intermediate|output)\.dense",), types=("Linear",))
    svd = shrink.decompose(teacher, SVDDecomposition(rank=192, selector=ffn))  # 50% of the full rank 384
    ref = predict(teacher, held_out)[0]
    before = embedding_fidelity(ref, predict(svd, held_out)[0])
    cfg = EmbeddingDistillation(data="calibration", epochs=1 if quick else 3, lr=1e-4)
    tuned = shrink.distill(copy.deepcopy(svd), teacher, cfg, calibration=train, progress=False)
    after = embedding_fidelity(ref, predict(tuned, held_out)[0])
    table = Table(
        "MiniLM: FFN layers at 50% SVD rank, then embedding distillation (cosine) on the corpus",
        ["model", "params", "cos mean", "cos min", "NN agreement %"],
    )
    for name, model, fid in (
        ("fp32", teacher, {"cos_mean": 1.0, "cos_min": 1.0, "nn_agreement": 100.0}),
        ("FFN SVD rank 192", svd, before),
        ("+ embedding distillation", tuned, after),
    ):
        table.add(name, count_params(model)[0], fid["cos_mean"], fid["cos_min"], fid["nn_agreement"])
    table.note = (
        f"distilled on the first {n_train} corpus sentences; fidelity measured on the other "
        f"{len(sentences) - len(sentences) // 2} (held out)."
    )
    section.tables.append(table)
    section.targets.append(
        Target(
            4,
            "MiniLM FFN SVD 50% + embedding distillation: fidelity before and after",
            "after > before",
            f"cos {before['cos_mean']:.4f} -> {after['cos_mean']:.4f}",
            after["cos_mean"] > before["cos_mean"],
        )
    )


def run(quick: bool) -> Section:
    section = Section(
        TITLE,
        intro="Hinton soft targets on digits; MiniLM FFN truncated SVD recovered by embedding "
        "distillation. Every figure comes from this run.",
    )
    _digits_kd(quick, section)
    _minilm(quick, section)
    return section
