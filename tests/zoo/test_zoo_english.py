"""The extra calibration sentences: read from Python's standard-library docstrings, and written by SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shrink.errors import DataError
from shrink.zoo.english import MAX_CHARS, MIN_CHARS, smollm2_sentences, stdlib_sentences, write_smollm2_sentences
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


class _FakeTokenizer:
    """Token t of an answer decodes to ANSWERS[t]; the prompt is two tokens."""

    ANSWERS = [
        "  a  long enough\nanswer  number one",
        "short",
        "a long enough answer number two",
        "another long answer here",
    ]
    eos_token_id = 0

    def apply_chat_template(self, chat: list, **_: object) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.zeros(len(chat), 2, dtype=torch.long), "attention_mask": torch.ones(len(chat), 2)}

    def decode(self, row: torch.Tensor, skip_special_tokens: bool) -> str:
        return self.ANSWERS[int(row[0])]


class _FakeModel:
    def __init__(self) -> None:
        self.calls = 0

    def generate(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        # first call: answers 0, 1, 0 (a duplicate and a short one); then answers 2 and 3
        answers = [[0], [1], [0]] if self.calls == 0 else [[2], [3], [2]]
        self.calls += 1
        return torch.cat([input_ids, torch.tensor(answers)], 1)


def test_writing_smollm2_sentences_keeps_distinct_long_answers_one_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shrink.zoo.llm

    model = _FakeModel()
    monkeypatch.setattr(shrink.zoo.llm, "load_smollm2", lambda: (model, _FakeTokenizer()))
    out = tmp_path / "sentences.txt"
    written = write_smollm2_sentences(out, 2, batch_size=3)
    assert written == ["a long enough answer number one", "a long enough answer number two"]
    assert out.read_text(encoding="utf-8") == "\n".join(written) + "\n"
    assert model.calls == 2  # the duplicate and the short answer did not count
