"""Connectionist temporal classification (Graves et al. 2006) over padded batches: the loss, greedy and
prefix-beam decoding, and the edit distance the error rates are counted with.

Shapes: per-frame logits or log-probabilities `[batch, time, classes]` with `lengths` `[batch]` (frames
`t >= lengths[b]` are padding and never read); label sequences `[batch, max_labels]` with `label_lengths`.
Class `blank` (default 0) is CTC's blank; a labelling is a sequence of the other classes.

- `ctc_loss`: `-log p(labels | x)` per sequence, summed over every alignment (`optax.ctc_loss`, with lengths
  instead of paddings); `ctc_loss_fn(model)` is the training engine's loss over a batch dict.
- `ctc_greedy_decode`: best path: the most likely class per frame, repeats merged, blanks removed. Jittable.
- `ctc_prefix_beam_search`: the `beam_size` most likely *labellings* (prefixes), each scored by the total
  probability of all alignments that produce it so far (Hannun et al. 2014's prefix beam search without a language
  model). A wide enough beam finds the most likely labelling, which the best path can miss; with `beam_size=1` it
  keeps one prefix and returns the greedy result whenever each frame's most likely class has probability above
  1/sqrt(2) ~ 0.707 (a trained model's peaked posteriors; checked exhaustively on small cases, and 0.70 already
  has counterexamples), and may differ on flatter ones, where merging alignments changes which prefix is ahead.
- `edit_distance`: Levenshtein distance between two sequences (substitutions, insertions, deletions, each 1).

>>> import jax.numpy as jnp
>>> log_probs = jnp.log(jnp.array([[[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1],
...                                 [0.1, 0.1, 0.8]]]))      # frames: 1 1 blank 1 2
>>> labels, label_lengths = ctc_greedy_decode(log_probs, jnp.array([5]))
>>> labels[0, :int(label_lengths[0])].tolist()
[1, 1, 2]
>>> ctc_prefix_beam_search(log_probs, jnp.array([5]), beam_size=4)
[(1, 1, 2)]
>>> edit_distance((1, 1, 2), (1, 2))
1
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import _checks


def _paddings(lengths: jax.Array, size: int, dtype) -> jax.Array:
    """1.0 at positions `>= lengths[b]`, 0.0 before: `[batch, size]` (optax's padding convention)."""
    return (jnp.arange(size)[None, :] >= lengths[:, None]).astype(dtype)


def _check_batch(logits, lengths, name: str = "logits") -> None:
    if logits.ndim != 3:
        raise ValueError(f"{name} must be [batch, time, classes], got shape {tuple(logits.shape)}")
    if tuple(lengths.shape) != logits.shape[:1]:
        raise ValueError(f"lengths must have shape ({logits.shape[0]},) = [batch], got {tuple(lengths.shape)}")
    _checks.check_value_range("lengths", lengths, 0, logits.shape[1], what="the time axis")


def ctc_loss(logits: jax.Array, lengths: jax.Array, labels: jax.Array, label_lengths: jax.Array,
             blank: int = 0) -> jax.Array:
    """`-log p(labels | logits)` per sequence, `[batch]`: the negative log of the summed probability of every
    alignment (a path of one class per valid frame) that collapses to the labelling (repeats merged, then blanks
    removed). `logits` `[batch, time, classes]` are unnormalised (log-softmax is taken here); `labels`
    `[batch, max_labels]` int, valid up to `label_lengths`: each in [0, classes) and never `blank` (with the default
    blank 0: in [1, classes)); `label_lengths` in [0, max_labels], `lengths` in [0, time]. Out-of-range values
    raise a ValueError naming them when concrete and fail a `checkify` check under `jit` (`rnnjax.train`'s steps
    raise it as `InvalidInputError`). A labelling that cannot fit in its frames (it needs
    one frame per label plus one per repeated neighbour) has probability 0 and gets optax's large finite loss."""
    _check_batch(logits, lengths)
    if labels.ndim != 2 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be [batch, max_labels] with batch {logits.shape[0]}, got shape "
                         f"{tuple(labels.shape)}")
    if tuple(label_lengths.shape) != labels.shape[:1]:
        raise ValueError(f"label_lengths must have shape ({labels.shape[0]},), got {tuple(label_lengths.shape)}")
    classes, max_labels = logits.shape[2], labels.shape[1]
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < classes:
        raise ValueError(f"blank must be a class index in [0, {classes}), got {blank!r}")
    # Out of range, optax would read a wrong class (a negative label wraps around) or the blank as a label: a
    # finite, silently wrong loss. Padding past each label length is never read, so it may hold anything.
    _checks.check_value_range("label_lengths", label_lengths, 0, max_labels, what="the labels axis")
    valid = jnp.arange(max_labels)[None, :] < label_lengths[:, None]
    if _checks.is_concrete(label_lengths):
        valid = np.arange(max_labels)[None, :] < np.asarray(label_lengths)[:, None]
    _checks.check_label_range("labels", labels, classes, blank, valid=valid)
    logit_paddings = _paddings(lengths, logits.shape[1], logits.dtype)
    label_paddings = _paddings(label_lengths, labels.shape[1], logits.dtype)
    return optax.ctc_loss(logits, logit_paddings, labels.astype(jnp.int32), label_paddings, blank_id=blank)


