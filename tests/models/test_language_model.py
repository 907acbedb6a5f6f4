"""The recurrent language model: parameter layout and init, dropout placement, Zaremba's loss, overfitting a tiny
stream, and sampling (deterministic by seed, top-k respected)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

from rnnjax.models.language_model import LanguageModel, sample, zaremba_loss


def small_model(**overrides):
    fields = dict(vocab_size=7, embedding_size=6, hidden_size=6, num_layers=2, dropout_rate=0.3)
    return LanguageModel(**(fields | overrides))


def test_layout_and_zaremba_init(key):
    model = small_model(init_scale=0.05)
    params = model.init(key)
    assert params["embedding"].shape == (7, 6) and params["output"]["weight"].shape == (7, 6)
    assert len(params["rnn"]) == 2 and params["rnn"][0].weight_hh.shape == (24, 6)
    for leaf in jax.tree.leaves(params):  # every weight U(-init_scale, init_scale), embedding and softmax included
        assert float(jnp.max(jnp.abs(leaf))) <= 0.05 and float(jnp.max(jnp.abs(leaf))) > 0.03
    tied = small_model(tie_weights=True).init(key)
    assert "weight" not in tied["output"]


def test_tied_weights_project_with_the_embedding(key):
    model = small_model(tie_weights=True, dropout_rate=0.0)
    params = model.init(key)
    tokens = jnp.array([[1, 2, 3]])
    logits, _ = model.apply(params, tokens, model.initial_carry(1))
    ys, _ = model.stack.apply(params["rnn"], params["embedding"][tokens], carry=model.initial_carry(1))
    np.testing.assert_allclose(logits, ys @ params["embedding"].T + params["output"]["bias"][None, None], atol=1e-6)


def test_dropout_only_with_a_key(key):
    model = small_model()
    params = model.init(key)
    tokens = jnp.array([[1, 2, 3, 4]])
    carry = model.initial_carry(1)
    plain, _ = model.apply(params, tokens, carry)
    np.testing.assert_array_equal(model.apply(params, tokens, carry)[0], plain)
    dropped, _ = model.apply(params, tokens, carry, key=jax.random.key(3))
    assert not np.allclose(dropped, plain)


def test_zaremba_loss_and_a_uniform_model_has_perplexity_equal_to_the_vocabulary():
    targets = jnp.array([[0, 1, 2, 3, 4], [5, 6, 0, 1, 2]])
    loss, mean = zaremba_loss(jnp.zeros((2, 5, 7)), targets)
    assert float(jnp.exp(mean)) == pytest.approx(7.0, rel=1e-6)
    assert float(loss) == pytest.approx(5 * float(mean), rel=1e-6)  # summed over the 5 unrolled steps


def test_overfits_a_tiny_stream(key):
    model = small_model(dropout_rate=0.0, num_layers=1, hidden_size=16, embedding_size=8)
    params = model.init(key)
    stream = jnp.array([[0, 1, 2, 3, 4, 5, 6, 0, 2, 4, 6, 1, 3, 5] * 2])
    inputs, targets = stream[:, :-1], stream[:, 1:]
    optimizer = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(3e-2))
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        def loss_fn(params):
            return zaremba_loss(model.apply(params, inputs, model.initial_carry(1))[0], targets)[1]
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    first = None
    for _ in range(150):
        params, state, loss = step(params, state)
        first = float(loss) if first is None else first
    assert first > 1.5 and float(loss) < 0.1  # from about ln 7 to (nearly) memorised


def test_sampling_is_deterministic_by_seed_and_respects_top_k(key):
    model = small_model(dropout_rate=0.0)
    params = model.init(key)
    prime = jnp.array([1, 2])
    draw = jax.jit(lambda k, top_k: sample(model, params, k, prime, 12, temperature=1.5, top_k=top_k),
                   static_argnums=1)
    a = draw(jax.random.key(5), None)
    np.testing.assert_array_equal(draw(jax.random.key(5), None), a)
    assert a.shape == (12,) and a.dtype == jnp.int32 and not np.array_equal(draw(jax.random.key(6), None), a)
    apply = jax.jit(model.apply)  # one compile per input shape for the step-by-step replays below
    # top_k=1 is greedy decoding: replay it step by step with argmax
    greedy = draw(jax.random.key(7), 1)
    logits, carry = apply(params, prime[None], model.initial_carry(1))
    for token in greedy:
        assert int(token) == int(jnp.argmax(logits[0, -1]))
        logits, carry = apply(params, token.reshape(1, 1), carry)
    # top_k=2: every sampled token is one of the two most likely at its step
    pair = draw(jax.random.key(8), 2)
    logits, carry = apply(params, prime[None], model.initial_carry(1))
    for token in pair:
        assert int(token) in set(np.argsort(np.asarray(logits[0, -1]))[-2:].tolist())
        logits, carry = apply(params, token.reshape(1, 1), carry)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, p: m.apply(p, jnp.zeros((1, 3)), None), TypeError, "tokens must be an integer array"),
        (lambda m, p: m.apply(p, jnp.zeros((1, 3, 1), jnp.int32), None), ValueError,
         "tokens must be \\[batch, time\\]"),
        (lambda m, p: sample(m, p, jax.random.key(0), jnp.array([1]), 3, temperature=0.0), ValueError,
         "temperature must be > 0"),
        (lambda m, p: sample(m, p, jax.random.key(0), jnp.array([], jnp.int32), 3), ValueError, "non-empty"),
        (lambda m, p: LanguageModel(5, 4, 6, tie_weights=True), ValueError, "tie_weights needs"),
        (lambda m, p: LanguageModel(5, 4, 6, mode="transformer"), ValueError, "mode must be one of"),
        (lambda m, p: LanguageModel(5, 4, 6, init_scale=-1.0), ValueError, "init_scale must be > 0"),
    ],
)
def test_bad_input(call, error, match, key):
    model = small_model()
    with pytest.raises(error, match=match):
        call(model, model.init(key))


# -- out-of-range token ids: `take` wrapped negative ids around and filled NaN past the end, silently -----------------
@pytest.mark.parametrize("bad", [7, -1])
def test_out_of_range_token_ids_raise_naming_the_id_and_the_vocabulary(bad, key):
    model = small_model()
    params = model.init(key)
    tokens = jnp.array([[1, 2, bad]])
    with pytest.raises(ValueError, match=rf"tokens must lie in \[0, 7\) \(vocab_size 7\), got {bad} at index \(0, 2\)"):
        model.apply(params, tokens, model.initial_carry(1))
    with pytest.raises(ValueError, match=rf"tokens must lie in \[0, 7\).*got {bad}"):
        sample(model, params, jax.random.key(0), tokens[0], 3)  # the prime


def test_out_of_range_token_ids_fail_a_checkify_check_under_jit(key):
    model = small_model(num_layers=1)
    params = model.init(key)
    apply = jax.jit(checkify.checkify(lambda p, tokens: model.apply(p, tokens, model.initial_carry(2))[0]))
    error, _ = apply(params, jnp.array([[1, 2], [3, 70]]))
    assert error.get().startswith("tokens must lie in [0, 7) (vocab_size 7), got 70 at flat index 3 of shape (2, 2)")
    error, _ = apply(params, jnp.array([[1, 2], [3, 6]]))
    assert error.get() is None
    primed = jax.jit(checkify.checkify(lambda p, prime: sample(model, p, jax.random.key(0), prime, 2)))
    error, _ = primed(params, jnp.array([2, -3]))
    assert "tokens must lie in [0, 7) (vocab_size 7), got -3" in error.get()
