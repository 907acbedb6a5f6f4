"""Padding and length bucketing for variable-length sequences.

A batch is padded to the smallest **bucket length** that holds its longest sequence, from a small fixed set of
bucket lengths, and always to `batch_size` rows (missing rows are padding with `mask = False`), so a whole run
compiles at most `len(boundaries)` train shapes: bounded recompilation instead of one program per distinct length
(or one huge padded length for every batch). Within an epoch, examples are shuffled, grouped by bucket, cut into
batches, and the batches shuffled, every example appearing exactly once.

A batch is a dict of NumPy arrays:

    tokens  int32 [batch_size, bucket_length]   ids, `pad_id` after each sequence's end
    lengths int32 [batch_size]                  valid steps per row (0 for padding rows)
    labels  int32 [batch_size]                  class per row (0 for padding rows)
    mask    bool  [batch_size]                  True for real examples
    index   int32 [batch_size]                  position of the example in the input list (-1 for padding rows)

>>> sequences = [np.array([5, 6]), np.array([7]), np.array([1, 2, 3, 4, 5])]
>>> boundaries = bucket_boundaries([len(s) for s in sequences], num_buckets=2)
>>> boundaries
(2, 5)
>>> batches = bucket_batches(sequences, np.array([0, 1, 1]), batch_size=2, boundaries=boundaries)
>>> [(b["tokens"].shape, b["index"].tolist()) for b in batches]
[((2, 2), [0, 1]), ((2, 5), [2, -1])]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnjax import _checks


def pad_sequences(sequences: Sequence[np.ndarray], length: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`(tokens int32 [n, length], lengths int32 [n])`: each sequence left-aligned, then `pad_id`. A sequence
    longer than `length` raises (truncate explicitly beforehand if that is intended)."""
    length = _checks.check_positive_int("length", length)
    tokens = np.full((len(sequences), length), pad_id, np.int32)
    lengths = np.zeros((len(sequences),), np.int32)
    for row, sequence in enumerate(sequences):
        sequence = np.asarray(sequence)
        if sequence.ndim != 1:
            raise ValueError(f"sequence {row} must be 1-D, got shape {sequence.shape}")
        if len(sequence) > length:
            raise ValueError(f"sequence {row} has {len(sequence)} tokens, more than the padded length {length}")
        tokens[row, :len(sequence)] = sequence
        lengths[row] = len(sequence)
    return tokens, lengths


def bucket_boundaries(lengths: Sequence[int], num_buckets: int, multiple: int = 1) -> tuple[int, ...]:
    """Up to `num_buckets` increasing bucket lengths: the `k / num_buckets` quantiles of `lengths` (k = 1..n), so
    buckets hold about equally many examples, rounded up to a `multiple`; the last is the maximum length (rounded
    up), so every sequence fits. Duplicates collapse (fewer buckets when lengths are few)."""
    num_buckets = _checks.check_positive_int("num_buckets", num_buckets)
    multiple = _checks.check_positive_int("multiple", multiple)
    lengths = np.asarray(lengths)
    if lengths.size == 0 or lengths.min() < 1:
        raise ValueError("lengths must be a non-empty list of positive sequence lengths")
    quantiles = np.quantile(lengths, np.arange(1, num_buckets + 1) / num_buckets, method="higher")
    rounded = -(-quantiles.astype(np.int64) // multiple) * multiple
    rounded[-1] = -(-int(lengths.max()) // multiple) * multiple
    return tuple(sorted({int(b) for b in rounded}))


def bucket_of(length: int, boundaries: Sequence[int]) -> int:
    """Index of the smallest boundary >= `length` (a ValueError if none is)."""
    index = int(np.searchsorted(np.asarray(boundaries), length, side="left"))
    if index == len(boundaries):
        raise ValueError(f"a sequence of {length} tokens is longer than the largest bucket {boundaries[-1]}")
    return index


def bucket_batches(
    sequences: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    batch_size: int,
    boundaries: Sequence[int],
    seed: int | None = None,
    pad_id: int = 0,
) -> list[dict]:
    """The batches of one epoch (see the module docstring). `seed=None` keeps the input order within each bucket
    and the buckets in increasing length (evaluation); an int shuffles examples and batch order with
    `np.random.default_rng(seed)` (pass e.g. `(run_seed, epoch)` hashed to an int, so each epoch differs and
    repeats exactly)."""
    batch_size = _checks.check_positive_int("batch_size", batch_size)
    boundaries = tuple(int(b) for b in boundaries)
    if not boundaries or list(boundaries) != sorted(set(boundaries)) or boundaries[0] < 1:
        raise ValueError(f"boundaries must be strictly increasing positive lengths, got {boundaries}")
    labels = np.asarray(labels)
    if len(labels) != len(sequences):
        raise ValueError(f"got {len(sequences)} sequences but {len(labels)} labels")
    rng = None if seed is None else np.random.default_rng(seed)
    order = np.arange(len(sequences)) if rng is None else rng.permutation(len(sequences))
    buckets = [[] for _ in boundaries]
    for index in order:
        length = len(sequences[index])
        if length < 1:
            raise ValueError(f"sequence {index} is empty; every example needs at least one token")
        buckets[bucket_of(length, boundaries)].append(int(index))
    batches = []
    for bucket, members in zip(boundaries, buckets):
        for start in range(0, len(members), batch_size):
            indices = np.asarray(members[start:start + batch_size], np.int32)
            tokens, lengths = pad_sequences([sequences[i] for i in indices], bucket, pad_id)
            rows = len(indices)
            # Short last batch: pad the rows too, so the batch axis never adds a compiled shape.
            fill = batch_size - rows
            batches.append({
                "tokens": np.concatenate([tokens, np.full((fill, bucket), pad_id, np.int32)]),
                "lengths": np.concatenate([lengths, np.zeros((fill,), np.int32)]),
                "labels": np.concatenate([labels[indices].astype(np.int32), np.zeros((fill,), np.int32)]),
                "mask": np.arange(batch_size) < rows,
                "index": np.concatenate([indices, np.full((fill,), -1, np.int32)]),
            })
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def batch_shapes(batches: Sequence[dict]) -> set[tuple[int, ...]]:
    """The distinct `tokens` shapes among `batches`: how many programs a jitted step compiles for them."""
    return {tuple(batch["tokens"].shape) for batch in batches}