def ctc_loss_fn(model, blank: int = 0):
    """The training engine's loss function for a per-frame model (`model.apply(params, features, lengths, key)
    -> logits [batch, time, classes]`, e.g. `FrameTagger`) over batches with `features`, `lengths`, `labels`
    `[batch, max_labels]`, `label_lengths` and `mask` (real rows). The loss is the CTC loss of each real row divided
    by its label length, averaged over the real rows (PyTorch's `reduction="mean"`); the metric `nll` is the
    per-sequence negative log-likelihood averaged over the real rows."""

    def loss_fn(params, carry, batch, key):
        logits = model.apply(params, batch["features"], batch["lengths"], key)
        nll = ctc_loss(logits, batch["lengths"], batch["labels"], batch["label_lengths"], blank)
        mask = batch["mask"].astype(nll.dtype)
        count = jnp.maximum(jnp.sum(mask), 1.0)
        per_label = nll / jnp.maximum(batch["label_lengths"], 1).astype(nll.dtype)
        loss = jnp.sum(per_label * mask) / count
        return loss, (carry, {"nll": jnp.sum(nll * mask) / count})

    return loss_fn


def ctc_greedy_decode(log_probs: jax.Array, lengths: jax.Array, blank: int = 0) -> tuple[jax.Array, jax.Array]:
    """Best-path decoding: `(labels [batch, time] int32, label_lengths [batch])`, each row's labelling
    left-aligned and padded with -1. Works on logits as well (the argmax is the same). Jittable."""
    _check_batch(log_probs, lengths, "log_probs")
    batch, time = log_probs.shape[:2]
    best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)  # [B, T]
    previous = jnp.concatenate([jnp.full((batch, 1), -1, jnp.int32), best[:, :-1]], axis=1)
    valid = jnp.arange(time)[None, :] < lengths[:, None]
    keep = valid & (best != blank) & (best != previous)
    position = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, time)  # out of range: dropped
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, time))
    labels = jnp.full((batch, time), -1, jnp.int32).at[rows, position].set(best, mode="drop")
    return labels, jnp.sum(keep, axis=1).astype(jnp.int32)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = (a, b) if a >= b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _beam_search_one(log_probs: np.ndarray, beam_size: int, blank: int, candidates: int) -> tuple[tuple, float]:
    """One sequence `[time, classes]` of log-probabilities -> (best labelling, its log-probability so scored)."""
    classes = log_probs.shape[1]
    others = [c for c in range(classes) if c != blank]
    beams = {(): (0.0, -math.inf)}  # prefix -> (log p ending in blank, log p ending in its last label)
    for frame in log_probs.tolist():
        allowed = others
        if candidates < len(others):  # only the most likely classes of this frame extend a prefix
            allowed = sorted(others, key=lambda c: (-frame[c], c))[:candidates]
        step: dict[tuple, list[float]] = {}

        def add(prefix, blank_score=-math.inf, label_score=-math.inf, step=step):
            entry = step.setdefault(prefix, [-math.inf, -math.inf])
            entry[0] = _logaddexp(entry[0], blank_score)
            entry[1] = _logaddexp(entry[1], label_score)

        for prefix, (ends_blank, ends_label) in beams.items():
            total = _logaddexp(ends_blank, ends_label)
            add(prefix, blank_score=total + frame[blank])
            last = prefix[-1] if prefix else None
            for c in allowed:
                if c == last:
                    add(prefix, label_score=ends_label + frame[c])  # a repeat without a blank merges
                    add(prefix + (c,), label_score=ends_blank + frame[c])  # after a blank it is a new label
                else:
                    add(prefix + (c,), label_score=total + frame[c])
        scored = sorted(((_logaddexp(*scores), prefix) for prefix, scores in step.items()),
                        key=lambda item: (-item[0], item[1]))  # ties: the smaller prefix, deterministically
        beams = {prefix: tuple(step[prefix]) for _, prefix in scored[:beam_size]}
    best_score, best = max(((_logaddexp(*scores), prefix) for prefix, scores in beams.items()),
                           key=lambda item: (item[0], tuple(-c for c in item[1])))
    return best, best_score


def ctc_prefix_beam_search(log_probs, lengths, beam_size: int = 8, blank: int = 0, candidates: int | None = None,
                           return_scores: bool = False):
    """Prefix beam search (see the module docstring): for each row, the most likely labelling among the
    `beam_size` prefixes kept at every frame, as a list of tuples of class ids (one per row). `log_probs`
    `[batch, time, classes]` must be log-probabilities (log-softmax), read on the host (NumPy, Python loops: a
    decoder for evaluation, not for inside `jit`). `candidates`: extend prefixes only with each frame's that many
    most likely non-blank classes (default: all). `return_scores=True` also returns the log-probabilities of the
    returned labellings as the search summed them, `[batch]`."""
    beam_size = _checks.check_positive_int("beam_size", beam_size)
    log_probs = np.asarray(log_probs, np.float64)
    lengths = np.asarray(lengths)
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be [batch, time, classes], got shape {log_probs.shape}")
    if lengths.shape != log_probs.shape[:1]:
        raise ValueError(f"lengths must have shape ({log_probs.shape[0]},) = [batch], got {lengths.shape}")
    classes = log_probs.shape[2]
    if not 0 <= blank < classes:
        raise ValueError(f"blank must be a class index in [0, {classes}), got {blank}")
    candidates = classes - 1 if candidates is None else _checks.check_positive_int("candidates", candidates)
    results = [_beam_search_one(row[:int(n)], beam_size, blank, candidates) for row, n in zip(log_probs, lengths)]
    labellings = [labelling for labelling, _ in results]
    if return_scores:
        return labellings, np.array([score for _, score in results])
    return labellings


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """The Levenshtein distance: the fewest substitutions, insertions and deletions turning `reference` into
    `hypothesis` (each costs 1). Divide a sum of these by the total reference length for an error rate."""
    reference, hypothesis = list(reference), list(hypothesis)
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]
