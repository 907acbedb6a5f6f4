"""CTC: the loss against a brute-force sum over alignments, the decoders against each other and against exhaustive
search, the edit distance, and the frame models that feed them."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.models import (
    FrameClassifier,
    FrameTagger,
    ctc_greedy_decode,
    ctc_loss,
    ctc_loss_fn,
    ctc_prefix_beam_search,
    edit_distance,
    frame_classification_loss_fn,
)


def collapse(path, blank=0):
    """An alignment's labelling: repeats merged, then blanks removed."""
    return tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c))


def labelling_probabilities(log_probs: np.ndarray) -> dict:
    """Every labelling's probability by enumerating all classes**time alignments of `[time, classes]`."""
    time, classes = log_probs.shape
    totals = {}
    for path in itertools.product(range(classes), repeat=time):
        p = math.exp(sum(log_probs[t, c] for t, c in enumerate(path)))
        totals[collapse(path)] = totals.get(collapse(path), 0.0) + p
    return totals


def random_log_probs(seed, shape, peak=None):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape) * (1.0 if peak is None else 0.3)
    if peak is not None:  # one class per frame far ahead of the others
        top = rng.integers(shape[-1], size=shape[:-1])
        np.put_along_axis(logits, top[..., None], peak, axis=-1)
    return np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))


def greedy_lists(log_probs, lengths):
    labels, label_lengths = ctc_greedy_decode(jnp.asarray(log_probs), jnp.asarray(lengths))
    return [tuple(row[:n]) for row, n in zip(np.asarray(labels).tolist(), np.asarray(label_lengths))]


def test_ctc_loss_equals_a_brute_force_sum_over_alignments():
    log_probs = random_log_probs(0, (2, 5, 3))  # 3**5 = 243 alignments per row
    lengths = np.array([5, 4])  # the second row's last frame is padding and must not count
    labels = np.array([[1, 1, 2], [2, 1, 0]])
    label_lengths = np.array([3, 2])
    loss = ctc_loss(jnp.asarray(log_probs), jnp.asarray(lengths), jnp.asarray(labels), jnp.asarray(label_lengths))
    for row in range(2):
        totals = labelling_probabilities(log_probs[row, :lengths[row]])
        expected = -math.log(totals[tuple(labels[row, :label_lengths[row]])])
        assert float(loss[row]) == pytest.approx(expected, rel=1e-5)
    assert sum(labelling_probabilities(log_probs[0]).values()) == pytest.approx(1.0)


def test_ctc_loss_fn_averages_per_label_over_real_rows():
    model = FrameTagger(input_size=2, num_classes=3, hidden_size=4, mode="gru", bidirectional=False)
    params = model.init(jax.random.key(0))
    batch = {"features": jnp.ones((2, 6, 2)), "lengths": jnp.array([6, 0]), "labels": jnp.array([[1, 2], [0, 0]]),
             "label_lengths": jnp.array([2, 0]), "mask": jnp.array([True, False])}

    @jax.jit
    def both(params, batch):
        nll = ctc_loss(model.apply(params, batch["features"], batch["lengths"]), batch["lengths"], batch["labels"],
                       batch["label_lengths"])
        return ctc_loss_fn(model)(params, None, batch, None), nll

    (loss, (_, metrics)), nll = both(params, batch)
    assert float(loss) == pytest.approx(float(nll[0]) / 2) and float(metrics["nll"]) == pytest.approx(float(nll[0]))


def test_greedy_decoding_merges_repeats_and_drops_blanks_within_each_length():
    frames = np.array([[1, 1, 0, 1, 2, 2, 0, 3], [0, 2, 2, 0, 0, 1, 1, 1]])
    log_probs = np.log(np.full((2, 8, 4), 0.1))
    np.put_along_axis(log_probs, frames[..., None], np.log(0.7), axis=-1)
    assert greedy_lists(log_probs, [8, 5]) == [(1, 1, 2, 3), (2,)]
    labels, lengths = jax.jit(ctc_greedy_decode)(jnp.asarray(log_probs), jnp.array([8, 5]))
    assert labels.shape == (2, 8) and np.asarray(labels)[1, 1:].tolist() == [-1] * 7
    assert np.asarray(lengths).tolist() == [4, 1]


