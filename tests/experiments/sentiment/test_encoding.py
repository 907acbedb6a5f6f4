"""Sentence encoding: <pad> = 0, <unk> = 1, vocabulary from training texts only, empty texts rejected."""

import pytest

from experiments.sentiment.encoding import PAD, SentenceEncoder, tokenize
from experiments.text import UNK


def test_specials_min_count_and_lowercasing():
    encoder = SentenceEncoder.build(["Good good film", "bad film"], min_count=2)
    assert encoder.vocabulary.tokens == (PAD, UNK, "film", "good")
    assert [ids.tolist() for ids in encoder.encode(["GOOD unseen film"])] == [[3, 1, 2]]


def test_tokenizers():
    assert tokenize("Don't stop!", "words") == ["don't", "stop", "!"]
    assert tokenize("a  b", "whitespace", lowercase=False) == ["a", "b"]
    assert tokenize(":-)", "chars") == [":", "-", ")"]
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        tokenize("x", "bpe")


def test_empty_text_is_a_clear_error():
    encoder = SentenceEncoder.build(["a film"])
    with pytest.raises(ValueError, match="text 1 .* has no tokens"):
        encoder.encode(["a film", "   "])
