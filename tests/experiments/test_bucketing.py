"""Bucketing: every example exactly once per epoch, padded to its bucket, a bounded set of shapes."""

import numpy as np
import pytest

from experiments import bucketing


def _sequences(count, seed=0, max_length=30):
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 50, rng.integers(1, max_length + 1)).astype(np.int32) for _ in range(count)]


@pytest.mark.parametrize("seed", [None, 0, [3, 7]])
def test_every_example_exactly_once_per_epoch(seed):
    sequences = _sequences(203)
    labels = np.arange(203) % 3
    boundaries = bucketing.bucket_boundaries([len(s) for s in sequences], num_buckets=4)
    batches = bucketing.bucket_batches(sequences, labels, batch_size=16, boundaries=boundaries, seed=seed)
    seen = np.concatenate([b["index"][b["mask"]] for b in batches])
    assert sorted(seen.tolist()) == list(range(203))
    for batch in batches:
        for row in np.flatnonzero(batch["mask"]):
            index = batch["index"][row]
            length = batch["lengths"][row]
            assert length == len(sequences[index])
            np.testing.assert_array_equal(batch["tokens"][row, :length], sequences[index])
            assert (batch["tokens"][row, length:] == 0).all()
            assert batch["labels"][row] == labels[index]
        assert not batch["mask"][~batch["mask"]].any()
        assert (batch["lengths"][~batch["mask"]] == 0).all()


def test_shapes_are_bounded_by_the_buckets_and_batch_pads_to_its_own_bucket():
    sequences = _sequences(500)
    boundaries = bucketing.bucket_boundaries([len(s) for s in sequences], num_buckets=5)
    assert len(boundaries) <= 5 and boundaries[-1] == max(len(s) for s in sequences)
    batches = bucketing.bucket_batches(sequences, np.zeros(500, np.int32), batch_size=32, boundaries=boundaries,
                                       seed=1)
    shapes = bucketing.batch_shapes(batches)
    assert shapes <= {(32, b) for b in boundaries}
    for batch in batches:
        bucket = batch["tokens"].shape[1]
        smaller = [b for b in boundaries if b < bucket]
        # the batch's longest sequence needs this bucket: it does not fit the next smaller one
        assert batch["lengths"].max() <= bucket and (not smaller or batch["lengths"].max() > smaller[-1])


def test_shuffling_is_seeded_and_differs_between_epochs():
    sequences = _sequences(100)
    boundaries = bucketing.bucket_boundaries([len(s) for s in sequences], 3)

    def order(seed):
        batches = bucketing.bucket_batches(sequences, np.zeros(100, np.int32), batch_size=8, boundaries=boundaries,
                                           seed=seed)
        return np.concatenate([b["index"] for b in batches]).tolist()

    assert order([0, 1]) == order([0, 1])
    assert order([0, 1]) != order([0, 2])


def test_pad_sequences_and_errors():
    tokens, lengths = bucketing.pad_sequences([np.array([4, 5]), np.array([6])], 3, pad_id=0)
    assert tokens.tolist() == [[4, 5, 0], [6, 0, 0]] and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="more than the padded length 1"):
        bucketing.pad_sequences([np.array([4, 5])], 1)
    with pytest.raises(ValueError, match="longer than the largest bucket 2"):
        bucketing.bucket_batches([np.array([1, 2, 3])], np.array([0]), batch_size=2, boundaries=(2,))
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        bucketing.bucket_batches([np.array([1]), np.array([], np.int32)], np.array([0, 1]), batch_size=2,
                                 boundaries=(2,))
    with pytest.raises(ValueError, match="strictly increasing"):
        bucketing.bucket_batches([np.array([1])], np.array([0]), batch_size=2, boundaries=(3, 2))
    with pytest.raises(ValueError, match="positive sequence lengths"):
        bucketing.bucket_boundaries([0, 3], 2)
