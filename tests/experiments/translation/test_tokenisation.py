"""Translation tokenisers and vocabularies: specials first, min count, deterministic ids, exact BPE round trips."""

import json

import pytest

from experiments.translation.tokenisation import (
    BOS, EOS, PAD, SPECIALS, UNK, BPETokenizer, MosesTokenizer, Vocabulary, make_tokenizer)
from rnnjax.train import run_files


def test_vocabulary_orders_by_count_then_token_and_keeps_specials_first():
    vocabulary = Vocabulary.build([["b", "a", "c"], ["a", "b"], ["a", "d"]], min_freq=2)
    assert vocabulary.tokens == SPECIALS + ("a", "b")
    assert vocabulary.encode(["a", "c", "b"]) == [4, UNK, 5]
    assert vocabulary.decode([BOS, 4, PAD, 5, EOS, 4]) == ["a", "b"]  # stops at <eos>, drops <pad>/<bos>
    assert Vocabulary.build([["x", "y"], ["y", "x"]]).tokens[4:] == ("x", "y")  # ties: alphabetical
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary(("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="min_freq must be >= 1"):
        Vocabulary.build([["a"]], min_freq=0)


def test_vocabulary_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "vocabulary.target.json"
    Vocabulary.build([["straße", "b"]]).save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["tokens"] == list(SPECIALS) + ["b", "straße"]
    before = path.read_bytes()

    def fail(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_files.os, "fsync", fail)
    with pytest.raises(run_files.RunFileWriteError, match=r"vocabulary\.target\.json': No space left on device"):
        Vocabulary.build([["c"]]).save(path)
    assert path.read_bytes() == before  # the previous vocabulary stays whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_moses_splits_punctuation_keeps_ampersands_and_lowercases():
    words = MosesTokenizer("en", lowercase=True)
    assert words.tokenize("Two young, White males & a dog.") == ["two", "young", ",", "white", "males", "&", "a",
                                                                   "dog", "."]
    cased = MosesTokenizer("de", lowercase=False)
    tokens = cased.tokenize("Ein Mann, der etwas anstarrt.")
    assert tokens == ["Ein", "Mann", ",", "der", "etwas", "anstarrt", "."]
    assert cased.detokenize(tokens) == "Ein Mann, der etwas anstarrt."


def test_bpe_is_trained_on_the_given_sentences_repeatably_and_round_trips():
    sentences = [f"Ein Hund läuft über die Wiese Nummer {i}." for i in range(60)]
    first = BPETokenizer.train(sentences, 60, "de")
    again = make_tokenizer("bpe", "de", False, sentences, 60)
    assert first.model_proto == again.model_proto
    pieces = first.tokenize("Ein Hund läuft über die Wiese.")
    assert pieces[0].startswith("▁") and first.detokenize(pieces) == "Ein Hund läuft über die Wiese."
    assert first.record()["pieces"] == 60
    with pytest.raises(ValueError, match="bpe_vocab_size 100000 does not fit the 60 training sentences of 'de'"):
        BPETokenizer.train(sentences, 100000, "de")
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        make_tokenizer("spacy", "de", True, sentences, 60)
