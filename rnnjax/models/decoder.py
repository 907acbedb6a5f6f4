"""A conditional decoder cell (stacked core cells, optional attention over a memory), and the pieces the decoding
models share: a bridge from a vector to a carry and the output layer.

`DecoderCell` follows the cell contract of `rnnjax.cells`, so teacher-forced training is one `rnnjax.unroll` over
the target and decoding calls its `step` one token at a time. Per step, with x_t the step's input (a target
embedding, possibly with a context vector concatenated):

    without attention:   h^l_t = cell_l(h^l_{t-1}, h^{l-1}_t),  h^0_t = x_t                  y_t = h^L_t
    with attention (Luong, Pham & Manning 2015, "input feeding"):
        h^0_t = [x_t; h~_{t-1}]      (h~_0 = 0)
        c_t, a_t = attend(h^L_t, memory)       h~_t = tanh(W_c [c_t; h^L_t] + b_c)     y_t = [h~_t; a_t]

    with attention_style="bahdanau" (Bahdanau, Cho & Bengio 2015: attend before the step, with the previous state):
        c_t, a_t = attend(h^L_{t-1}, memory)       h^0_t = [x_t; c_t]                       y_t = [h^L_t; c_t; a_t]

so the carry is `DecoderCarry(layers, feed)`: each layer's carry and the attentional vector fed back (None without
attention, and in Bahdanau's style, whose query is already in the top layer's carry), and the output holds the
output vector (`[.., output_size]`: h~_t, or [h^L_t; c_t]) then the attention weights `[.., source]`
(`split_outputs` parts them). The memory (`[batch, source, Hk]`, its bool mask and the additive attention's
projected keys) is per example, not a weight: `bind` puts it into the params the unroll closes over.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.models.attention import ATTENTIONS, attend, attention_init, project_keys

ATTENTION_STYLES = ("luong", "bahdanau")


class DecoderParams(NamedTuple):
    """`layers`: one cell's params per layer (layer 0 reads `[x; feed]`, or `[x; context]` in Bahdanau's style);
    `attention`: the attention's params; `combine`: `{"weight": [H, Hk + H], "bias": [H]}` (W_c, Luong's style
    only, else None); `memory` `[batch, source, Hk]`,
    `memory_mask` bool `[batch, source]`, `projected_memory` (additive only): set by `DecoderCell.bind`."""

    layers: tuple
    attention: Any = None
    combine: Any = None
    memory: Any = None
    memory_mask: Any = None
    projected_memory: Any = None


class DecoderCarry(NamedTuple):
    """`layers`: one carry per layer; `feed`: the previous attentional vector h~ `[batch, H]` (None without
    attention)."""

    layers: tuple
    feed: Any = None


def _uniform(key, shape, fan_in, dtype=jnp.float32):
    bound = 1.0 / float(fan_in) ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def dense_init(key: jax.Array, in_size: int, out_size: int) -> dict:
    """`{"weight": [out, in], "bias": [out]}`, U(±1/sqrt(in)) (PyTorch's `nn.Linear`)."""
    weight_key, bias_key = jax.random.split(key)
    return {"weight": _uniform(weight_key, (out_size, in_size), in_size),
            "bias": _uniform(bias_key, (out_size,), in_size)}


def dense_apply(params: dict, x: jax.Array) -> jax.Array:
    """`x @ weight^T + bias` over the last axis of `x` `[..., in]`."""
    return x @ params["weight"].T + params["bias"].reshape((1,) * (x.ndim - 1) + (-1,))


@dataclasses.dataclass(frozen=True)
class DecoderCell:
    """Stacked core `cells` with optional `attention` ("additive", "dot", "general") over a memory of
    `memory_size` features, in Luong's style (attend after the step, feed h~ back) or Bahdanau's (attend before
    the step with the previous state, the context into the step and the output); see the module docstring. A
    cell itself (init / initial_carry / step)."""

    cells: tuple
    attention: str | None = None
    memory_size: int | None = None
    attention_size: int | None = None
    attention_style: str = "luong"

    def __post_init__(self):
        if not isinstance(self.cells, tuple) or not self.cells:
            raise TypeError(f"cells must be a non-empty tuple of core cells, got {self.cells!r}")
        if self.attention is not None:
            _checks.check_choice("attention", self.attention, ATTENTIONS)
            _checks.check_positive_int("memory_size", self.memory_size)
        _checks.check_choice("attention_style", self.attention_style, ATTENTION_STYLES)

    @property
    def name(self) -> str:
        return "rnnjax.models.DecoderCell"

    @property
    def hidden_size(self) -> int:
        """The top cell's hidden size (and the size of h~ in Luong's style)."""
        return self.cells[-1].hidden_size

    @property
    def output_size(self) -> int:
        """The size of the output vector: h^L or h~, or [h^L; c] (`hidden_size + memory_size`) in Bahdanau's
        style."""
        return self.hidden_size + (self.memory_size if self._bahdanau else 0)

    @property
    def _bahdanau(self) -> bool:
        return self.attention is not None and self.attention_style == "bahdanau"

    @property
    def _feeds_back(self) -> bool:
        return self.attention is not None and not self._bahdanau

    @property
    def feed_size(self) -> int:
        """Features layer 0 reads beyond the step input: h~_{t-1} (Luong) or c_t (Bahdanau)."""
        if self.attention is None:
            return 0
        return self.memory_size if self._bahdanau else self.hidden_size

    def init(self, key: jax.Array, input_size: int, dtype=jnp.float32) -> DecoderParams:
        """Weights for step inputs of `input_size` features; the memory fields stay None until `bind`."""
        keys = jax.random.split(key, len(self.cells) + 2)
        layers, size = [], input_size + self.feed_size
        for cell, layer_key in zip(self.cells, keys):
            layers.append(cell.init(layer_key, size, dtype))
            size = cell.hidden_size
        if self.attention is None:
            return DecoderParams(tuple(layers))
        attention = attention_init(keys[-2], self.attention, self.hidden_size, self.memory_size, self.attention_size,
                                   dtype)
        combine = None if self._bahdanau else dense_init(keys[-1], self.memory_size + self.hidden_size,
                                                        self.hidden_size)
        return DecoderParams(tuple(layers), attention, combine)

    def bind(self, params: DecoderParams, memory=None, memory_mask=None) -> DecoderParams:
        """`params` with the memory `[batch, source, memory_size]` and its bool mask `[batch, source]` set (and
        the additive attention's keys projected once); without attention, `params` unchanged."""
        if self.attention is None:
            if memory is not None:
                raise ValueError("this DecoderCell has no attention, so it takes no memory")
            return params
        memory = _checks.check_floating_array("memory", memory)
        if memory.ndim != 3 or memory.shape[2] != self.memory_size:
            raise ValueError(f"memory must be [batch, source, {self.memory_size}], got shape {tuple(memory.shape)}")
        if memory_mask is None:
            memory_mask = jnp.ones(memory.shape[:2], bool)
        projected = project_keys(self.attention, params.attention, memory, memory_mask)
        return params._replace(memory=memory, memory_mask=memory_mask, projected_memory=projected)

    def input_size(self, params: DecoderParams) -> int:
        if not isinstance(params, DecoderParams):
            raise TypeError(f"DecoderCell expects DecoderParams, got {type(params).__name__}")
        if len(params.layers) != len(self.cells):
            raise ValueError(f"DecoderCell has {len(self.cells)} layers, params {len(params.layers)}")
        return self.cells[0].input_size(params.layers[0]) - self.feed_size

    def initial_carry(self, batch_shape=(), dtype=jnp.float32) -> DecoderCarry:
        """Zero carries (and a zero feed-back h~_0 with attention in Luong's style)."""
        batch_shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        layers = tuple(cell.initial_carry(batch_shape, dtype) for cell in self.cells)
        feed = jnp.zeros(batch_shape + (self.hidden_size,), dtype) if self._feeds_back else None
        return DecoderCarry(layers, feed)

    def check_carry(self, carry, batch_shape) -> DecoderCarry:
        if not isinstance(carry, DecoderCarry) or len(carry.layers) != len(self.cells):
            raise TypeError(f"DecoderCell carry must be a DecoderCarry with {len(self.cells)} layer carries, got "
                            f"{type(carry).__name__}")
        layers = tuple(cell.check_carry(c, batch_shape) for cell, c in zip(self.cells, carry.layers))
        feed = carry.feed
        if not self._feeds_back and feed is not None:
            raise ValueError("carry.feed must be None: only attention in Luong's style feeds a vector back")
        if self._feeds_back:
            feed = _checks.check_floating_array("carry.feed", feed)
            if tuple(feed.shape) != tuple(batch_shape) + (self.hidden_size,):
                raise ValueError(f"carry.feed must have shape {tuple(batch_shape) + (self.hidden_size,)}, got "
                                 f"{tuple(feed.shape)}")
        return DecoderCarry(layers, feed)

    def project_inputs(self, params: DecoderParams, xs: jax.Array) -> jax.Array:
        # Identity: layer 0 reads [x; h~_{t-1}] or [x; c_t], which only exist inside the loop, so its input GEMM
        # runs per step.
        return xs

    def recurrent_step(self, params: DecoderParams, carry: DecoderCarry, x: jax.Array):
        """`(carry, y)` for one step input `x` `[batch, input_size]`; y is `[batch, H]`, or
        `[batch, output_size + source]` with attention (the output vector, then the weights)."""
        if self.attention is not None and params.memory is None:
            raise ValueError("DecoderCell with attention needs its memory: call bind(params, memory, mask) first")
        if self._bahdanau:
            context, weights = attend(self.attention, params.attention, carry_h(carry.layers[-1]), params.memory,
                                      params.memory_mask, params.projected_memory)
            layers, h = self._layers_step(params, carry, jnp.concatenate([x, context.astype(x.dtype)], axis=-1))
            return DecoderCarry(layers), jnp.concatenate([h, context.astype(h.dtype), weights], axis=-1)
        h = jnp.concatenate([x, carry.feed.astype(x.dtype)], axis=-1) if self.attention else x
        layers, h = self._layers_step(params, carry, h)
        if self.attention is None:
            return DecoderCarry(layers), h
        context, weights = attend(self.attention, params.attention, h, params.memory, params.memory_mask,
                                  params.projected_memory)
        attentional = jnp.tanh(dense_apply(params.combine, jnp.concatenate([context, h], axis=-1)))
        return DecoderCarry(layers, attentional), jnp.concatenate([attentional, weights], axis=-1)

    def _layers_step(self, params: DecoderParams, carry: DecoderCarry, h: jax.Array):
        """The stacked cells' step on layer 0's input `h`: (each layer's new carry, the top layer's output)."""
        new_layers = []
        for cell, layer_params, layer_carry in zip(self.cells, params.layers, carry.layers):
            layer_carry, h = cell.recurrent_step(layer_params, layer_carry, cell.project_inputs(layer_params, h))
            new_layers.append(layer_carry)
        return tuple(new_layers), h

    def step(self, params: DecoderParams, carry: DecoderCarry, x: jax.Array):
        """One step on raw input `x` `[batch, input_size]`: `(carry, y)` (the cell contract)."""
        with jax.named_scope(self.name):
            x = _checks.check_floating_array("inputs", x)
            if x.ndim != 2 or x.shape[-1] != self.input_size(params):
                raise ValueError(f"DecoderCell expects inputs [batch, {self.input_size(params)}], got shape "
                                 f"{tuple(x.shape)}")
            carry = self.check_carry(carry, x.shape[:-1])
            return self.recurrent_step(params, carry, x)

    def split_outputs(self, ys: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """`(outputs [..., output_size], attention weights [..., source] or None)` of the outputs of `step` /
        `unroll`."""
        if self.attention is None:
            return ys, None
        return ys[..., :self.output_size], ys[..., self.output_size:]


# -- a bridge from a vector to a cell's initial carry ----------------------------------------------------------------
def bridge_init(key: jax.Array, cell, source_size: int) -> tuple:
    """One `dense_init` per leaf of `cell`'s carry (h, and c for an LSTM): `bridge_apply` maps a vector of
    `source_size` features to an initial carry, `tanh(W s + b)` per leaf."""
    leaves = jax.tree.leaves(jax.eval_shape(lambda: cell.initial_carry(())))
    keys = jax.random.split(key, len(leaves))
    return tuple(dense_init(k, source_size, leaf.shape[-1]) for k, leaf in zip(keys, leaves))


def bridge_apply(cell, params: tuple, source: jax.Array):
    """`cell`'s carry `[batch, ...]` with every leaf `tanh(W source + b)`, `source` `[batch, source_size]`."""
    treedef = jax.tree.structure(jax.eval_shape(lambda: cell.initial_carry(())))
    return jax.tree.unflatten(treedef, [jnp.tanh(dense_apply(p, source)) for p in params])


def carry_h(carry) -> jax.Array:
    """The hidden state of a core cell's carry (`h` of an `LSTMState`, the carry itself otherwise)."""
    return carry.h if hasattr(carry, "h") else carry
