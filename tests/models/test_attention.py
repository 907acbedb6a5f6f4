"""Attention: each score against its formula written out in NumPy, exact zero weight on padding (NaN padding and
fully masked rows included), gradients against finite differences, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnjax.models.attention import ATTENTIONS, attend, attention_init, project_keys

MASK = np.array([[True, True, True, True], [True, True, False, False], [True, False, False, False]])


def inputs(key, query_size=3, key_size=3):
    query_key, keys_key = jax.random.split(key)
    return (jax.random.normal(query_key, (3, query_size)), jax.random.normal(keys_key, (3, 4, key_size)),
            jnp.asarray(MASK))


def reference_scores(kind, params, query, keys):
    query, keys = np.asarray(query, np.float64), np.asarray(keys, np.float64)
    if kind == "dot":
        return np.einsum("bk,bsk->bs", query, keys)
    if kind == "general":
        return np.einsum("bq,qk,bsk->bs", query, np.asarray(params["weight"]), keys)
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    hidden = np.tanh(query[:, None, :] @ p["query"].T + keys @ p["key"].T + p["bias"])
    return hidden @ p["v"]


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_each_kind_matches_its_formula_and_padding_gets_zero_weight(kind, key):
    key_size = 3 if kind == "dot" else 5
    params = attention_init(jax.random.key(1), kind, 3, key_size)
    query, keys, mask = inputs(key, 3, key_size)
    context, weights = attend(kind, params, query, keys, mask)
    scores = reference_scores(kind, params, query, keys)
    expected = np.where(MASK, np.exp(scores - scores.max(1, keepdims=True)), 0.0)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context, np.einsum("bs,bsk->bk", expected, keys), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(weights)[~MASK] == 0.0)
    np.testing.assert_allclose(np.asarray(weights).sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_nan_padding_and_fully_masked_rows_give_no_nan_in_values_or_gradients(kind, key):
    params = attention_init(jax.random.key(1), kind, 3, 3)
    query, keys, _ = inputs(key)
    mask = jnp.asarray(MASK).at[2].set(False)  # row 2 has no valid position
    keys = keys.at[1, 2:].set(jnp.nan).at[2].set(jnp.inf)
    context, weights = attend(kind, params, query, keys, mask)
    assert np.all(np.asarray(context[2]) == 0) and np.all(np.asarray(weights[2]) == 0)
    assert np.all(np.isfinite(context)) and np.all(np.isfinite(weights))

    def loss(params, query, keys):
        context, weights = attend(kind, params, query, keys, mask)
        return jnp.sum(context ** 2) + jnp.sum(weights * jnp.arange(4.0)[None, :])

    grads = jax.grad(loss, argnums=(0, 1, 2))(params, query, keys)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))
    assert np.all(np.asarray(grads[2])[~np.asarray(mask)] == 0.0)  # padded keys get exactly zero gradient


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_gradients_match_finite_differences(kind, key):
    with jax.enable_x64():
        params = jax.tree.map(lambda x: x.astype(jnp.float64), attention_init(jax.random.key(1), kind, 3, 3))
        query, keys, mask = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype != bool else x, inputs(key))

        def f(params, query, keys):
            context, weights = attend(kind, params, query, keys, mask)
            return jnp.sum(jnp.sin(context)) + jnp.sum(weights ** 2)

        check_grads(f, (params, query, keys), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_precomputed_keys_give_the_same_result(key):
    params = attention_init(jax.random.key(1), "additive", 3, 3, attention_size=7)
    query, keys, mask = inputs(key)
    projected = project_keys("additive", params, keys, mask)
    for got, want in zip(attend("additive", params, query, keys, mask, projected),
                         attend("additive", params, query, keys, mask)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert project_keys("dot", {}, keys, mask) is None


def test_bad_input_names_what_was_expected(key):
    query, keys, mask = inputs(key)
    with pytest.raises(ValueError, match="kind must be one of"):
        attention_init(key, "cosine", 3, 3)
    with pytest.raises(ValueError, match="dot attention needs query_size == key_size, got 3 and 5"):
        attention_init(key, "dot", 3, 5)
    params = attention_init(key, "general", 3, 3)
    with pytest.raises(ValueError, match=r"mask must be a bool array of shape \(3, 4\)"):
        attend("general", params, query, keys, mask.astype(jnp.int32))
    with pytest.raises(ValueError, match=r"query \[batch, Hq\] and keys \[batch, source, Hk\]"):
        attend("general", params, query[0], keys, mask)
    with pytest.raises(ValueError, match=r"general attention params\['weight'\] must have shape \(3, 3\)"):
        attend("general", {"weight": jnp.ones((3, 2))}, query, keys, mask)
    with pytest.raises(TypeError, match="keys must have a floating dtype"):
        attend("dot", {}, query, keys.astype(jnp.int32), mask)
