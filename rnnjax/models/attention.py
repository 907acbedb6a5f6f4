"""Attention of one query over a set of keys, with a padding mask.

    scores e_s = score(q, k_s)        weights a = softmax(e) over the valid s     context c = sum_s a_s k_s

    "additive" (Bahdanau, Cho & Bengio 2015):  e_s = v^T tanh(W_q q + W_k k_s + b)   params query [A, Hq],
                                                key [A, Hk], bias [A], v [A] (A = attention_size, default Hk)
    "dot" (Luong, Pham & Manning 2015):        e_s = q^T k_s                          no params; needs Hq == Hk
    "general" (Luong et al. 2015):             e_s = q^T W k_s                        params weight [Hq, Hk]

Shapes: `query` `[batch, Hq]`, `keys` `[batch, source, Hk]`, `mask` bool `[batch, source]` (True = a real
position). Masked positions get exactly zero weight, whatever their keys hold (NaN included: they are zeroed
first); a row with no valid position gets all-zero weights and a zero context, never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnjax import _checks

ATTENTIONS = ("additive", "dot", "general")


def attention_init(key: jax.Array, kind: str, query_size: int, key_size: int, attention_size: int | None = None,
                   dtype=jnp.float32) -> dict:
    """Parameters of one attention `kind` (see the module docstring): weights U(±1/sqrt(fan_in)), PyTorch's
    `nn.Linear` default; `{}` for "dot" (which needs `query_size == key_size`)."""
    _checks.check_choice("kind", kind, ATTENTIONS)
    query_size = _checks.check_positive_int("query_size", query_size)
    key_size = _checks.check_positive_int("key_size", key_size)
    if kind == "dot":
        if query_size != key_size:
            raise ValueError(f"dot attention needs query_size == key_size, got {query_size} and {key_size} (use "
                             "'general' or 'additive' for different sizes)")
        if attention_size is not None:
            raise ValueError(f"dot attention has no attention_size, got {attention_size}")
        return {}
    if kind == "general":
        if attention_size is not None:
            raise ValueError(f"general attention has no attention_size, got {attention_size}")
        bound = 1.0 / jnp.sqrt(key_size)
        return {"weight": jax.random.uniform(key, (query_size, key_size), dtype, -bound, bound)}
    size = key_size if attention_size is None else _checks.check_positive_int("attention_size", attention_size)
    query_key, key_key, bias_key, v_key = jax.random.split(key, 4)
    query_bound, key_bound, v_bound = (1.0 / jnp.sqrt(n) for n in (query_size, key_size, size))
    return {
        "query": jax.random.uniform(query_key, (size, query_size), dtype, -query_bound, query_bound),
        "key": jax.random.uniform(key_key, (size, key_size), dtype, -key_bound, key_bound),
        "bias": jax.random.uniform(bias_key, (size,), dtype, -key_bound, key_bound),
        "v": jax.random.uniform(v_key, (size,), dtype, -v_bound, v_bound),
    }


def _check_attention_params(kind: str, params, query_size: int, key_size: int) -> None:
    expected = {"dot": {}, "general": {"weight": (query_size, key_size)}}.get(kind)
    if expected is None:
        size = params.get("v", jnp.zeros((0,))).shape[0] if isinstance(params, dict) else 0
        expected = {"query": (size, query_size), "key": (size, key_size), "bias": (size,), "v": (size,)}
    if not isinstance(params, dict) or set(params) != set(expected):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{kind} attention params must be a dict with keys {sorted(expected)}, got {got}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"{kind} attention params[{name!r}] must have shape {shape} for query size "
                             f"{query_size} and key size {key_size}, got {tuple(params[name].shape)}")


def project_keys(kind: str, params: dict, keys: jax.Array, mask: jax.Array) -> jax.Array | None:
    """The query-independent half of the additive score, `W_k k_s + b` `[batch, source, A]`, computed once per
    source sequence so a decoder's steps reuse it (`attend(..., projected_keys=...)`); None for the other kinds.
    Padding (`mask` False) is zeroed first, as `attend` does."""
    if kind != "additive":
        return None
    keys = jnp.where(mask[:, :, None], keys, jnp.zeros((), keys.dtype))
    return jnp.einsum("bsk,ak->bsa", keys, params["key"]) + params["bias"].reshape(1, 1, -1)


def attend(kind: str, params: dict, query: jax.Array, keys: jax.Array, mask: jax.Array,
           projected_keys: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`(context [batch, Hk], weights [batch, source])` of `query` `[batch, Hq]` over `keys` `[batch, source, Hk]`
    where `mask` `[batch, source]` is True (module docstring). `projected_keys` is `project_keys(...)`, optional.

    >>> import jax, jax.numpy as jnp
    >>> params = attention_init(jax.random.key(0), "general", 3, 4)
    >>> context, weights = attend("general", params, jnp.ones((2, 3)), jnp.ones((2, 5, 4)),
    ...                           jnp.array([[True] * 5, [True, True, False, False, False]]))
    >>> context.shape, weights[1].tolist()
    ((2, 4), [0.5, 0.5, 0.0, 0.0, 0.0])
    """
    _checks.check_choice("kind", kind, ATTENTIONS)
    query = _checks.check_floating_array("query", query)
    keys = _checks.check_floating_array("keys", keys)
    if query.ndim != 2 or keys.ndim != 3 or keys.shape[0] != query.shape[0]:
        raise ValueError(f"attend needs query [batch, Hq] and keys [batch, source, Hk] with one batch size, got "
                         f"query {tuple(query.shape)} and keys {tuple(keys.shape)}")
    if not hasattr(mask, "dtype") or mask.dtype != jnp.bool_ or tuple(mask.shape) != tuple(keys.shape[:2]):
        raise ValueError(f"mask must be a bool array of shape {tuple(keys.shape[:2])} ([batch, source]), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
    _check_attention_params(kind, params, query.shape[1], keys.shape[2])
    if kind == "dot" and query.shape[1] != keys.shape[2]:
        raise ValueError(f"dot attention needs query and keys of one size, got {query.shape[1]} and {keys.shape[2]}")
    # Padding may hold anything (NaN too); zeroing it first keeps it out of the scores and of every gradient.
    keys = jnp.where(mask[:, :, None], keys, jnp.zeros((), keys.dtype))
    with jax.named_scope(f"rnnjax.models.attend.{kind}"):
        if kind == "additive":
            if projected_keys is None:
                projected_keys = project_keys(kind, params, keys, mask)
            hidden = jnp.tanh(projected_keys + (query @ params["query"].T)[:, None, :])
            scores = hidden @ params["v"]
        elif kind == "dot":
            scores = jnp.einsum("bk,bsk->bs", query, keys)
        else:
            scores = jnp.einsum("bq,qk,bsk->bs", query, params["weight"], keys)
        scores = jnp.where(mask, scores, -jnp.inf)
        # The max is a constant shift (no gradient); a fully masked row has max -inf, shifted by 0 instead, so its
        # exponentials are exactly 0 and its weights 0 / 1 = 0 rather than NaN.
        shift = jax.lax.stop_gradient(jnp.max(scores, axis=1, keepdims=True))
        shift = jnp.where(jnp.isfinite(shift), shift, jnp.zeros_like(shift))
        exps = jnp.exp(scores - shift)
        total = jnp.sum(exps, axis=1, keepdims=True)
        weights = exps / jnp.where(total > 0, total, jnp.ones_like(total))
        context = jnp.einsum("bs,bsk->bk", weights, keys)
    return context, weights
