"""Pair batches: every pair exactly once, <bos>/<eos> placement, bounded shapes, repeatable shuffles."""

import numpy as np
import pytest

from experiments.translation import batching
from experiments.translation.tokenisation import BOS, EOS, PAD


def _pairs(count, seed):
    rng = np.random.default_rng(seed)
    sources = [list(rng.integers(4, 20, rng.integers(1, 15))) for _ in range(count)]
    targets = [list(rng.integers(4, 20, rng.integers(0, 15))) for _ in range(count)]
    return sources, targets


def test_every_pair_once_with_shifted_targets_and_bounded_shapes():
    sources, targets = _pairs(57, 0)
    boundaries = batching.pair_boundaries(sources, targets, 3)
    batches = batching.pair_batches(sources, targets, batch_size=8, boundaries=boundaries, seed=4)
    assert {b["src"].shape for b in batches} <= {(8, length) for length in boundaries}
    seen = np.concatenate([b["index"][b["index"] >= 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(57))
    for batch in batches:
        for row, index in enumerate(batch["index"]):
            if index < 0:
                assert batch["src_lengths"][row] == batch["tgt_lengths"][row] == 0
                assert not batch["src"][row].any() and not batch["tgt_in"][row].any()
                continue
            source, target = sources[index], targets[index]
            assert batch["src"][row, :len(source) + 1].tolist() == source + [EOS]
            assert batch["tgt_in"][row, :len(target) + 1].tolist() == [BOS] + target
            assert batch["tgt_out"][row, :len(target) + 1].tolist() == target + [EOS]
            assert (batch["tgt_out"][row, len(target) + 1:] == PAD).all()
            assert batch["tgt_lengths"][row] == len(target) + 1 and batch["src_lengths"][row] == len(source) + 1
    again = batching.pair_batches(sources, targets, batch_size=8, boundaries=boundaries, seed=4)
    assert all((a["index"] == b["index"]).all() for a, b in zip(batches, again))


def test_bad_inputs():
    with pytest.raises(ValueError, match="got 2 source sequences but 1 target"):
        batching.pair_batches([[4], [5]], [[6]], batch_size=2, boundaries=(4,))
    with pytest.raises(ValueError, match="source sequence 0 is empty"):
        batching.pair_batches([[]], [[6]], batch_size=2, boundaries=(4,))
    with pytest.raises(ValueError, match="longer than the largest bucket 3"):
        batching.pair_batches([[4, 5, 6]], [[6]], batch_size=2, boundaries=(3,))
