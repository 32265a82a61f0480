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