def test_prefix_beam_search_with_beam_1_equals_greedy_on_peaked_posteriors():
    # Peaked frames (most likely class well above 1/sqrt(2)), as a trained model gives: beam 1 is greedy.
    log_probs = random_log_probs(1, (64, 12, 5), peak=4.0)
    assert np.exp(log_probs).max(axis=-1).min() > 0.75
    lengths = np.random.default_rng(2).integers(1, 13, size=64)
    assert ctc_prefix_beam_search(log_probs, lengths, beam_size=1) == greedy_lists(log_probs, lengths)


def test_prefix_beam_search_finds_the_most_likely_labelling_where_greedy_does_not():
    # Blank is each frame's top class (0.6), so the best path is empty, yet "1" wins once its three alignments
    # (1 1, 1 -, - 1) are summed: 1 - 0.6**2 = 0.64.
    log_probs = np.log(np.array([[[0.6, 0.4], [0.6, 0.4]]]))
    totals = labelling_probabilities(log_probs[0])
    best = max(totals, key=totals.get)
    assert best == (1,) and totals[(1,)] == pytest.approx(0.64)
    assert greedy_lists(log_probs, [2]) == [()]
    labellings, scores = ctc_prefix_beam_search(log_probs, [2], beam_size=2, return_scores=True)
    assert labellings == [(1,)] and scores[0] == pytest.approx(math.log(0.64))


def test_a_wide_beam_is_exact_on_tiny_cases():
    log_probs = random_log_probs(3, (6, 5, 3))
    for row in log_probs:
        totals = labelling_probabilities(row)
        best = max(totals, key=totals.get)
        labellings, scores = ctc_prefix_beam_search(row[None], [5], beam_size=64, return_scores=True)
        assert labellings == [best] and scores[0] == pytest.approx(math.log(totals[best]))


def test_decoders_reject_bad_shapes():
    with pytest.raises(ValueError, match="log_probs must be"):
        ctc_prefix_beam_search(np.zeros((3, 4)), [3])
    with pytest.raises(ValueError, match="lengths must have shape"):
        ctc_greedy_decode(jnp.zeros((2, 3, 4)), jnp.array([3]))
    with pytest.raises(ValueError, match="beam_size"):
        ctc_prefix_beam_search(np.zeros((1, 3, 4)), [3], beam_size=0)


def test_edit_distance():
    assert edit_distance((), ()) == 0
    assert edit_distance((1, 2, 3), ()) == 3 and edit_distance((), (4,)) == 1
    assert edit_distance((1, 2, 3, 4), (1, 3, 4, 5)) == 2  # one deletion, one insertion
    assert edit_distance("kitten", "sitting") == 3


