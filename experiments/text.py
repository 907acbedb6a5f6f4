"""Text data for language modeling: tokenizers, a vocabulary, and stream batching as in Zaremba et al. (2014).

The pipeline, with the contract of each stage:

1. `read_text(path) -> str`: strict UTF-8, no newline translation (a character model sees the file's exact
   characters, `\\r\\n` included); non-UTF-8 bytes or an empty/whitespace-only file raise a ValueError naming the
   path.
2. `tokenizer.tokenize(text) -> list[str]`: `CharTokenizer` (one token per Unicode code point, no specials, as
   char-rnn/nanoGPT) or `WordTokenizer` (the Penn Treebank convention: whitespace split per line, `<eos>` after
   every line, `<unk>` a special). `detokenize` inverts it: exactly for characters, up to the whitespace
   normalisation stated on `WordTokenizer` for words.
3. `Vocabulary.build(train_tokens, specials=tokenizer.specials)`: built from the **training split only**, so
   validation/test perplexities are measured over the vocabulary a model could have learned. Ids are the specials
   in the order given, then the other tokens by descending count, ties broken by the token string (the order of
   the TensorFlow PTB reader Zaremba et al. used), so the same corpus always gives the same ids. `encode` maps a
   token the training split never had to `<unk>` when the vocabulary has it, and otherwise raises a ValueError
   naming it. `save`/`load` keep it as JSON with a sha256 `fingerprint`, so a run can refuse another run's ids.
4. `batchify(ids, batch_size) -> [batch_size, N]`: the token stream cut into `batch_size` contiguous rows
   (row `b` is `ids[b*N:(b+1)*N]`, `N = len(ids) // batch_size`, the remainder dropped), so each row is one long
   stream and a recurrent state can be carried from one window to the next (truncated BPTT).
5. `stream_windows(data, num_steps)`: `(inputs, targets)` pairs `[batch_size, num_steps]` that tile the stream
   left to right; targets are the inputs shifted by one token. `num_windows(data, num_steps) = (N - 1) // num_steps`.

Everything here is NumPy on the host; arrays go to the device one window at a time.

>>> tokenizer = CharTokenizer()
>>> tokens = tokenizer.tokenize("hello world")
>>> vocab = Vocabulary.build(tokens, specials=tokenizer.specials)
>>> vocab.tokens  # 'l' x3, 'o' x2, then the count-1 tokens in string order
('l', 'o', ' ', 'd', 'e', 'h', 'r', 'w')
>>> ids = vocab.encode(tokens)
>>> ids.tolist()
[5, 4, 0, 0, 1, 2, 7, 1, 6, 0, 3]
>>> tokenizer.detokenize(vocab.decode(ids))
'hello world'
>>> data = batchify(ids, 2)  # N = 11 // 2 = 5; the last token is dropped
>>> data.tolist()
[[5, 4, 0, 0, 1], [2, 7, 1, 6, 0]]
>>> num_windows(data, 2)  # (5 - 1) // 2
2
>>> inputs, targets = next(stream_windows(data, 2))
>>> inputs.tolist(), targets.tolist()
([[5, 4], [2, 7]], [[4, 0], [7, 1]])

Reference: W. Zaremba, I. Sutskever, O. Vinyals, "Recurrent Neural Network Regularization", arXiv:1409.2329.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from rnnjax import _checks
from rnnjax.train.run_files import write_text_atomic

UNK = "<unk>"  # the unknown-token special (PTB text also contains it literally)
EOS = "<eos>"  # the end-of-line token of the PTB convention
VOCABULARY_FORMAT = "rnnjax.vocabulary/1"  # the format tag of a saved vocabulary; bump on any layout change

_MAX_NAMED = 10  # unknown tokens listed in an error; the rest are counted


def _fingerprint(tokens: Sequence[str]) -> str:
    # JSON escapes quotes, commas and control characters, so distinct token lists never serialise alike.
    payload = json.dumps(list(tokens), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _check_tokens(name: str, tokens: Any) -> tuple[str, ...]:
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a sequence of token strings, got one str {tokens[:20]!r}")
    tokens = tuple(tokens)
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise TypeError(f"{name} must hold non-empty strings, got {type(token).__name__} {token!r}")
    return tokens


@dataclasses.dataclass(frozen=True, repr=False)
class Vocabulary:
    """An immutable bijection between tokens and ids `0 .. len - 1` (id `i` is `tokens[i]`).

    Build it with `Vocabulary.build` from the training split; construct it directly only from a known token list
    (duplicates and empty lists are rejected). `<unk>` is special only in that `encode` maps unknown tokens to it
    when the vocabulary holds it.
    """

    tokens: tuple[str, ...]
    _index: dict = dataclasses.field(init=False, compare=False, repr=False)
    _fingerprint: str = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self):
        tokens = _check_tokens("tokens", self.tokens)
        if not tokens:
            raise ValueError("a vocabulary needs at least one token, got none")
        index = {token: i for i, token in enumerate(tokens)}
        if len(index) != len(tokens):
            counts = collections.Counter(tokens)
            duplicates = [token for token, count in counts.items() if count > 1]
            raise ValueError(f"tokens must be distinct, got duplicates {duplicates[:_MAX_NAMED]}")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_fingerprint", _fingerprint(tokens))

    @classmethod
    def build(cls, tokens: Iterable[str], *, min_count: int = 1, specials: Sequence[str] = ()) -> Vocabulary:
        """The vocabulary of a training token stream.

        Ids: `specials` first, in the order given (whether or not they occur in `tokens`), then every other token
        seen at least `min_count` times, by descending count, ties broken by the token string. With `min_count > 1`
        include `UNK` in `specials`, or `encode` will reject the training split's own rare tokens.
        """
        min_count = _checks.check_positive_int("min_count", min_count)
        specials = _check_tokens("specials", specials)
        if len(set(specials)) != len(specials):
            raise ValueError(f"specials must be distinct, got {specials}")
        counts = collections.Counter(_check_tokens("tokens", tokens))
        if not counts:
            raise ValueError("tokens is empty: build the vocabulary from the training split's tokens")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        rest = [token for token, count in ranked if count >= min_count and token not in specials]
        return cls(specials + tuple(rest))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __repr__(self) -> str:
        unk = UNK if UNK in self else None
        return f"Vocabulary(size={len(self)}, unk={unk!r}, fingerprint={self.fingerprint[:12]}...)"

    @property
    def unk_id(self) -> int | None:
        """The id of `UNK`, or None when the vocabulary has none (then unknown tokens are an error)."""
        return self._index.get(UNK)

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the token list in id order: equal fingerprints mean equal token-to-id maps."""
        return self._fingerprint

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids `int32 [len(tokens)]` of a token sequence (a `str` is taken as its sequence of characters).

        Unknown tokens map to `UNK` when the vocabulary has it; otherwise a ValueError names the first of them with
        their counts (e.g. the characters of a sampling prime that the training text never had).
        """
        tokens = list(tokens)
        index = self._index
        ids = np.fromiter((index.get(token, -1) for token in tokens), dtype=np.int32, count=len(tokens))
        unknown = ids < 0
        if not unknown.any():
            return ids
        if self.unk_id is not None:
            ids[unknown] = self.unk_id
            return ids
        # Counter keeps first-appearance order, so the error names the unknown tokens the input meets first.
        counts = collections.Counter(token for token, missing in zip(tokens, unknown) if missing)
        named = ", ".join(f"{token!r} x{count}" for token, count in list(counts.items())[:_MAX_NAMED])
        more = f" and {len(counts) - _MAX_NAMED} more" if len(counts) > _MAX_NAMED else ""
        raise ValueError(
            f"{int(unknown.sum())} tokens ({len(counts)} distinct) are not in the vocabulary of {len(self)} tokens: "
            f"{named}{more}; the vocabulary has no {UNK!r} to map them to (build it with specials=({UNK!r},) or "
            f"remove them)"
        )

    def decode(self, ids: Any) -> list[str]:
        """The tokens of integer ids `[n]` (any integer dtype); ids outside `0 .. len - 1` raise a ValueError."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return []
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be a 1-D integer array, got shape {ids.shape} and dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= len(self))
        if bad.any():
            raise ValueError(f"ids must be in [0, {len(self)}), got {ids[bad][:_MAX_NAMED].tolist()}")
        return [self.tokens[i] for i in ids.tolist()]

    def check_matches(self, fingerprint: str) -> None:
        """Raises a ValueError unless this vocabulary's fingerprint is `fingerprint` (e.g. a checkpoint's)."""
        if fingerprint != self.fingerprint:
            raise ValueError(
                f"vocabulary mismatch: expected fingerprint {fingerprint!r}, this vocabulary ({len(self)} tokens) has "
                f"{self.fingerprint!r}; ids from one would mean other tokens in the other, so load the run's own "
                f"vocabulary file"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Writes `{"format", "size", "fingerprint", "tokens"}` as UTF-8 JSON (`write_text_atomic`: an
        interrupted save never leaves a half-written vocabulary under `path`)."""
        record = {
            "format": VOCABULARY_FORMAT,
            "size": len(self),
            "fingerprint": self.fingerprint,
            "tokens": list(self.tokens),
        }
        write_text_atomic(path, json.dumps(record, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a `save`d vocabulary; an empty, non-JSON, foreign or corrupt file raises a ValueError naming
        `path` (the stored fingerprint must match the tokens, so a hand-edited token list is caught)."""
        with open(path, "rb") as file:
            raw = file.read()
        if not raw.strip():
            raise ValueError(f"vocabulary file {os.fspath(path)!r} is empty")
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"vocabulary file {os.fspath(path)!r} is not UTF-8 JSON: {error}") from error
        tag = record.get("format") if isinstance(record, dict) else None
        if tag != VOCABULARY_FORMAT:
            raise ValueError(
                f"vocabulary file {os.fspath(path)!r} is not an rnnjax vocabulary: format tag expected "
                f"{VOCABULARY_FORMAT!r}, got {tag!r}"
            )
        tokens = record.get("tokens")
        try:
            if not isinstance(tokens, list):
                raise TypeError(f"'tokens' must be a list, got {type(tokens).__name__}")
            vocabulary = cls(tuple(tokens))
        except (TypeError, ValueError) as error:
            raise ValueError(f"vocabulary file {os.fspath(path)!r} is corrupt: {error}") from error
        if record.get("fingerprint") != vocabulary.fingerprint:
            raise ValueError(
                f"vocabulary file {os.fspath(path)!r} is corrupt: its tokens hash to {vocabulary.fingerprint!r} but it "
                f"records fingerprint {record.get('fingerprint')!r}"
            )
        return vocabulary


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """One token per Unicode code point (as char-rnn and nanoGPT's shakespeare_char); no specials by default.

    `detokenize(tokenize(text)) == text` exactly, newlines and all. A character made of several code points (a
    base letter plus a combining accent) is several tokens; the round trip is still exact.
    """

    specials: tuple[str, ...] = ()  # pass to `Vocabulary.build`; add `UNK` to map unseen characters to it

    def tokenize(self, text: str) -> list[str]:
        return list(_check_text(text))

    def detokenize(self, tokens: Iterable[str]) -> str:
        return "".join(tokens)


