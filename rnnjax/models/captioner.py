"""A decoder conditioned on a vector or a grid of features (one-to-many): image captioning's decoder.

    vector [B, F]  (Show and Tell, Vinyals et al. 2015; attention=None): every decoder layer's initial carry is
        tanh(W v + b) (Vinyals feed the image as the input before the first word; a carry set from it is the form
        Karpathy & Fei-Fei 2015 and most later code use)
    grid [B, S, F] (Show, Attend and Tell, Xu et al. 2015; attention set): the initial carry is tanh(W mean_s a_s
        + b) (Xu's f_init), and each step attends over the S annotation vectors a_s (the `DecoderCell` of
        rnnjax.models.decoder: Luong's input feeding, any of ATTENTIONS)
    then logits_t = W_o o_t + b_o over the vocabulary, o_t the decoder's output (dropout before it in training).

Without attention a grid is mean-pooled into a vector. The feature extractor (a CNN) belongs to the caller; this
module sees arrays only. `init_state(params, features)` and `step` are the decoding protocol of
`rnnjax.models.decoding`, so `greedy_decode(model, params, features, ...)` and `beam_search` caption images.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.layers import dropout
from rnnjax.models.attention import ATTENTIONS
from rnnjax.models.decoder import DecoderCell, bridge_apply, bridge_init, dense_init
from rnnjax.models.seq2seq import DecodeState, check_ids, check_lengths
from rnnjax.rnn import CELL_MODES, make_cell
from rnnjax.time_loop import unroll


@dataclasses.dataclass(frozen=True)
class CaptionDecoder:
    """A token decoder whose state comes from image features (module docstring).

    >>> import jax, jax.numpy as jnp
    >>> model = CaptionDecoder(vocab_size=12, embed_size=8, hidden_size=16, feature_size=6, attention="additive")
    >>> params = model.init(jax.random.key(0))
    >>> logits, weights = model.apply(params, jnp.ones((2, 9, 6)), jnp.ones((2, 4), jnp.int32), jnp.array([4, 3]))
    >>> logits.shape, weights.shape
    ((2, 4, 12), (2, 4, 9))
    """

    vocab_size: int  # caption token ids lie in [0, vocab_size)
    embed_size: int  # the token embedding's size
    hidden_size: int  # every decoder cell's hidden size
    feature_size: int  # F: the features' last axis
    mode: str = "lstm"  # the decoder cell, any of rnnjax.CELL_MODES
    num_layers: int = 1  # decoder layers
    attention: str | None = "additive"  # one of ATTENTIONS over a grid [B, S, F], or None (a vector [B, F])
    attention_size: int | None = None  # the additive attention's hidden size (None: feature_size)
    dropout_rate: float = 0.0  # on embeddings and before the output layer (train only)

    def __post_init__(self):
        for name in ("vocab_size", "embed_size", "hidden_size", "feature_size", "num_layers"):
            _checks.check_positive_int(name, getattr(self, name))
        _checks.check_choice("mode", self.mode, CELL_MODES)
        if self.attention is not None:
            _checks.check_choice("attention", self.attention, ATTENTIONS)
            if self.attention == "dot" and self.feature_size != self.hidden_size:
                raise ValueError(f"dot attention needs feature_size == hidden_size, got {self.feature_size} and "
                                 f"{self.hidden_size}")
        if self.attention_size is not None:
            _checks.check_positive_int("attention_size", self.attention_size)
            if self.attention != "additive":
                raise ValueError(f"attention_size is for additive attention, got attention={self.attention!r}")
        _checks.check_rate("dropout_rate", self.dropout_rate)

    @property
    def decoder(self) -> DecoderCell:
        cells = tuple(make_cell(self.mode, self.hidden_size) for _ in range(self.num_layers))
        return DecoderCell(cells, self.attention, self.feature_size if self.attention else None, self.attention_size)

    def init(self, key: jax.Array) -> dict:
        """`{"embedding": [V, E], "bridge": per layer, per carry leaf {"weight": [H, F], "bias"}, "decoder":
        DecoderParams, "output": {"weight": [V, H], "bias": [V]}}`."""
        keys = jax.random.split(key, 4)
        cell = make_cell(self.mode, self.hidden_size)
        bridge_keys = jax.random.split(keys[1], self.num_layers)
        return {
            "embedding": jax.random.normal(keys[0], (self.vocab_size, self.embed_size)),
            "bridge": tuple(bridge_init(k, cell, self.feature_size) for k in bridge_keys),
            "decoder": self.decoder.init(keys[2], self.embed_size),
            "output": dense_init(keys[3], self.hidden_size, self.vocab_size),
        }

    def _check_features(self, features) -> jax.Array:
        features = _checks.check_floating_array("features", features)
        grid = features.ndim == 3
        if features.ndim not in (2, 3) or features.shape[-1] != self.feature_size:
            raise ValueError(f"features must be a vector [batch, {self.feature_size}] or a grid [batch, locations, "
                             f"{self.feature_size}], got shape {tuple(features.shape)}")
        if self.attention is not None and not grid:
            raise ValueError(f"attention={self.attention!r} attends over a grid [batch, locations, "
                             f"{self.feature_size}], got a vector of shape {tuple(features.shape)}")
        return features

    def init_state(self, params: dict, features: jax.Array) -> DecodeState:
        """The decoder's state before the first token, from `features` `[B, F]` or `[B, S, F]`."""
        features = self._check_features(features)
        vector = features if features.ndim == 2 else jnp.mean(features, axis=1)
        decoder = self.decoder
        layers = tuple(bridge_apply(cell, p, vector) for cell, p in zip(decoder.cells, params["bridge"]))
        carry = decoder.initial_carry((features.shape[0],), vector.dtype)._replace(layers=layers)
        if self.attention is None:
            return DecodeState(carry)
        bound = decoder.bind(params["decoder"], features)
        return DecodeState(carry, bound.memory, bound.memory_mask, bound.projected_memory)

    def _bound(self, params, state: DecodeState):
        return params["decoder"]._replace(memory=state.memory, memory_mask=state.memory_mask,
                                          projected_memory=state.projected_memory)

    def _readout(self, params, outputs, key=None):
        if key is not None:
            outputs = dropout(key, outputs, self.dropout_rate)
        return outputs @ params["output"]["weight"].T + params["output"]["bias"].reshape(
            (1,) * (outputs.ndim - 1) + (-1,))

    def step(self, params: dict, state: DecodeState, tokens: jax.Array):
        """`(state, logits [B, V], attention [B, S] or None)` after reading the previous tokens `[B]`."""
        if not hasattr(tokens, "dtype") or not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 1:
            raise TypeError(f"tokens must be an integer [batch] array, got {getattr(tokens, 'dtype', tokens)}")
        _checks.check_index_range("tokens", tokens, self.vocab_size, what=f"vocab_size {self.vocab_size}")
        decoder = self.decoder
        embedded = jnp.take(params["embedding"], tokens, axis=0)
        carry, ys = decoder.recurrent_step(self._bound(params, state), state.carry, embedded)
        outputs, weights = decoder.split_outputs(ys)
        return state._replace(carry=carry), self._readout(params, outputs), weights

    def apply(self, params: dict, features: jax.Array, tokens_in: jax.Array, lengths: jax.Array, *,
              key: jax.Array | None = None, train: bool = False):
        """Teacher forcing, one `rnnjax.unroll`: `(logits [B, T, V], attention [B, T, S] or None)` for the inputs
        `tokens_in` int `[B, T]` (BOS, then the caption shifted right) with `lengths` `[B]`. `train=True` turns
        dropout on (needs `key`)."""
        check_ids("tokens_in", tokens_in, self.vocab_size, lengths)
        lengths = check_lengths("lengths", lengths, tokens_in.shape[0], tokens_in.shape[1])
        dropping = train and self.dropout_rate > 0
        if dropping and key is None:
            raise ValueError("train=True with dropout needs a PRNG key")
        keys = (None, None) if not dropping else tuple(jax.random.split(key))
        with jax.named_scope("rnnjax.models.CaptionDecoder"):
            state = self.init_state(params, features)
            if jax.tree.leaves(state.carry)[0].shape[0] != tokens_in.shape[0]:
                raise ValueError(f"features and tokens_in must share the batch size, got {features.shape[0]} and "
                                 f"{tokens_in.shape[0]}")
            valid = jnp.arange(tokens_in.shape[1])[None, :] < lengths[:, None]
            embedded = jnp.take(params["embedding"], jnp.where(valid, tokens_in, 0), axis=0)
            if dropping:
                embedded = dropout(keys[0], embedded, self.dropout_rate)
            decoder = self.decoder
            ys, _ = unroll(decoder, self._bound(params, state), embedded, carry=state.carry, lengths=lengths)
            outputs, weights = decoder.split_outputs(ys)
            return self._readout(params, outputs, keys[1]), weights
