"""Texts to id sequences for classification: tokenization, a word vocabulary with `<pad>` and `<unk>`, encoding.

One text is one example (no `<eos>`, unlike the stream convention of `text.WordTokenizer`). The vocabulary is
`text.Vocabulary` built from the **training split only** with specials `(PAD, UNK)`, so `<pad>` is id 0 (the id
`bucketing.pad_sequences` fills with) and `<unk>` id 1; tokens seen fewer than `min_count` times in training map to
`<unk>`, as unseen ones do.

Tokenizers:
- "whitespace": `text.split()`: for pre-tokenized corpora (SST, rt-polarity, GLUE).
- "words": runs of letters/digits/apostrophes, and each other non-space character alone: for raw text (UCI, IMDB).
- "chars": one token per character (the `vader` lexicon entries).

>>> encoder = SentenceEncoder.build(["A good film .", "a bad film ."], min_count=2)
>>> encoder.vocabulary.tokens
('<pad>', '<unk>', '.', 'a', 'film')
>>> [ids.tolist() for ids in encoder.encode(["a GOOD film"])]
[[3, 1, 4]]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from rnnjax import _checks
from experiments.text import UNK, Vocabulary

PAD = "<pad>"  # id 0: the padding token; masks from `lengths` keep it out of every result
PAD_ID = 0
TOKENIZERS = ("whitespace", "words", "chars")
_WORDS = re.compile(r"[\w']+|[^\w\s]")


def tokenize(text: str, tokenizer: str = "whitespace", lowercase: bool = True) -> list[str]:
    """The tokens of one text; see the module docstring for the tokenizers."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    _checks.check_choice("tokenizer", tokenizer, TOKENIZERS)
    if lowercase:
        text = text.lower()
    if tokenizer == "whitespace":
        return text.split()
    if tokenizer == "words":
        return _WORDS.findall(text)
    return [char for char in text if not char.isspace()] if text.strip() else []


@dataclasses.dataclass(frozen=True)
class SentenceEncoder:
    """A vocabulary plus the tokenization it was built with, so training and evaluation texts are read alike."""

    vocabulary: Vocabulary
    tokenizer: str = "whitespace"
    lowercase: bool = True

    def __post_init__(self):
        _checks.check_choice("tokenizer", self.tokenizer, TOKENIZERS)
        if self.vocabulary.tokens[:2] != (PAD, UNK):
            raise ValueError(f"the vocabulary must start with ({PAD!r}, {UNK!r}) (ids 0 and 1), got "
                             f"{self.vocabulary.tokens[:2]}")

    @classmethod
    def build(cls, train_texts: Sequence[str], *, tokenizer: str = "whitespace", lowercase: bool = True,
              min_count: int = 1) -> SentenceEncoder:
        """The encoder of a training split: ids `<pad>`, `<unk>`, then tokens seen >= `min_count` times by
        descending count (ties by string, `Vocabulary.build`'s deterministic order)."""
        tokens = [token for text in train_texts for token in tokenize(text, tokenizer, lowercase)]
        vocabulary = Vocabulary.build(tokens, min_count=min_count, specials=(PAD, UNK))
        return cls(vocabulary, tokenizer, lowercase)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """int32 id arrays `[length_i]`, one per text. A text with no token raises a ValueError naming its index
        (a length-0 sequence has nothing to pool)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, got one str")
        encoded = []
        for index, text in enumerate(texts):
            tokens = tokenize(text, self.tokenizer, self.lowercase)
            if not tokens:
                raise ValueError(f"text {index} ({text[:40]!r}) has no tokens; empty texts cannot be classified")
            encoded.append(self.vocabulary.encode(tokens))
        return encoded
