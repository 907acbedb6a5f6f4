"""The many-to-one classifier: masked pooling equals pooling over the unpadded sequence, padding cannot change a
prediction, variational dropout shares its mask over time, and a tiny labelled set can be overfitted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE
from jax.experimental import checkify

import rnnjax
from experiments.bucketing import pad_sequences
from rnnjax.models.frames import FrameClassifier
from rnnjax.models.classifier import POOLINGS, SequenceClassifier, classification_loss_fn, masked_pool
from rnnjax.models.classifier import variational_dropout


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("backward_size", [0, 2])
def test_masked_pool_equals_pooling_the_unpadded_sequence(pooling, backward_size):
    rng = np.random.default_rng(0)
    ys = rng.standard_normal((3, 6, 5)).astype(np.float32)
    lengths = np.array([6, 2, 4], np.int32)
    pooled = np.asarray(masked_pool(jnp.asarray(ys), jnp.asarray(lengths), pooling, backward_size=backward_size))
    for b, length in enumerate(lengths):
        seq = ys[b, :length]
        expected = {"mean": seq.mean(0), "max": seq.max(0)}.get(pooling)
        if pooling == "last":
            forward = seq[-1, :5 - backward_size]
            expected = np.concatenate([forward, seq[0, 5 - backward_size:]])
        np.testing.assert_allclose(pooled[b], expected, rtol=1e-6, atol=1e-6)


def test_bidirectional_last_pooling_is_the_final_states(key):
    model = SequenceClassifier(vocab_size=12, num_classes=2, embedding_size=4, hidden_size=3, pooling="last")
    params = model.init(key)
    tokens = jnp.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]], jnp.int32)
    lengths = jnp.array([3, 5], jnp.int32)
    xs = jnp.take(params["embedding"], tokens, axis=0)
    ys, (carry,) = model.stack.apply(params["rnn"], xs, lengths=lengths)
    pooled = masked_pool(ys, lengths, "last", backward_size=3)
    expected = jnp.concatenate([carry.forward.h, carry.backward.h], axis=-1)  # backward: its state after t = 0
    np.testing.assert_allclose(pooled, expected, rtol=1e-6, atol=1e-6)


def test_last_pooling_needs_an_explicit_backward_size():
    ys, lengths = jnp.ones((2, 4, 6)), jnp.array([4, 2])
    with pytest.raises(ValueError, match=r"masked_pool\(\.\.\., 'last'\) needs backward_size="):
        masked_pool(ys, lengths, "last")
    with pytest.raises(ValueError, match="backward_size must be <= the 6 features of ys, got 7"):
        masked_pool(ys, lengths, "last", backward_size=7)
    with pytest.raises(TypeError):
        masked_pool(ys, lengths, "last", 3)  # keyword only: a positional 3 could be anything
    assert masked_pool(ys, lengths, "mean").shape == (2, 6)  # the other poolings read every direction alike


@pytest.mark.parametrize("make", ["sequence", "frames"])
def test_bidirectional_classifiers_read_the_backward_direction_at_t0(key, make):
    """Through `apply`: the pooled features are the forward state after the last valid step and the backward
    state after t = 0 (the output at t = length - 1 would be the backward direction after one step)."""
    if make == "sequence":
        model = SequenceClassifier(vocab_size=12, num_classes=2, embedding_size=4, hidden_size=3, pooling="last",
                                   dropout_rate=0.0)
        inputs = jnp.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]], jnp.int32)
    else:
        model = FrameClassifier(input_size=4, num_classes=2, hidden_size=3, pooling="last")
        inputs = jax.random.normal(key, (2, 5, 4))
    params = model.init(key)
    lengths = jnp.array([3, 5], jnp.int32)
    xs = jnp.take(params["embedding"], inputs, axis=0) if make == "sequence" else inputs
    ys, (carry,) = model.stack.apply(params["rnn"], xs, lengths=lengths)
    assert model.backward_size == 3
    pooled = jnp.concatenate([carry.forward.h, carry.backward.h], axis=-1)
    expected = pooled @ params["output"]["weight"].T + params["output"]["bias"][None, :]
    np.testing.assert_allclose(model.apply(params, inputs, lengths), expected, rtol=1e-5, atol=1e-6)
    wrong = masked_pool(ys, lengths, "last", backward_size=0) @ params["output"]["weight"].T
    assert not np.allclose(wrong + params["output"]["bias"][None, :], expected, atol=1e-3)  # readouts differ


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("mode,bidirectional", [("lstm", True), ("gru", False), ("mingru", True), ("minlstm", False)])
def test_pad_contents_cannot_change_the_logits(key, pooling, mode, bidirectional):
    model = SequenceClassifier(vocab_size=20, num_classes=3, embedding_size=6, hidden_size=5, num_layers=2,
                               mode=mode, bidirectional=bidirectional, pooling=pooling)
    params = model.init(key)
    tokens = jnp.array([[3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 10, 11], [12, 0, 0, 0, 0, 0]], jnp.int32)
    lengths = jnp.array([3, 6, 1], jnp.int32)
    garbage = jnp.where(jnp.arange(6)[None, :] < lengths[:, None], tokens,
                        jax.random.randint(jax.random.key(1), tokens.shape, 1, 20))
    apply = jax.jit(model.apply, compiler_options=FAST_COMPILE)
    logits, swapped = apply(params, tokens, lengths), apply(params, garbage, lengths)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(swapped))
    # ... and equal to each sequence classified alone, unpadded
    for b, length in enumerate(lengths.tolist()):
        alone = model.apply(params, tokens[b:b + 1, :length], lengths[b:b + 1])
        np.testing.assert_allclose(alone[0], logits[b], rtol=1e-5, atol=1e-6)


def test_variational_dropout_shares_its_mask_over_time(key):
    xs = jnp.ones((4, 7, 16))
    dropped = variational_dropout(key, xs, 0.5)
    zero = dropped == 0
    assert bool((zero == zero[:, :1]).all()) and 0 < int(zero[:, 0].sum()) < 64
    np.testing.assert_allclose(dropped[~zero], 2.0)


def test_overfits_a_tiny_labelled_set(key):
    # label = whether token 2 ("good") appears; variable lengths, padded to 5
    rows = [([2, 5, 6], 1), ([3, 5], 0), ([5, 6, 7, 2], 1), ([3, 3, 7, 6, 5], 0), ([2], 1), ([6, 7], 0),
            ([4, 2, 4], 1), ([4, 4, 3], 0)]
    tokens, lengths = pad_sequences([np.array(r) for r, _ in rows], 5)
    batch = {"tokens": jnp.asarray(tokens), "lengths": jnp.asarray(lengths),
             "labels": jnp.array([label for _, label in rows], jnp.int32), "mask": jnp.ones(8, bool)}
    model = SequenceClassifier(vocab_size=8, num_classes=2, embedding_size=8, hidden_size=8, pooling="mean",
                               dropout_rate=0.0)
    optimizer = rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(learning_rate=0.03))
    state = rnnjax.train.create_train_state(model.init(key), optimizer, jax.random.key(1))
    step = jax.jit(rnnjax.train.train_step_fn(classification_loss_fn(model), optimizer), compiler_options=FAST_COMPILE)
    for _ in range(150):
        state, metrics = step(state, batch)
    assert float(metrics["accuracy"]) == 1.0 and float(metrics["loss"]) < 0.05


def test_config_and_input_errors(key):
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(vocab_size=5, num_classes=2, pooling="attention")
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        SequenceClassifier(vocab_size=5, num_classes=1)
    model = SequenceClassifier(vocab_size=5, num_classes=2, embedding_size=3, hidden_size=2)
    params = model.init(key)
    with pytest.raises(TypeError, match="integer array"):
        model.apply(params, jnp.ones((2, 3)), jnp.array([3, 3]))
    with pytest.raises(ValueError, match="lengths must have shape"):
        model.apply(params, jnp.ones((2, 3), jnp.int32), jnp.array([3]))
    with pytest.raises(ValueError, match=r"embeddings must have shape \(5, 3\)"):
        model.init(key, np.zeros((5, 4)))


# -- out-of-range ids, lengths and labels: silent wrong answers before ------------------------------------------------
def test_out_of_range_ids_lengths_and_labels_raise(key):
    model = SequenceClassifier(vocab_size=5, num_classes=2, embedding_size=3, hidden_size=2)
    params = model.init(key)
    tokens, lengths = jnp.array([[1, 2, 3], [4, 0, 0]]), jnp.array([3, 1])
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 5\) \(vocab_size 5\), got 5 at index \(1, 0\)"):
        model.apply(params, tokens.at[1, 0].set(5), lengths)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 3\] \(the time axis\), got 4 at index \(1,\)"):
        model.apply(params, tokens, jnp.array([3, 4]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 2\] \(the time axis\), got -1"):
        masked_pool(jnp.ones((1, 2, 3)), jnp.array([-1]), "mean")
    loss_fn = classification_loss_fn(model)
    batch = {"tokens": tokens, "lengths": lengths, "labels": jnp.array([1, 2]), "mask": jnp.array([True, True])}
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\) \(num_classes 2.*got 2 at index \(1,\)"):
        loss_fn(params, None, batch, None)
    # a padding row (mask False) may carry any label: it is never read
    loss, _ = loss_fn(params, None, dict(batch, mask=jnp.array([True, False])), None)
    assert np.isfinite(float(loss))


def test_out_of_range_values_fail_checkify_checks_under_jit(key):
    model = SequenceClassifier(vocab_size=5, num_classes=2, embedding_size=3, hidden_size=2)
    params = model.init(key)
    apply = jax.jit(checkify.checkify(model.apply))
    tokens = jnp.array([[1, 2, 3], [4, 0, 0]])
    assert apply(params, tokens, jnp.array([3, 1]))[0].get() is None
    assert "tokens must lie in [0, 5) (vocab_size 5), got -2 at flat index 1" in apply(
        params, tokens.at[0, 1].set(-2), jnp.array([3, 1]))[0].get()
    assert "lengths must lie in [0, 3] (the time axis), got 9 at flat index 1" in apply(
        params, tokens, jnp.array([3, 9]))[0].get()
