"""The extra calibration sentences: read from Python's standard-library docstrings, and written by SmolLM2."""

from __future__ import annotations

import pytest

from shrink.errors import DataError
from shrink.zoo.english import MAX_CHARS, MIN_CHARS, smollm2_sentences, stdlib_sentences
from shrink.zoo.minilm import load_sentences


def test_sentences_are_fixed_distinct_prose() -> None:
    first = stdlib_sentences(200)
    assert first == stdlib_sentences(200)  # the same on every call
    assert stdlib_sentences(50) == first[:50]  # fewer: a prefix of the same order
    assert stdlib_sentences(200, seed=1) != first
    assert len(set(first)) == 200
    assert all(MIN_CHARS <= len(s) <= MAX_CHARS and "\n" not in s for s in first)


def test_asking_for_more_than_the_docstrings_hold_is_refused() -> None:
    with pytest.raises(DataError, match="sentences asked"):
        stdlib_sentences(10**6)
    with pytest.raises(DataError, match=">= 0"):
        stdlib_sentences(-1)


def test_smollm2_sentences_are_distinct_one_line_texts_apart_from_the_corpus() -> None:
    shipped = smollm2_sentences(512)
    assert smollm2_sentences(100) == shipped[:100]
    assert len(set(shipped)) == 512
    assert all(len(s) >= 20 and s == " ".join(s.split()) for s in shipped)
    corpus = {s.lower() for s in load_sentences()}
    assert not any(s.lower() in corpus for s in shipped)
    with pytest.raises(DataError, match="sentences asked"):
        smollm2_sentences(10**6)
    with pytest.raises(DataError, match=">= 0"):
        smollm2_sentences(-1)