@dataclasses.dataclass(frozen=True)
class WordTokenizer:
    """The Penn Treebank word convention (Mikolov's preprocessed PTB, as Zaremba et al. read it).

    `tokenize`: the text is cut into lines at `"\\n"` (a final newline does not open an empty last line), each line
    is split at runs of whitespace (`str.split()`, so a `"\\r"` before the newline disappears) and followed by `EOS`.
    A blank line gives a lone `EOS`. A literal `<unk>` in the text (PTB has them) is the token `UNK`.

    `detokenize`: tokens joined by one space, each `EOS` turned into `"\\n"` (tokens after the last `EOS` end the
    text without a newline). Hence `detokenize(tokenize(text))` equals `text` normalised as: per line, leading and
    trailing whitespace removed and inner whitespace runs collapsed to one space; every line, the last included,
    ending in `"\\n"`; blank lines kept empty. E.g. `" a  b \\n\\nc"` comes back as `"a b\\n\\nc\\n"`.
    """

    specials: tuple[str, ...] = (UNK,)  # pass to `Vocabulary.build`: `UNK` is always in a word vocabulary

    def tokenize(self, text: str) -> list[str]:
        lines = _check_text(text).split("\n")
        if lines[-1] == "":
            lines.pop()  # the newline ending the text ends its last line; it does not start another one
        tokens = []
        for line in lines:
            tokens.extend(line.split())
            tokens.append(EOS)
        return tokens

    def detokenize(self, tokens: Iterable[str]) -> str:
        lines, words = [], []
        for token in tokens:
            if token == EOS:
                lines.append(" ".join(words) + "\n")
                words = []
            else:
                words.append(token)
        return "".join(lines) + " ".join(words)


