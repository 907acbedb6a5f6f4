"""The text data layer: tokenizer round trips, the vocabulary (train-only build, `<unk>`, determinism, files) and
stream batching that tiles the corpus exactly. NumPy only: nothing here compiles."""

import json

import numpy as np
import pytest

from experiments.text import (
    EOS,
    UNK,
    VOCABULARY_FORMAT,
    CharTokenizer,
    Vocabulary,
    WordTokenizer,
    batchify,
    num_windows,
    read_text,
    stream_windows,
)

# A few lines in the shape of Mikolov's PTB files: leading space, single spaces, literal <unk>, trailing newline.
PTB_TRAIN = " the cat sat on the mat \n the <unk> sat \n a dog ran \n"
PTB_VALID = " the dog sat on a rug \n"


# --- tokenizers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "a", "First Citizen:\nBefore we\n\n", "naïve café ☃ 🎉\r\n\tx", "e\u0301"])
def test_char_round_trip_is_exact(text):
    tokenizer = CharTokenizer()
    tokens = tokenizer.tokenize(text)
    assert tokens == list(text)  # one token per code point: the combining accent of "e\u0301" is its own token
    assert tokenizer.detokenize(tokens) == text
    assert tokenizer.specials == ()


def test_word_tokenizer_follows_the_ptb_convention():
    tokenizer = WordTokenizer()
    tokens = tokenizer.tokenize(PTB_TRAIN)
    assert tokens == ["the", "cat", "sat", "on", "the", "mat", EOS, "the", UNK, "sat", EOS, "a", "dog", "ran", EOS]
    assert tokenizer.detokenize(tokens) == "the cat sat on the mat\nthe <unk> sat\na dog ran\n"
    assert tokenizer.specials == (UNK,)


@pytest.mark.parametrize(
    "text, tokens, normalised",
    [
        ("", [], ""),
        ("a b\n", ["a", "b", EOS], "a b\n"),
        ("a b", ["a", "b", EOS], "a b\n"),  # the last line gets its EOS and its newline even without one
        ("  a\t b  \n\nc", ["a", "b", EOS, EOS, "c", EOS], "a b\n\nc\n"),  # blank line kept, whitespace collapsed
        ("a\r\nb\r\n", ["a", EOS, "b", EOS], "a\nb\n"),  # Windows line ends
        ("\n", [EOS], "\n"),
    ],
)
def test_word_round_trip_up_to_whitespace_normalisation(text, tokens, normalised):
    tokenizer = WordTokenizer()
    assert tokenizer.tokenize(text) == tokens
    assert tokenizer.detokenize(tokens) == normalised
    assert tokenizer.tokenize(normalised) == tokens  # normalising is idempotent: nothing else is lost


def test_word_detokenize_without_final_eos_has_no_final_newline():
    assert WordTokenizer().detokenize(["a", EOS, "b", "c"]) == "a\nb c"


def test_tokenizers_reject_non_text():
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        CharTokenizer().tokenize(b"abc")
    with pytest.raises(TypeError, match="text must be a str, got list"):
        WordTokenizer().tokenize(["a"])


# --- vocabulary ---------------------------------------------------------------------------------------------


def ptb_vocabulary():
    tokenizer = WordTokenizer()
    return tokenizer, Vocabulary.build(tokenizer.tokenize(PTB_TRAIN), specials=tokenizer.specials)


def test_vocabulary_ids_are_specials_then_frequency_then_string():
    _, vocab = ptb_vocabulary()
    # <unk> is a special, so first (whatever its count); then <eos> 3 and "the" 3 (tie: string order), "sat" 2,
    # and the count-1 words in string order.
    assert vocab.tokens == (UNK, EOS, "the", "sat", "a", "cat", "dog", "mat", "on", "ran")
    assert vocab.unk_id == 0 and len(vocab) == 10 and "cat" in vocab and "rug" not in vocab


def test_vocabulary_is_deterministic_whatever_the_token_order():
    tokens = list("abracadabra") + ["z", "y", "x"]
    reference = Vocabulary.build(tokens)
    assert reference.tokens == ("a", "b", "r", "c", "d", "x", "y", "z")
    rng = np.random.default_rng(0)
    for _ in range(5):
        shuffled = Vocabulary.build([tokens[i] for i in rng.permutation(len(tokens))])
        assert shuffled == reference and shuffled.fingerprint == reference.fingerprint


def test_vocabulary_is_built_from_train_only_and_maps_unseen_words_to_unk():
    tokenizer, vocab = ptb_vocabulary()
    ids = vocab.encode(tokenizer.tokenize(PTB_VALID))  # "rug" never occurs in training
    assert ids.dtype == np.int32
    assert vocab.decode(ids) == ["the", "dog", "sat", "on", "a", UNK, EOS]
    assert "rug" not in vocab


