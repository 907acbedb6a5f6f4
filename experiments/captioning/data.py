"""Multi-digit MNIST canvases and their captions (Ba, Mnih & Kavukcuoglu 2014's multiple object recognition, in
captioning form).

A canvas is `HEIGHT` x `WIDTH` pixels holding `k` (2-5) MNIST digits side by side, none overlapping: the free
columns are split into k + 1 random gaps and each digit gets a random vertical offset in [0, HEIGHT - 28]. The
caption is the digits' words in reading order (left to right), e.g. "seven three one", as token ids

    BOS = 0, EOS = 1, the words "zero".."nine" = 2..11

Canvases are drawn from a given pool of digit images (train canvases from the train split only, test canvases from
the test split only) by a NumPy generator seeded by the caller, so a set of canvases is a pure function of its
seed.
"""

from __future__ import annotations

import numpy as np

HEIGHT = 32
WIDTH = 144  # five 28-pixel digits and 4 free columns
DIGIT = 28
MIN_DIGITS, MAX_DIGITS = 2, 5
BOS, EOS = 0, 1
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOCAB = ("<bos>", "<eos>") + WORDS
MAX_CAPTION = MAX_DIGITS + 1  # the words and EOS


def caption_text(ids) -> str:
    """Token ids -> words, up to the first EOS (BOS skipped)."""
    words = []
    for token in ids:
        token = int(token)
        if token == EOS:
            break
        if token != BOS:
            words.append(VOCAB[token])
    return " ".join(words)


def make_canvases(images: np.ndarray, labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator):
    """`(canvases float32 [n, HEIGHT, WIDTH] in [0, 1], digits int32 [n, MAX_DIGITS] (-1 past k), boxes int32
    [n, MAX_DIGITS, 2] (top, left) of each digit)` for `counts[i]` digits on canvas i, drawn from `images` uint8
    `[m, 28, 28]` with `labels` `[m]`."""
    counts = np.asarray(counts)
    if counts.min() < MIN_DIGITS or counts.max() > MAX_DIGITS:
        raise ValueError(f"digit counts must lie in [{MIN_DIGITS}, {MAX_DIGITS}], got {counts.min()}..{counts.max()}")
    n = len(counts)
    canvases = np.zeros((n, HEIGHT, WIDTH), np.float32)
    digits = np.full((n, MAX_DIGITS), -1, np.int32)
    boxes = np.zeros((n, MAX_DIGITS, 2), np.int32)
    for i, k in enumerate(counts):
        chosen = rng.integers(0, len(labels), size=k)
        # Random gaps: k + 1 non-negative integers summing to the free columns.
        cuts = np.sort(rng.integers(0, WIDTH - k * DIGIT + 1, size=k))
        gaps = np.diff(np.concatenate([[0], cuts]))
        left = 0
        for j, (index, gap) in enumerate(zip(chosen, gaps)):
            left += gap
            top = rng.integers(0, HEIGHT - DIGIT + 1)
            canvases[i, top:top + DIGIT, left:left + DIGIT] = images[index] / 255.0
            digits[i, j], boxes[i, j] = labels[index], (top, left)
            left += DIGIT
    return canvases, digits, boxes


def captions(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(inputs [n, MAX_CAPTION], targets [n, MAX_CAPTION], lengths [n])` from `digits` (-1 padded): inputs are
    BOS then the words, targets the words then EOS, lengths k + 1; padding is EOS (masked by the loss)."""
    n = len(digits)
    k = (digits >= 0).sum(1)
    words = np.where(digits >= 0, digits + 2, EOS)
    targets = np.full((n, MAX_CAPTION), EOS, np.int32)
    targets[:, :MAX_DIGITS] = words
    inputs = np.full((n, MAX_CAPTION), EOS, np.int32)
    inputs[:, 0] = BOS
    inputs[:, 1:] = words
    return inputs, targets, (k + 1).astype(np.int32)
