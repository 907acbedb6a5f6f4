"""Masked losses and metrics against NumPy, and their bad-input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from rnnjax import accuracy, cross_entropy, masked_mean, mean_absolute_error, mean_squared_error


def numpy_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def test_token_cross_entropy_is_the_mean_over_valid_tokens():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4, 7)).astype(np.float32)
    labels = rng.integers(0, 7, (3, 4))
    mask = np.arange(4)[None, :] < np.array([4, 1, 2])[:, None]
    expected = numpy_cross_entropy(logits, labels)[mask].mean()
    np.testing.assert_allclose(cross_entropy(logits, labels, mask), expected, rtol=1e-6)
    # padding never counts: garbage logits there change nothing
    garbage = np.where(mask[..., None], logits, 1e4).astype(np.float32)
    np.testing.assert_allclose(cross_entropy(garbage, labels, mask), expected, rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(logits, labels), numpy_cross_entropy(logits, labels).mean(), rtol=1e-6)


def test_classification_metrics():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]], np.float32)
    labels = np.array([0, 0, 0])
    assert float(accuracy(logits, labels)) == pytest.approx(2 / 3)
    assert float(accuracy(logits, labels, np.array([True, False, True]))) == 1.0
    np.testing.assert_allclose(cross_entropy(logits, labels), numpy_cross_entropy(logits, labels).mean(), rtol=1e-6)


def test_regression_losses_and_empty_mask():
    predictions = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    targets = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    mask = np.array([[True, True], [False, True]])
    assert float(mean_squared_error(predictions, targets, mask)) == pytest.approx((0 + 4 + 16) / 3)
    assert float(mean_absolute_error(predictions, targets)) == pytest.approx((0 + 2 + 3 + 4) / 4)
    assert float(masked_mean(jnp.ones(3), jnp.zeros(3, bool))) == 0.0  # no valid entry: 0, never NaN


def test_gradients_ignore_masked_tokens():
    logits = jnp.ones((2, 3, 4))
    labels = jnp.zeros((2, 3), jnp.int32)
    mask = jnp.array([[True, True, False], [True, False, False]])
    grads = jax.grad(lambda z: cross_entropy(z, labels, mask))(logits)
    assert not jnp.any(grads[~mask]) and jnp.all(jnp.any(grads[mask] != 0, axis=-1))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: cross_entropy(np.ones((2, 3), np.float32), np.ones((2,), np.float32)), TypeError,
         "labels must be integer class indices, got dtype float32"),
        (lambda: cross_entropy(np.ones((2, 3), np.float32), np.ones((3,), np.int32)), ValueError,
         "must share leading axes"),
        (lambda: cross_entropy(np.ones((2, 3), np.int32), np.ones((2,), np.int32)), TypeError,
         "logits must have a floating"),
        (lambda: mean_squared_error(np.ones(3, np.float32), np.ones(4, np.float32)), ValueError, "same shape"),
        (lambda: masked_mean(jnp.ones(3), jnp.ones(2, bool)), ValueError,
         "mask must have shape \\(3,\\), got \\(2,\\)"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- out-of-range labels: a silent NaN (past the end) or a wrapped-around class (negative) before ----------------------
@pytest.mark.parametrize("metric", [cross_entropy, accuracy])
@pytest.mark.parametrize("bad, message", [(3, r"got 3 at index \(1,\)"), (-1, r"got -1 at index \(1,\)")])
def test_out_of_range_labels_raise_naming_the_label_and_the_range(metric, bad, message):
    logits, labels = np.zeros((3, 3), np.float32), np.array([0, bad, 2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\) \(num_classes 3, the last axis of logits\), "
                                         + message):
        metric(logits, labels)


@pytest.mark.parametrize("metric", [cross_entropy, accuracy])
def test_out_of_range_labels_fail_a_checkify_check_under_jit(metric):
    checked = jax.jit(checkify.checkify(metric))
    error, _ = checked(jnp.zeros((2, 4, 5)), jnp.full((2, 4), 5))
    assert error.get().startswith("labels must lie in [0, 5) (num_classes 5, the last axis of logits), got 5 at "
                                  "flat index 0 of shape (2, 4)")
    error, _ = checked(jnp.zeros((2, 4, 5)), jnp.full((2, 4), 4))
    assert error.get() is None


def test_labels_at_masked_positions_are_never_read():
    logits = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    mask = np.array([[True, True, False], [True, False, False]])
    labels = np.array([[1, 3, 0], [2, 0, 0]])
    ignored = np.where(mask, labels, -100)  # PyTorch's ignore index where nothing is read
    for metric in (cross_entropy, accuracy):
        np.testing.assert_array_equal(metric(logits, ignored, mask), metric(logits, labels, mask))
    grads = jax.grad(lambda z: cross_entropy(z, ignored, mask))(jnp.asarray(logits))
    assert bool(jnp.all(jnp.isfinite(grads))) and not jnp.any(grads[~mask])