def test_literal_ptb_unk_maps_to_the_unk_id():
    tokenizer, vocab = ptb_vocabulary()
    ids = vocab.encode(tokenizer.tokenize(" the <unk> \n"))
    assert ids.tolist() == [vocab.tokens.index("the"), vocab.unk_id, vocab.tokens.index(EOS)]
    assert vocab.tokens.count(UNK) == 1  # the literal one in the text and the special are the same entry


def test_min_count_drops_rare_tokens_to_unk():
    vocab = Vocabulary.build(["a", "a", "b", "c", "c"], min_count=2, specials=(UNK,))
    assert vocab.tokens == (UNK, "a", "c")
    assert vocab.encode(["a", "b", "c"]).tolist() == [1, 0, 2]


def test_unknown_characters_without_unk_are_named_with_their_counts():
    tokenizer = CharTokenizer()
    vocab = Vocabulary.build(tokenizer.tokenize("to be or not to be"), specials=tokenizer.specials)
    assert vocab.unk_id is None
    with pytest.raises(ValueError, match=r"5 tokens \(2 distinct\).*'Z' x3, 'é' x2.*no '<unk>'"):
        vocab.encode(tokenizer.tokenize("Zé be Zé Z"))
    assert tokenizer.detokenize(vocab.decode(vocab.encode("not to be"))) == "not to be"  # a str is its characters


def test_encode_error_lists_at_most_ten_unknown_tokens():
    vocab = Vocabulary(("a",))
    with pytest.raises(ValueError, match=r"'u9' x1 and 2 more;"):
        vocab.encode([f"u{i}" for i in range(12)])


def test_decode_checks_ids():
    vocab = Vocabulary(("a", "b"))
    assert vocab.decode(np.array([1, 0, 1], np.int64)) == ["b", "a", "b"] and vocab.decode([]) == []
    with pytest.raises(ValueError, match=r"ids must be in \[0, 2\), got \[2, -1\]"):
        vocab.decode([0, 2, -1])
    with pytest.raises(TypeError, match="ids must be a 1-D integer array, got shape \\(2,\\) and dtype float64"):
        vocab.decode([0.0, 1.0])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: Vocabulary(("a", "b", "a")), ValueError, r"tokens must be distinct, got duplicates \['a'\]"),
        (lambda: Vocabulary(()), ValueError, "at least one token"),
        (lambda: Vocabulary(("a", 1)), TypeError, "tokens must hold non-empty strings, got int 1"),
        (lambda: Vocabulary.build([]), ValueError, "tokens is empty"),
        (lambda: Vocabulary.build("abc"), TypeError, "got one str 'abc'"),
        (lambda: Vocabulary.build(["a"], min_count=0), ValueError, "min_count must be >= 1, got 0"),
        (lambda: Vocabulary.build(["a"], specials=(UNK, UNK)), ValueError, "specials must be distinct"),
    ],
)
def test_vocabulary_bad_input_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_save_load_round_trip_and_fingerprint_check(tmp_path):
    tokenizer = CharTokenizer(specials=(UNK,))
    vocab = Vocabulary.build(tokenizer.tokenize('naïve "quotes", commas\n☃'), specials=tokenizer.specials)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["format"] == VOCABULARY_FORMAT and record["fingerprint"] == vocab.fingerprint
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.fingerprint == vocab.fingerprint and len(loaded.fingerprint) == 64
    loaded.check_matches(vocab.fingerprint)
    other = Vocabulary(vocab.tokens[::-1])  # same tokens, other ids
    assert other.fingerprint != vocab.fingerprint
    with pytest.raises(ValueError, match=f"vocabulary mismatch: expected fingerprint '{vocab.fingerprint}'"):
        other.check_matches(vocab.fingerprint)
    assert not list(tmp_path.glob("*.tmp"))


def _tampered(path):
    record = {"format": VOCABULARY_FORMAT, "fingerprint": Vocabulary(("a", "b")).fingerprint, "tokens": ["b", "a"]}
    path.write_text(json.dumps(record), encoding="utf-8")


@pytest.mark.parametrize(
    "write, match",
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"  \n"), "is empty"),
        (lambda p: p.write_text("{not json", encoding="utf-8"), "is not UTF-8 JSON"),
        (lambda p: p.write_bytes(b'["\xff"]'), "is not UTF-8 JSON"),
        (lambda p: p.write_text('["a", "b"]', encoding="utf-8"), "not an rnnjax vocabulary: format tag expected"),
        (lambda p: p.write_text('{"format": "other/1"}', encoding="utf-8"), "got 'other/1'"),
        (
            lambda p: p.write_text(json.dumps({"format": VOCABULARY_FORMAT, "tokens": "ab"}), encoding="utf-8"),
            "is corrupt: 'tokens' must be a list, got str",
        ),
        (
            lambda p: p.write_text(json.dumps({"format": VOCABULARY_FORMAT, "tokens": ["a", "a"]}), encoding="utf-8"),
            "is corrupt: tokens must be distinct",
        ),
        (_tampered, "is corrupt: its tokens hash to"),
    ],
)
def test_load_rejects_empty_foreign_and_corrupt_files(tmp_path, write, match):
    path = tmp_path / "vocab.json"
    write(path)
    with pytest.raises(ValueError, match=match) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