def test_frame_models_respect_lengths_and_validate():
    model = FrameClassifier(input_size=3, num_classes=4, hidden_size=5, mode="gru", pooling="mean")
    params = model.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
    padded = xs.at[1, 3:].set(100.0)  # padding past the length never changes a prediction
    lengths = jnp.array([6, 3])
    apply = jax.jit(lambda model, params, xs: model.apply(params, xs, lengths), static_argnums=0)
    np.testing.assert_allclose(apply(model, params, xs), apply(model, params, padded), atol=1e-6)
    batch = {"features": xs, "lengths": lengths, "labels": jnp.array([1, 2]), "mask": jnp.array([True, True])}
    loss, (_, metrics) = jax.jit(frame_classification_loss_fn(model))(params, None, batch, jax.random.key(2))
    assert np.isfinite(float(loss)) and 0.0 <= float(metrics["accuracy"]) <= 1.0
    parallel = FrameClassifier(input_size=3, num_classes=4, hidden_size=5, mode="mingru", bidirectional=False,
                               pooling="last", parallel_scan=True)
    assert parallel.cell.parallel_min_length == 0
    sequential = dataclasses.replace(parallel, parallel_scan=False)
    p = parallel.init(jax.random.key(3))
    np.testing.assert_allclose(apply(parallel, p, xs), apply(sequential, p, xs), atol=1e-5)
    with pytest.raises(ValueError, match="parallel_scan needs"):
        FrameClassifier(input_size=3, num_classes=4, mode="lstm", parallel_scan=True)
    with pytest.raises(ValueError, match="forget_bias applies"):
        FrameTagger(input_size=3, num_classes=4, mode="gru", forget_bias=1.0)
    with pytest.raises(ValueError, match="3 features per frame"):
        model.apply(params, jnp.ones((2, 6, 4)), lengths)
    with pytest.raises(TypeError, match="floating"):
        model.apply(params, jnp.ones((2, 6, 3), jnp.int32), lengths)



def test_ctc_labels_and_lengths_are_range_checked_eagerly():
    logits = jnp.zeros((2, 5, 4))
    lengths, labels, label_lengths = jnp.array([5, 3]), jnp.array([[1, 3, 2], [2, 9, 0]]), jnp.array([3, 1])
    assert np.all(np.isfinite(ctc_loss(logits, lengths, labels, label_lengths)))  # padding past 1 never read
    with pytest.raises(ValueError, match=r"labels must lie in \[1, 4\) \(class 0 is the blank\), got 0 at index "
                                         r"\(0, 1\)"):
        ctc_loss(logits, lengths, labels.at[0, 1].set(0), label_lengths)
    with pytest.raises(ValueError, match=r"labels must lie in \[1, 4\) .*got 4"):
        ctc_loss(logits, lengths, labels.at[0, 2].set(4), label_lengths)
    with pytest.raises(ValueError, match=r"labels must lie in \[1, 4\) .*got -1"):
        ctc_loss(logits, lengths, labels.at[1, 0].set(-1), label_lengths)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) \(class 3 is the blank\), got 3"):
        ctc_loss(logits, lengths, labels.at[0, 0].set(3), label_lengths, blank=3)
    with pytest.raises(ValueError, match=r"label_lengths must lie in \[0, 3\] \(the labels axis\), got 4"):
        ctc_loss(logits, lengths, labels, jnp.array([4, 1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\] \(the time axis\), got -1"):
        ctc_loss(logits, jnp.array([5, -1]), labels, label_lengths)
    with pytest.raises(ValueError, match=r"blank must be a class index in \[0, 4\), got 4"):
        ctc_loss(logits, lengths, labels, label_lengths, blank=4)


def test_ctc_labels_fail_checkify_checks_under_jit_through_a_frame_tagger():
    from jax.experimental import checkify

    model = FrameTagger(input_size=3, num_classes=4, hidden_size=5, mode="gru")
    params = model.init(jax.random.key(0))
    batch = {"features": jnp.ones((2, 5, 3)), "lengths": jnp.array([5, 3]), "labels": jnp.array([[1, 3], [2, 0]]),
             "label_lengths": jnp.array([2, 1]), "mask": jnp.array([True, True])}
    loss = jax.jit(checkify.checkify(ctc_loss_fn(model)))
    assert loss(params, None, batch, None)[0].get() is None
    message = loss(params, None, dict(batch, labels=batch["labels"].at[1, 0].set(0)), None)[0].get()
    assert "labels must lie in [1, 4) (class 0 is the blank), got 0 at flat index 2 of shape (2, 2)" in message
    message = loss(params, None, dict(batch, label_lengths=jnp.array([2, 3])), None)[0].get()
    assert "label_lengths must lie in [0, 2] (the labels axis), got 3 at flat index 1" in message
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\] \(the time axis\), got 7"):
        model.apply(params, batch["features"], jnp.array([5, 7]))
