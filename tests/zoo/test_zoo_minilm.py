import pytest
import torch

from shrink.eval import embedding_fidelity


@pytest.fixture(scope="module")
def minilm():
    from shrink.zoo.minilm import load_minilm, minilm_tokenizer

    return load_minilm(), minilm_tokenizer()


def test_minilm_embeddings_are_normalised_and_meaningful(minilm):
    from shrink.zoo.minilm import tokenize

    model, tok = minilm
    sentences = ["The cat sat on the mat.", "A cat was sitting on the rug.", "Quarterly revenue rose by 4%."]
    with torch.no_grad():
        e = model(**tokenize(tok, sentences))
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrase closer than an unrelated sentence


def test_padding_does_not_change_the_embedding(minilm):
    from shrink.zoo.minilm import tokenize

    model, tok = minilm
    with torch.no_grad():
        alone = model(**tokenize(tok, ["short sentence"]))
        padded = model(**tokenize(tok, ["short sentence", "a much longer sentence with many more tokens in it"]))
    assert embedding_fidelity(alone, padded[:1])["cos_min"] > 0.99999


def _sentences(batches: list[dict]) -> set[tuple[int, ...]]:
    out = set()
    for b in batches:
        for ids, mask in zip(b["input_ids"], b["attention_mask"], strict=True):
            out.add(tuple(ids[mask.bool()].tolist()))
    return out


def test_calibration_and_evaluation_sentences_do_not_overlap() -> None:
    from shrink.errors import ConfigError
    from shrink.zoo.minilm import load_sentences, minilm_data

    data = minilm_data()
    calib, test = _sentences(data.calibration), _sentences(data.test)
    # 128 corpus + 256 docstring + 256 SmolLM2 sentences / 481 sentences (a few may tokenize alike)
    assert len(calib) >= 620 and len(test) >= 450
    assert not calib & test
    corpus_only = minilm_data(extra_calibration=0, generated_calibration=0).calibration
    assert _sentences([data.example_inputs]) <= _sentences(corpus_only)
    assert sum(len(b["input_ids"]) for b in corpus_only) == 128
    assert sum(len(b["input_ids"]) for b in data.test) == len(load_sentences()) - 128
    assert sum(len(b["input_ids"]) for b in data.calibration) == 128 + 256 + 256
    for name in ("extra_calibration", "generated_calibration"):
        with pytest.raises(ConfigError, match=name):
            minilm_data(**{name: -1})
    with pytest.raises(ConfigError, match="calibration_sentences"):
        minilm_data(limit=100, calibration_sentences=128)