def read_text(path: str | os.PathLike) -> str:
    """The file's text, decoded as strict UTF-8 with no newline translation.

    Raises a ValueError naming `path` and the byte offset of the first invalid byte for non-UTF-8 data, and for
    an empty or whitespace-only file (usually a failed download).
    """
    with open(path, "rb") as file:
        raw = file.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.end]
        raise ValueError(
            f"{os.fspath(path)!r} is not valid UTF-8: {error.reason} at byte offset {error.start} ({bad!r})"
        ) from error
    if not text.strip():
        raise ValueError(f"{os.fspath(path)!r} is empty or whitespace only ({len(raw)} bytes): expected text")
    return text


def _check_integer_array(name: str, value: Any, ndim: int, shape_name: str) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer):  # bools are not np.integer, so they are rejected too
        raise TypeError(f"{name} must be integer token ids, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_name}, got shape {array.shape}")
    return array


def batchify(ids: Any, batch_size: int) -> np.ndarray:
    """The stream `ids [n]` as `batch_size` contiguous rows `[batch_size, N]`, `N = n // batch_size`.

    Row `b` is `ids[b*N:(b+1)*N]`; the last `n % batch_size` tokens are dropped (as Zaremba et al.), so each row
    is one unbroken piece of the corpus. Returns a view of `ids` when it can.
    """
    ids = _check_integer_array("ids", ids, 1, "[num_tokens]")
    batch_size = _checks.check_positive_int("batch_size", batch_size)
    width = len(ids) // batch_size
    if width == 0:
        raise ValueError(f"ids has {len(ids)} tokens, fewer than batch_size {batch_size}: no row would get a token")
    return ids[: batch_size * width].reshape(batch_size, width)


