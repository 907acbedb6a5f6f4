"""Pretrained word vectors from a local GloVe-format text file, aligned to a vocabulary.

Format: one vector per line, `word v_1 ... v_D` separated by single spaces (GloVe's `glove.*.txt`); a first line of
two integers (`count D`, the word2vec text header) is skipped. Only the vocabulary's words are kept, so a 5 GB
file costs one streaming pass and `[V, D]` memory. Words missing from the file (and `<unk>`) are drawn
U(-scale, scale) as Kim (2014) does for unknown words; `<pad>` (id 0) is zero.
"""

from __future__ import annotations

import os

import numpy as np

from rnnjax import _checks
from experiments.text import Vocabulary


def load_word_vectors(path: str | os.PathLike, vocabulary: Vocabulary, embedding_size: int, *,
                      lowercase: bool = False, scale: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`(embeddings float32 [V, D], found bool [V])` for `vocabulary` from the file at `path`.

    A line whose vector width differs from `embedding_size` raises a ValueError naming the file, the line number
    and both widths (a 100d file given to a 300d config fails on its first line, not as a shape error later); so
    does a non-numeric value. With `lowercase`, file words are lowercased and the first occurrence wins (GloVe
    lists frequent forms first). Missing rows are `U(-scale, scale)` from `np.random.default_rng(seed)`.
    """
    embedding_size = _checks.check_positive_int("embedding_size", embedding_size)
    scale = _checks.check_positive_float("scale", scale)
    index = {token: i for i, token in enumerate(vocabulary.tokens)}
    rng = np.random.default_rng(seed)
    embeddings = rng.uniform(-scale, scale, (len(vocabulary), embedding_size)).astype(np.float32)
    found = np.zeros(len(vocabulary), bool)
    with open(path, encoding="utf-8", errors="strict") as file:
        for number, line in enumerate(file, start=1):
            fields = line.rstrip("\n").rstrip(" ").split(" ")
            if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                continue  # word2vec text header: "count width"
            if len(fields) < 2:
                raise ValueError(f"{path}, line {number}: expected 'word v_1 ... v_{embedding_size}', got "
                                 f"{line[:60]!r}")
            if len(fields) - 1 != embedding_size:
                raise ValueError(f"{path}, line {number}: the vector has {len(fields) - 1} values but embedding_size "
                                 f"is {embedding_size}; pass --embedding-size {len(fields) - 1} or another file")
            word = fields[0].lower() if lowercase else fields[0]
            row = index.get(word)
            if row is None or found[row]:
                continue
            try:
                embeddings[row] = np.asarray(fields[1:], np.float32)
            except ValueError:
                raise ValueError(f"{path}, line {number}: non-numeric vector values for {word!r}") from None
            found[row] = True
    if not found.any():
        raise ValueError(f"{path}: no word of the vocabulary ({len(vocabulary)} tokens) has a vector in this file")
    embeddings[0] = 0.0  # <pad>
    return embeddings, found
