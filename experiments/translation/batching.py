"""Length-bucketed batches of (source, target) id sequences for teacher-forced training and scoring.

Each pair goes to the smallest bucket length that holds both its source and its target plus `<eos>`; source and
target are padded to that one length, and every batch to `batch_size` rows, so an epoch compiles at most
`len(boundaries)` shapes. A batch is a dict of NumPy arrays:

    src          int32 [batch, L]   source ids + <eos>, then <pad>
    src_lengths  int32 [batch]      valid source steps (0 for padding rows)
    tgt_in       int32 [batch, L]   <bos> + target ids (the decoder's inputs), then <pad>
    tgt_out      int32 [batch, L]   target ids + <eos> (what each step must predict), then <pad>
    tgt_lengths  int32 [batch]      valid target steps = target tokens + 1 (0 for padding rows)
    index        int32 [batch]      position of the pair in the input lists (-1 for padding rows)

>>> batches = pair_batches([[5, 6], [7]], [[8], [9, 9, 9]], batch_size=2, boundaries=(4,))
>>> batches[0]["src"].tolist(), batches[0]["tgt_in"].tolist(), batches[0]["tgt_out"].tolist()
([[5, 6, 3, 0], [7, 3, 0, 0]], [[2, 8, 0, 0], [2, 9, 9, 9]], [[8, 3, 0, 0], [9, 9, 9, 3]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments import bucketing
from experiments.translation.tokenisation import BOS, EOS, PAD
from rnnjax import _checks


def pair_length(source: Sequence[int], target: Sequence[int]) -> int:
    """The padded length a pair needs: source + `<eos>`, target + `<eos>` (or `<bos>` + target)."""
    return max(len(source), len(target)) + 1


def pair_boundaries(sources, targets, num_buckets: int) -> tuple[int, ...]:
    """Bucket lengths: quantiles of the training pairs' `pair_length` (`experiments.bucketing`)."""
    return bucketing.bucket_boundaries([pair_length(s, t) for s, t in zip(sources, targets)], num_buckets)


def pair_batches(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], *, batch_size: int,
                 boundaries: Sequence[int], seed=None) -> list[dict]:
    """The batches of one epoch (module docstring): `seed=None` keeps input order within each bucket
    (evaluation), else examples and batches are shuffled with `np.random.default_rng(seed)`."""
    batch_size = _checks.check_positive_int("batch_size", batch_size)
    if len(sources) != len(targets):
        raise ValueError(f"got {len(sources)} source sequences but {len(targets)} target sequences")
    rng = None if seed is None else np.random.default_rng(seed)
    order = np.arange(len(sources)) if rng is None else rng.permutation(len(sources))
    buckets = [[] for _ in boundaries]
    for index in order:
        if len(sources[index]) < 1:
            raise ValueError(f"source sequence {index} is empty; every pair needs at least one source token")
        buckets[bucketing.bucket_of(pair_length(sources[index], targets[index]), boundaries)].append(int(index))
    batches = []
    for length, members in zip(boundaries, buckets):
        for start in range(0, len(members), batch_size):
            indices = members[start:start + batch_size]
            batch = {name: np.full((batch_size, length), PAD, np.int32) for name in ("src", "tgt_in", "tgt_out")}
            batch.update(src_lengths=np.zeros(batch_size, np.int32), tgt_lengths=np.zeros(batch_size, np.int32),
                         index=np.full(batch_size, -1, np.int32))
            for row, i in enumerate(indices):
                source, target = list(sources[i]), list(targets[i])
                batch["src"][row, :len(source) + 1] = source + [EOS]
                batch["tgt_in"][row, :len(target) + 1] = [BOS] + target
                batch["tgt_out"][row, :len(target) + 1] = target + [EOS]
                batch["src_lengths"][row], batch["tgt_lengths"][row] = len(source) + 1, len(target) + 1
                batch["index"][row] = i
            batches.append(batch)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
