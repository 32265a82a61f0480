import pytest
import torch

from shrink.errors import DataError
from shrink.zoo import llm as zoo_llm
from shrink.zoo.llm import Doc, llm_texts, tiny_llama, token_windows


class CharTokenizer:
    """Byte-level stand-in for a tokenizer: one id per UTF-8 byte, EOS = 0."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": list(text.encode("utf-8"))}


def test_text_split_has_no_overlap():
    texts = llm_texts()
    assert len(texts.calibration) >= 4 and len(texts.evaluation) >= 4
    assert {d.kind for d in texts.evaluation} == {"prose", "code"}
    assert not {d.name for d in texts.calibration} & {d.name for d in texts.evaluation}
    calib_lines = {ln.strip() for d in texts.calibration for ln in d.text.splitlines() if len(ln.strip()) >= 40}
    eval_lines = [ln.strip() for d in texts.evaluation for ln in d.text.splitlines() if len(ln.strip()) >= 40]
    assert len(eval_lines) > 300
    assert not [ln for ln in eval_lines if ln in calib_lines]


def test_token_windows_join_documents_with_eos():
    docs = [Doc("a", "prose", "abcdef"), Doc("b", "code", "xyz")]
    w = token_windows(CharTokenizer(), docs, length=4)
    assert w.shape == (2, 4)  # 6 + 1 + 3 + 1 = 11 ids -> two full windows
    assert w[1, 2].item() == 0 and w[1, 3].item() == ord("x")
    every = token_windows(CharTokenizer(), docs, length=2)  # 5 windows
    some = token_windows(CharTokenizer(), docs, length=2, limit=3)  # the first, the middle and the last one
    assert torch.equal(some, every[[0, 2, 4]])
    assert torch.equal(token_windows(CharTokenizer(), docs, length=2, limit=1), every[:1])
    assert torch.equal(token_windows(CharTokenizer(), docs, length=2, limit=9), every)
    with pytest.raises(DataError, match="window"):
        token_windows(CharTokenizer(), docs, length=64)
    with pytest.raises(DataError, match="limit"):
        token_windows(CharTokenizer(), docs, length=2, limit=0)


def test_missing_text_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo_llm, "LICENCE_DIR", tmp_path)
    with pytest.raises(DataError, match="GPL-3"):
        llm_texts()


def test_tiny_llama_is_gqa_and_tied():
    m = tiny_llama()
    assert m.config.num_key_value_heads < m.config.num_attention_heads
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert m(input_ids=torch.zeros(1, 5, dtype=torch.long)).logits.shape == (1, 5, 256)


def test_smollm2_cache_is_written_atomically(monkeypatch, tmp_path):
    """The GGUF conversion is replaced by a tiny model; the cache holds complete safetensors and reloads equal."""
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    monkeypatch.setattr(zoo_llm.metadata, "version", lambda name: "0.0-test")
    tiny = tiny_llama(vocab=300)

    class Tok:
        def save_pretrained(self, path):
            (path / "tok.txt").write_text("tokenizer")

    def fake_from_pretrained(*args, **kwargs):
        return tiny

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tok())
    monkeypatch.setattr(zoo_llm, "smollm2_dir", lambda: tmp_path)
    target = zoo_llm._cached_dir()
    zoo_llm._convert_gguf(target)
    assert (target / "model.safetensors").is_file() and (target / "tok.txt").is_file()
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp dir left behind
    from safetensors.torch import load_file

    state = load_file(str(target / "model.safetensors"))
    assert "lm_head.weight" not in state  # tied to the embedding, stored once
    assert torch.equal(state["model.embed_tokens.weight"], tiny.model.embed_tokens.weight)
    from transformers import LlamaForCausalLM

    again = LlamaForCausalLM.from_pretrained(str(target)).eval()  # the cache reloads as the same model
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, tiny(input_ids=ids).logits, atol=1e-5)
