"""Tokenisers and vocabularies for translation, built from the training split only.

- `MosesTokenizer(language, lowercase)`: words and punctuation by the Moses rules (sacremoses, no XML escaping),
  optionally lower-cased; `detokenize` joins them back with Moses's detokeniser (the text sacreBLEU scores).
- `BPETokenizer.train(sentences, vocab_size, language, lowercase)`: a SentencePiece BPE model trained in memory
  on the training sentences (one thread, so the model is the same on every run); `detokenize` is SentencePiece's
  exact inverse (`"▁"` marks a word start).
- `Vocabulary`: `<pad>` = 0, `<unk>` = 1, `<bos>` = 2, `<eos>` = 3, then the training tokens seen at least
  `min_freq` times, most frequent first (ties alphabetical, so the ids are the same on every run).

>>> vocabulary = Vocabulary.build([["a", "dog"], ["a", "cat"]], min_freq=2)
>>> vocabulary.tokens, vocabulary.encode(["a", "cat"]), vocabulary.decode([4, 1, 3, 4])
(('<pad>', '<unk>', '<bos>', '<eos>', 'a'), [4, 1], ['a', '<unk>'])
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import pathlib
from collections.abc import Iterable, Sequence

from rnnjax import _checks
from rnnjax.train.run_files import write_text_atomic

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
TOKENIZERS = ("moses", "bpe")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token <-> id; `tokens[i]` is the token of id `i`, the four `SPECIALS` first."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        if tuple(self.tokens[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {tuple(self.tokens[:4])}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary tokens must be distinct")
        object.__setattr__(self, "_ids", {token: i for i, token in enumerate(self.tokens)})

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1) -> Vocabulary:
        """The tokens of `token_lists` (the training split) seen at least `min_freq` times."""
        min_freq = _checks.check_positive_int("min_freq", min_freq)
        counts = collections.Counter(token for tokens in token_lists for token in tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls(SPECIALS + tuple(kept))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of `tokens`, `UNK` for a token outside the vocabulary."""
        return [self._ids.get(token, UNK) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of `ids` up to the first `EOS` (excluded), `PAD` and `BOS` dropped."""
        tokens = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                tokens.append(self.tokens[i])
        return tokens

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()[:16]

    def save(self, path: str | pathlib.Path) -> None:
        write_text_atomic(path, json.dumps({"tokens": list(self.tokens)}, ensure_ascii=False))


class MosesTokenizer:
    """Moses word tokenisation for `language` (sacremoses), lower-cased when `lowercase`."""

    kind = "moses"

    def __init__(self, language: str, lowercase: bool = True):
        import sacremoses

        self.language, self.lowercase = language, lowercase
        self._tokenizer = sacremoses.MosesTokenizer(lang=language)
        self._detokenizer = sacremoses.MosesDetokenizer(lang=language)

    def tokenize(self, sentence: str) -> list[str]:
        # escape=False: keep "&" and quotes as they are (the default writes "&amp;", which BLEU would then count).
        tokens = self._tokenizer.tokenize(sentence, escape=False, aggressive_dash_splits=False)
        return [t.lower() for t in tokens] if self.lowercase else tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self._detokenizer.detokenize(list(tokens))

    def record(self) -> dict:
        return {"kind": self.kind, "language": self.language, "lowercase": self.lowercase}


class BPETokenizer:
    """SentencePiece BPE pieces; build with `BPETokenizer.train` on the training sentences."""

    kind = "bpe"

    def __init__(self, model_proto: bytes, language: str, lowercase: bool):
        import sentencepiece

        self.language, self.lowercase, self.model_proto = language, lowercase, model_proto
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, sentences: Sequence[str], vocab_size: int, language: str, lowercase: bool = False) -> BPETokenizer:
        """A BPE model of `vocab_size` pieces learned from `sentences` (the training split only), with
        character coverage 1 (every training character is a piece: German umlauts, French accents). Too large a
        `vocab_size` for the text is SentencePiece's RuntimeError, re-raised as a ValueError naming both."""
        import sentencepiece

        vocab_size = _checks.check_positive_int("bpe_vocab_size", vocab_size)
        text = [s.lower() for s in sentences] if lowercase else list(sentences)
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(text), model_writer=model, vocab_size=vocab_size, model_type="bpe",
                character_coverage=1.0, num_threads=1, minloglevel=2,
                # Ids come from our Vocabulary; SentencePiece's own specials are not needed.
                bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, hard_vocab_limit=True)
        except RuntimeError as error:
            raise ValueError(f"bpe_vocab_size {vocab_size} does not fit the {len(text)} training sentences of "
                             f"{language!r}: {error}") from None
        return cls(model.getvalue(), language, lowercase)

    def tokenize(self, sentence: str) -> list[str]:
        return self._processor.encode(sentence.lower() if self.lowercase else sentence, out_type=str)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self._processor.decode_pieces(list(tokens))

    def record(self) -> dict:
        return {"kind": self.kind, "language": self.language, "lowercase": self.lowercase,
                "pieces": self._processor.get_piece_size(),
                "sha256": hashlib.sha256(self.model_proto).hexdigest()[:16]}


def make_tokenizer(kind: str, language: str, lowercase: bool, train_sentences: Sequence[str],
                   bpe_vocab_size: int):
    """A `MosesTokenizer`, or a `BPETokenizer` trained on `train_sentences`."""
    _checks.check_choice("tokenizer", kind, TOKENIZERS)
    if kind == "moses":
        return MosesTokenizer(language, lowercase)
    return BPETokenizer.train(train_sentences, bpe_vocab_size, language, lowercase)
