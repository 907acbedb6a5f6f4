"""CaptionDecoder: teacher forcing equals a loop over its step, the vector bridge is tanh(W v + b) (Show and Tell)
and the grid's is over the mean annotation (Show, Attend and Tell), and bad features raise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.models.captioner import CaptionDecoder

TOKENS = jnp.array([[0, 3, 4, 5], [0, 6, 2, 2]])
LENGTHS = jnp.array([4, 2])


@pytest.mark.parametrize("attention,mode", [("additive", "lstm"), ("general", "gru"), (None, "lstm")])
def test_teacher_forcing_equals_a_loop_over_step(attention, mode, key):
    model = CaptionDecoder(vocab_size=7, embed_size=4, hidden_size=8, feature_size=5, mode=mode, attention=attention,
                           num_layers=2)
    params = model.init(key)
    features = jax.random.normal(jax.random.key(1), (2, 6, 5))
    inputs = features if attention else features[:, 0]
    logits, weights = model.apply(params, inputs, TOKENS, LENGTHS)
    state = model.init_state(params, inputs)
    for t in range(4):
        state, step_logits, step_weights = model.step(params, state, TOKENS[:, t])
        rows = np.array([0, 1] if t < 2 else [0])
        np.testing.assert_allclose(logits[rows, t], step_logits[rows], rtol=1e-5, atol=1e-6)
        if attention:
            np.testing.assert_allclose(weights[rows, t], step_weights[rows], rtol=1e-5, atol=1e-6)
    assert (weights is None) == (attention is None)


def test_the_initial_carry_comes_from_the_vector_or_the_mean_annotation(key):
    features = jax.random.normal(jax.random.key(1), (2, 6, 5))
    for attention, inputs, vector in (("additive", features, features.mean(1)), (None, features[:, 0], features[:, 0])):
        model = CaptionDecoder(vocab_size=7, embed_size=4, hidden_size=8, feature_size=5, attention=attention)
        params = model.init(key)
        state = model.init_state(params, inputs)
        h_bridge, c_bridge = params["bridge"][0]
        np.testing.assert_allclose(state.carry.layers[0].h,
                                   jnp.tanh(vector @ h_bridge["weight"].T + h_bridge["bias"][None, :]), rtol=1e-5)
        np.testing.assert_allclose(state.carry.layers[0].c,
                                   jnp.tanh(vector @ c_bridge["weight"].T + c_bridge["bias"][None, :]), rtol=1e-5)


def test_bad_features_and_ids_raise(key):
    model = CaptionDecoder(vocab_size=7, embed_size=4, hidden_size=8, feature_size=5)
    params = model.init(key)
    with pytest.raises(ValueError, match="attends over a grid"):
        model.apply(params, jnp.ones((2, 5)), TOKENS, LENGTHS)
    with pytest.raises(ValueError, match=r"features must be a vector \[batch, 5\] or a grid"):
        model.apply(params, jnp.ones((2, 6, 4)), TOKENS, LENGTHS)
    with pytest.raises(ValueError, match=r"tokens_in must lie in \[0, 7\)"):
        model.apply(params, jnp.ones((2, 6, 5)), TOKENS.at[0, 1].set(7), LENGTHS)
    with pytest.raises(ValueError, match="share the batch size"):
        model.apply(params, jnp.ones((3, 6, 5)), TOKENS, LENGTHS)
