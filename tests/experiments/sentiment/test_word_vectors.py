"""GloVe-format vectors aligned to a vocabulary; a width that disagrees with the config is a clear error."""

import numpy as np
import pytest

from experiments.sentiment.encoding import SentenceEncoder
from experiments.sentiment.word_vectors import load_word_vectors


@pytest.fixture
def vocabulary():
    return SentenceEncoder.build(["good film", "bad film"]).vocabulary  # <pad> <unk> film bad good


def test_loads_known_words_and_draws_the_rest(tmp_path, vocabulary):
    path = tmp_path / "vectors.txt"
    path.write_text("3 2\nfilm 1.0 2.0\nGood 0.5 -0.5\nother 9 9\n", encoding="utf-8")
    embeddings, found = load_word_vectors(path, vocabulary, 2, lowercase=True)
    index = {t: i for i, t in enumerate(vocabulary.tokens)}
    np.testing.assert_array_equal(embeddings[index["film"]], [1.0, 2.0])
    np.testing.assert_array_equal(embeddings[index["good"]], [0.5, -0.5])
    assert found.tolist() == [False, False, True, False, True]
    assert (embeddings[0] == 0).all() and np.abs(embeddings[index["bad"]]).max() <= 0.25


def test_width_mismatch_names_the_line_and_both_widths(tmp_path, vocabulary):
    path = tmp_path / "vectors.txt"
    path.write_text("film 1.0 2.0 3.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: the vector has 3 values but embedding_size is 300"):
        load_word_vectors(path, vocabulary, 300)


def test_non_numeric_and_no_overlap(tmp_path, vocabulary):
    path = tmp_path / "vectors.txt"
    path.write_text("film 1.0 x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: non-numeric"):
        load_word_vectors(path, vocabulary, 2)
    path.write_text("zebra 1.0 2.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no word of the vocabulary"):
        load_word_vectors(path, vocabulary, 2)