# --- read_text ----------------------------------------------------------------------------------------------


def test_read_text_is_exact_utf8(tmp_path):
    path = tmp_path / "input.txt"
    path.write_bytes("café\r\nline ☃\n".encode())
    assert read_text(path) == "café\r\nline ☃\n"  # no newline translation


def test_read_text_names_path_and_offset_of_bad_bytes(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"abc\xff")
    with pytest.raises(ValueError, match=r"not valid UTF-8: invalid start byte at byte offset 3 \(b'\\xff'\)") as info:
        read_text(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b" \n\t\n"])
def test_read_text_rejects_empty_files(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"empty or whitespace only \\({len(content)} bytes\\)") as info:
        read_text(path)
    assert str(path) in str(info.value)


# --- batching -----------------------------------------------------------------------------------------------


def test_batchify_cuts_contiguous_rows_and_drops_the_remainder():
    ids = np.arange(23, dtype=np.int32)
    data = batchify(ids, 4)
    assert data.shape == (4, 5) and data.dtype == np.int32
    np.testing.assert_array_equal(data, np.arange(20).reshape(4, 5))  # row b = ids[5b : 5b + 5]; 20, 21, 22 dropped
    np.testing.assert_array_equal(batchify(ids, 1), ids[None, :])
    np.testing.assert_array_equal(batchify(ids, 23), ids[:, None])


@pytest.mark.parametrize("batch_size, width, num_steps", [(1, 21, 5), (3, 20, 5), (4, 7, 1), (2, 6, 5), (5, 33, 8)])
def test_windows_tile_the_stream_exactly(batch_size, width, num_steps):
    rng = np.random.default_rng(width)
    ids = rng.integers(0, 50, batch_size * width + batch_size - 1)  # the most batchify can drop
    data = batchify(ids, batch_size)
    count = num_windows(data, num_steps)
    windows = list(stream_windows(data, num_steps))
    assert len(windows) == count == (width - 1) // num_steps
    for inputs, targets in windows:
        assert inputs.shape == targets.shape == (batch_size, num_steps)
    inputs = np.concatenate([window[0] for window in windows], axis=1)
    targets = np.concatenate([window[1] for window in windows], axis=1)
    np.testing.assert_array_equal(inputs, data[:, : count * num_steps])  # contiguous, nothing skipped or repeated
    np.testing.assert_array_equal(targets, data[:, 1 : count * num_steps + 1])  # the next token, everywhere
    # and in terms of the original stream: row b, column t is token b*N + t, its target token b*N + t + 1
    positions = np.arange(batch_size)[:, None] * width + np.arange(count * num_steps)[None, :]
    np.testing.assert_array_equal(inputs, ids[positions])
    np.testing.assert_array_equal(targets, ids[positions + 1])


@pytest.mark.parametrize(
    "width, num_steps, expected",
    [(2, 1, 1), (6, 5, 1), (11, 5, 2), (20, 5, 3), (21, 5, 4), (22, 5, 4), (100, 35, 2), (36, 35, 1)],
)
def test_num_windows_is_n_minus_one_over_num_steps(width, num_steps, expected):
    assert num_windows(np.zeros((3, width), np.int64), num_steps) == expected


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: batchify(np.arange(10), 0), ValueError, "batch_size must be >= 1, got 0"),
        (lambda: batchify(np.arange(10), 2.0), TypeError, "batch_size must be an int, got float"),
        (lambda: batchify(np.arange(10.0), 2), TypeError, "ids must be integer token ids, got dtype float64"),
        (lambda: batchify(np.ones(10, bool), 2), TypeError, "got dtype bool"),
        (lambda: batchify(np.zeros((2, 5), np.int32), 2), ValueError, r"shape \[num_tokens\], got shape \(2, 5\)"),
        (lambda: batchify(np.arange(3), 4), ValueError, "ids has 3 tokens, fewer than batch_size 4"),
        (
            lambda: stream_windows(np.zeros((2, 5), np.int32), 5),
            ValueError,
            "data rows have 5 tokens, too short for one window of num_steps 5: a window needs num_steps \\+ 1 = 6",
        ),
        (lambda: num_windows(np.zeros((2, 1), np.int32), 1), ValueError, "data rows have 1 tokens"),
        (lambda: stream_windows(np.zeros((2, 5), np.int32), 0), ValueError, "num_steps must be >= 1, got 0"),
        (lambda: stream_windows(np.zeros((2, 5), np.float32), 2), TypeError, "data must be integer token ids"),
        (lambda: stream_windows(np.arange(10), 2), ValueError, r"data must have shape \[batch_size, N\], got shape"),
    ],
)
def test_batching_bad_input_errors(call, error, match):
    # stream_windows is called, never iterated: its checks run eagerly, not at the first `next`
    with pytest.raises(error, match=match):
        call()
