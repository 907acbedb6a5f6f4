"""Losses and metrics with masks, as the training engine uses them.

Every function takes an optional boolean `mask` over the leading (example or token) axes and averages over the
valid entries only, so padded positions never count: a batch of sequences of different lengths gives the mean over
its real tokens. With no valid entry the mean is 0 (never NaN), so an all-padding batch cannot poison a run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnjax import _checks


def _check_mask(mask, shape: tuple[int, ...], name: str = "mask") -> jax.Array:
    if mask is None:
        return jnp.ones(shape, bool)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    return jnp.asarray(mask, bool)


def masked_mean(values: jax.Array, mask=None) -> jax.Array:
    """Mean of `values` over the entries where `mask` is True (0 when there is none)."""
    mask = _check_mask(mask, values.shape)
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(values.dtype)


def _check_labels(logits: jax.Array, labels: jax.Array, what: str, mask) -> tuple[jax.Array, jax.Array]:
    """`(labels, mask)` after checking dtypes, shapes and that every label at a valid position lies in
    [0, num_classes): a ValueError now when concrete, a `checkify` check when traced (`rnnjax._checks`). Labels at
    masked positions are never read (any value, e.g. PyTorch's ignore index -100): they are replaced by 0."""
    _checks.check_floating_array("logits", logits)
    if not hasattr(labels, "dtype") or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{what} must be integer class indices, got dtype {getattr(labels, 'dtype', type(labels))}")
    if tuple(logits.shape[:-1]) != tuple(labels.shape):
        raise ValueError(
            f"logits [..., num_classes] and {what} [...] must share leading axes, got logits {tuple(logits.shape)} "
            f"and {what} {tuple(labels.shape)}"
        )
    given = mask is not None
    mask = _check_mask(mask, labels.shape)
    num_classes = logits.shape[-1]
    # An out-of-range label would gather NaN (past the end) or wrap around (negative): a silent wrong loss.
    _checks.check_index_range(what, labels, num_classes, valid=mask if given else None,
                              what=f"num_classes {num_classes}, the last axis of logits")
    labels = jnp.asarray(labels)
    labels = jnp.where(mask, labels, 0) if given else labels
    return labels, mask


def cross_entropy(logits: jax.Array, labels: jax.Array, mask=None) -> jax.Array:
    """Softmax cross-entropy `-log softmax(logits)[label]`, averaged over valid positions.

    `logits` `[..., num_classes]`, `labels` int `[...]`, `mask` bool `[...]`. Used for both tokens
    (`[batch, time, vocab]` with a padding mask: the mean over valid tokens) and classes (`[batch, classes]`).
    Computed in float32 at least, whatever the logits' dtype. Every label where `mask` is True must lie in
    [0, num_classes) (checked: a ValueError when concrete, `checkify` under `jit`); masked ones are ignored.
    """
    labels, mask = _check_labels(logits, labels, "labels", mask)
    logits = logits.astype(jnp.result_type(logits.dtype, jnp.float32))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return masked_mean(-picked, mask)


def accuracy(logits: jax.Array, labels: jax.Array, mask=None) -> jax.Array:
    """Fraction of valid positions where `argmax(logits) == label`; labels checked as in `cross_entropy`."""
    labels, mask = _check_labels(logits, labels, "labels", mask)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return masked_mean(correct, mask)


def _check_regression(predictions: jax.Array, targets: jax.Array) -> None:
    _checks.check_floating_array("predictions", predictions)
    _checks.check_floating_array("targets", targets)
    if tuple(predictions.shape) != tuple(targets.shape):
        raise ValueError(
            f"predictions and targets must have the same shape, got {tuple(predictions.shape)} and "
            f"{tuple(targets.shape)}"
        )


def mean_squared_error(predictions: jax.Array, targets: jax.Array, mask=None) -> jax.Array:
    """`mean((predictions - targets)^2)` over valid entries; `mask` has the shape of `predictions`."""
    _check_regression(predictions, targets)
    return masked_mean(jnp.square(predictions - targets), mask)


def mean_absolute_error(predictions: jax.Array, targets: jax.Array, mask=None) -> jax.Array:
    """`mean(|predictions - targets|)` over valid entries; `mask` has the shape of `predictions`."""
    _check_regression(predictions, targets)
    return masked_mean(jnp.abs(predictions - targets), mask)