def num_windows(data: Any, num_steps: int) -> int:
    """The number of windows `stream_windows(data, num_steps)` gives: `(N - 1) // num_steps` for `data [B, N]`.

    Raises a ValueError when that is 0 (the stream needs `N >= num_steps + 1` tokens per row).
    """
    data = _check_integer_array("data", data, 2, "[batch_size, N]")
    num_steps = _checks.check_positive_int("num_steps", num_steps)
    width = data.shape[1]
    count = (width - 1) // num_steps
    if count == 0:
        raise ValueError(
            f"data rows have {width} tokens, too short for one window of num_steps {num_steps}: a window needs "
            f"num_steps + 1 = {num_steps + 1} (inputs plus the next-token target)"
        )
    return count


def stream_windows(data: Any, num_steps: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(inputs, targets)` pairs, each `[B, num_steps]`, tiling the rows of `data [B, N]` left to right.

    Window `k` holds `inputs = data[:, k*T : k*T + T]` and `targets = data[:, k*T + 1 : k*T + T + 1]` (`T` is
    `num_steps`): the target of every input is the next token of its row, and the inputs of consecutive windows
    are contiguous, so the carry of window `k` is the right initial state of window `k + 1`. There are exactly
    `num_windows(data, num_steps) = (N - 1) // T` windows, all full: the last `(N - 1) % T` inputs are dropped
    rather than given as a ragged final window, which would change the array shape (one more `jit` compile) and
    weight those tokens differently in a per-window mean. This is the count of the TensorFlow PTB reader Zaremba
    et al. used (`epoch_size = (batch_len - 1) // num_steps`).

    The arguments are checked when called, not at the first `next`; the windows are views of `data`.
    """
    count = num_windows(data, num_steps)  # validates eagerly: a generator body would only run at the first `next`
    data = np.asarray(data)

    def windows():
        for k in range(count):
            start = k * num_steps
            yield data[:, start : start + num_steps], data[:, start + 1 : start + num_steps + 1]

    return windows()
