"""Batched decoding for any conditional decoder: greedy, sampling, beam search, each jitted once per shape.

The decoder protocol (what `Seq2Seq` and `CaptionDecoder` provide; `model` must be hashable, a frozen dataclass):

    model.init_state(params, *conditioning) -> state          # every leaf [batch, ...]
    model.step(params, state, tokens [batch]) -> (state, logits [batch, vocab], attention [batch, source] or None)

`conditioning` is what the model is conditioned on (`src, src_lengths` for `Seq2Seq`, image features for
`CaptionDecoder`). Every function starts from `bos_id` and returns `tokens` int `[batch, max_length]`: the
generated ids, with `eos_id` at position `lengths[b]` when the sequence ended (`lengths` counts the tokens before
EOS; `max_length` when it never came) and `pad_id` after it. The loops are `lax.while_loop`s over static shapes,
stopping when every sequence is done; jitted with `model`, the ids, `max_length` (and `beam_size`, `top_k`) static,
so a second call with the same shapes runs without tracing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnjax import _checks


def _check_ids(bos_id, eos_id, pad_id, max_length) -> None:
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        _checks.check_nonnegative_int(name, value)
    _checks.check_positive_int("max_length", max_length)


def _check_vocab(logits_shape, bos_id, eos_id, pad_id) -> None:
    vocab = logits_shape[-1]
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if value >= vocab:
            raise ValueError(f"{name} must lie in [0, {vocab}) (the decoder's vocabulary), got {value}")


def _top_k_mask(logits: jax.Array, top_k: int | None) -> jax.Array:
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    threshold = jax.lax.top_k(logits, top_k)[0][..., -1:]
    return jnp.where(logits < threshold, -jnp.inf, logits)


@functools.partial(jax.jit, static_argnames=("model", "bos_id", "eos_id", "pad_id", "max_length", "top_k",
                                             "greedy"))
def _decode(model, params, conditioning, key, temperature, *, bos_id, eos_id, pad_id, max_length, top_k, greedy):
    state = model.init_state(params, *conditioning)
    batch = jax.tree.leaves(state)[0].shape[0]
    bos = jnp.full((batch,), bos_id, jnp.int32)
    _, logits_shape, attention_shape = jax.eval_shape(model.step, params, state, bos)
    _check_vocab(logits_shape.shape, bos_id, eos_id, pad_id)
    attention = None if attention_shape is None else jnp.zeros((batch, max_length) + attention_shape.shape[1:])
    init = (jnp.zeros((), jnp.int32), state, bos, jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.int32),
            jnp.full((batch, max_length), pad_id, jnp.int32), attention)

    def cond(loop):
        t, _, _, done, _, _, _ = loop
        return (t < max_length) & ~jnp.all(done)

    def body(loop):
        t, state, previous, done, lengths, tokens, attention = loop
        state, logits, weights = model.step(params, state, previous)
        if greedy:
            chosen = jnp.argmax(logits, axis=-1)
        else:
            step_key = jax.random.fold_in(key, t)
            chosen = jax.random.categorical(step_key, _top_k_mask(logits / temperature, top_k), axis=-1)
        chosen = jnp.where(done, pad_id, chosen.astype(jnp.int32))
        tokens = tokens.at[:, t].set(chosen)
        if attention is not None:
            attention = attention.at[:, t].set(jnp.where(done[:, None], 0.0, weights).astype(attention.dtype))
        lengths = jnp.where(done | (chosen == eos_id), lengths, lengths + 1)
        done = done | (chosen == eos_id)
        return t + 1, state, chosen, done, lengths, tokens, attention

    _, _, _, _, lengths, tokens, attention = jax.lax.while_loop(cond, body, init)
    return tokens, lengths, attention


def greedy_decode(model, params, *conditioning, bos_id: int, eos_id: int, max_length: int, pad_id: int = 0):
    """`(tokens [B, max_length], lengths [B], attention [B, max_length, S] or None)`: the most likely token at
    every step (module docstring for the protocol and the output layout; attention rows past the end are zero).

    >>> import jax, jax.numpy as jnp
    >>> from rnnjax.models import Seq2Seq
    >>> model = Seq2Seq(src_vocab_size=6, tgt_vocab_size=6, embed_size=4, hidden_size=4)
    >>> params = model.init(jax.random.key(0))
    >>> tokens, lengths, attention = greedy_decode(model, params, jnp.ones((2, 3), jnp.int32), jnp.array([3, 2]),
    ...                                            bos_id=1, eos_id=2, max_length=5)
    >>> tokens.shape, lengths.shape, attention.shape
    ((2, 5), (2,), (2, 5, 3))
    """
    _check_ids(bos_id, eos_id, pad_id, max_length)
    return _decode(model, params, conditioning, jax.random.key(0), 1.0, bos_id=bos_id, eos_id=eos_id,
                   pad_id=pad_id, max_length=max_length, top_k=None, greedy=True)


def sample_decode(model, params, *conditioning, key: jax.Array, bos_id: int, eos_id: int, max_length: int,
                  temperature: float = 1.0, top_k: int | None = None, pad_id: int = 0):
    """Like `greedy_decode`, each token drawn from `softmax(logits / temperature)` restricted to the `top_k` most
    likely tokens (all when None); reproducible for a given `key` (step t uses `fold_in(key, t)`)."""
    _check_ids(bos_id, eos_id, pad_id, max_length)
    _checks.check_positive_float("temperature", temperature)
    if top_k is not None:
        _checks.check_positive_int("top_k", top_k)
    return _decode(model, params, conditioning, key, jnp.float32(temperature), bos_id=bos_id, eos_id=eos_id,
                   pad_id=pad_id, max_length=max_length, top_k=top_k, greedy=False)


def _gather_beams(tree, indices: jax.Array):
    """Each leaf `[B, K', ...]` reindexed along axis 1 by `indices` `[B, K]`."""
    return jax.tree.map(lambda leaf: jax.vmap(lambda row, index: row[index])(leaf, indices), tree)


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "bos_id", "eos_id", "pad_id", "max_length"))
def _beam_search(model, params, conditioning, length_penalty, *, beam_size, bos_id, eos_id, pad_id, max_length):
    k = beam_size
    state = model.init_state(params, *conditioning)
    batch = jax.tree.leaves(state)[0].shape[0]
    # Every leaf [B, ...] -> [B*K, ...]: the K beams of an example sit next to each other.
    state = jax.tree.map(lambda leaf: jnp.repeat(leaf, k, axis=0), state)
    _, logits_shape, _ = jax.eval_shape(model.step, params, state, jnp.zeros((batch * k,), jnp.int32))
    _check_vocab(logits_shape.shape, bos_id, eos_id, pad_id)
    vocab = logits_shape.shape[-1]
    if 2 * k > k * vocab:
        raise ValueError(f"beam_search needs a vocabulary of at least 2 tokens, got {vocab}")
    negative_inf = jnp.float32(-jnp.inf)

    def normalise(scores, lengths):
        return scores / jnp.power(lengths.astype(jnp.float32), length_penalty)

    # One live beam at first (the others -inf), so the first expansion has no duplicates.
    alive_scores = jnp.where(jnp.arange(k)[None, :] == 0, 0.0, negative_inf) * jnp.ones((batch, 1))
    init = dict(
        t=jnp.zeros((), jnp.int32), state=state, previous=jnp.full((batch * k,), bos_id, jnp.int32),
        alive_scores=alive_scores, alive_tokens=jnp.full((batch, k, max_length), pad_id, jnp.int32),
        finished_scores=jnp.full((batch, k), negative_inf), finished_tokens=jnp.full((batch, k, max_length), pad_id,
                                                                                    jnp.int32),
        finished_lengths=jnp.zeros((batch, k), jnp.int32),
    )

    def done(loop):
        # No live beam can still beat the best finished one: its log-probability can only fall, and dividing a
        # negative number by at most max_length ** length_penalty gives its best possible normalised score.
        best_alive = normalise(jnp.max(loop["alive_scores"], axis=1), jnp.full((batch,), max_length))
        return jnp.max(loop["finished_scores"], axis=1) >= best_alive

    def cond(loop):
        return (loop["t"] < max_length) & ~jnp.all(done(loop))

    def body(loop):
        t = loop["t"]
        state, logits, _ = model.step(params, loop["state"], loop["previous"])
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, k, vocab)
        candidates = (loop["alive_scores"][:, :, None] + log_probs).reshape(batch, k * vocab)
        # The top 2K hold at least K that do not end in EOS (each beam has one EOS extension), so the beam stays full.
        top_scores, top_index = jax.lax.top_k(candidates, 2 * k)
        beam, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        tokens = _gather_beams(loop["alive_tokens"], beam).at[:, :, t].set(token)
        is_eos = token == eos_id
        # A hypothesis ends when its EOS extension ranks within the top K (so beam size 1 is greedy decoding).
        ends = is_eos & (jnp.arange(2 * k)[None, :] < k)
        ended_scores = jnp.where(ends, normalise(top_scores, jnp.full_like(token, t + 1)), negative_inf)
        pool_scores = jnp.concatenate([loop["finished_scores"], ended_scores], axis=1)
        pool_tokens = jnp.concatenate([loop["finished_tokens"], tokens], axis=1)
        pool_lengths = jnp.concatenate([loop["finished_lengths"], jnp.full_like(token, t)], axis=1)
        finished_scores, chosen = jax.lax.top_k(pool_scores, k)
        alive_scores, alive = jax.lax.top_k(jnp.where(is_eos, negative_inf, top_scores), k)
        flat_beams = (jnp.arange(batch)[:, None] * k + jnp.take_along_axis(beam, alive, axis=1)).reshape(-1)
        alive_tokens = _gather_beams(tokens, alive)
        return dict(
            t=t + 1, state=jax.tree.map(lambda leaf: leaf[flat_beams], state),
            previous=jnp.take_along_axis(token, alive, axis=1).reshape(-1), alive_scores=alive_scores,
            alive_tokens=alive_tokens, finished_scores=finished_scores,
            finished_tokens=_gather_beams(pool_tokens, chosen), finished_lengths=_gather_beams(pool_lengths, chosen),
        )

    loop = jax.lax.while_loop(cond, body, init)
    # Beams still alive at max_length are complete hypotheses of max_length tokens (no EOS).
    alive_final = jnp.where(loop["t"] == max_length,
                            normalise(loop["alive_scores"], jnp.full((batch, k), max_length)), negative_inf)
    scores = jnp.concatenate([loop["finished_scores"], alive_final], axis=1)
    tokens = jnp.concatenate([loop["finished_tokens"], loop["alive_tokens"]], axis=1)
    lengths = jnp.concatenate([loop["finished_lengths"], jnp.full((batch, k), max_length, jnp.int32)], axis=1)
    best = jnp.argmax(scores, axis=1)[:, None]
    return (_gather_beams(tokens, best)[:, 0], jnp.take_along_axis(lengths, best, axis=1)[:, 0],
            jnp.take_along_axis(scores, best, axis=1)[:, 0])


def beam_search(model, params, *conditioning, beam_size: int, bos_id: int, eos_id: int, max_length: int,
                length_penalty: float = 1.0, pad_id: int = 0):
    """`(tokens [B, max_length], lengths [B], scores [B])`: the best hypothesis of a beam search of `beam_size`
    beams per example, in the layout of the module docstring.

    A hypothesis' score is its log-probability (the EOS token's included) divided by `n ** length_penalty`, n
    its number of tokens (EOS included; `max_length` for one that never ended): 0 ranks by log-probability, 1
    (default) by the mean per-token log-probability (Wu et al. 2016 and Murray & Chiang 2018 on why some
    normalisation is needed). Each step expands the K live beams into K*V candidates; those ending in EOS and
    ranked within the top K join the finished pool, the best K others stay live. The search stops when no live
    beam can beat the best finished hypothesis (exact, since log-probabilities only fall) or at `max_length`;
    beam size 1 with `length_penalty=0` is greedy decoding.
    """
    _check_ids(bos_id, eos_id, pad_id, max_length)
    _checks.check_positive_int("beam_size", beam_size)
    length_penalty = _checks.check_finite_float("length_penalty", length_penalty)
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    return _beam_search(model, params, conditioning, jnp.float32(length_penalty), beam_size=beam_size,
                        bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, max_length=max_length)
