"""Weight initializers for the recurrent cells, in PyTorch's layout (`weight_ih` [G*H, D], `weight_hh` [G*H, H]).

- `"pytorch"` (default): every weight and bias drawn from U(-1/sqrt(H), 1/sqrt(H)), as `torch.nn.RNN/LSTM/GRU`
  do (`reset_parameters`), so hyper-parameters tuned in PyTorch transfer unchanged.
- `"orthogonal"`: each gate's input kernel Glorot-uniform (Glorot & Bengio 2010), each gate's recurrent kernel an
  orthogonal [H, H] matrix (Saxe et al. 2014), biases zero. Per-gate blocks as in Flax's `LSTMCell`/`GRUCell`, so
  every gate sees a norm-preserving recurrence rather than one slice of a wide orthogonal matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

INITIALIZERS = ("pytorch", "orthogonal")


# Every initializer returns the four arrays every classic cell has, in this order:
# `(weight_ih [G*H, D], weight_hh [G*H, H], bias_ih [G*H], bias_hh [G*H])`.
Weights = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def pytorch_uniform(key, num_gates: int, input_size: int, hidden_size: int, dtype=jnp.float32) -> Weights:
    """U(-1/sqrt(H), 1/sqrt(H)) for all four arrays, PyTorch's `RNNBase.reset_parameters`."""
    bound = 1.0 / hidden_size**0.5
    shapes = [
        (num_gates * hidden_size, input_size),
        (num_gates * hidden_size, hidden_size),
        (num_gates * hidden_size,),
        (num_gates * hidden_size,),
    ]
    keys = jax.random.split(key, len(shapes))
    return tuple(jax.random.uniform(k, s, dtype, minval=-bound, maxval=bound) for k, s in zip(keys, shapes))


def orthogonal(key, num_gates: int, input_size: int, hidden_size: int, dtype=jnp.float32) -> Weights:
    """Glorot-uniform input kernel and orthogonal recurrent kernel per gate, zero biases (Keras/Flax defaults)."""
    input_key, recurrent_key = jax.random.split(key)
    # Glorot over one gate's [H, D] block: limit sqrt(6 / (D + H)).
    glorot = jax.nn.initializers.glorot_uniform(in_axis=-1, out_axis=-2, batch_axis=0)
    weight_ih = glorot(input_key, (num_gates, hidden_size, input_size), dtype)
    square = jax.nn.initializers.orthogonal()
    weight_hh = jax.vmap(lambda k: square(k, (hidden_size, hidden_size), dtype))(
        jax.random.split(recurrent_key, num_gates)
    )
    zeros = jnp.zeros((num_gates * hidden_size,), dtype)
    return (
        weight_ih.reshape(num_gates * hidden_size, input_size),
        weight_hh.reshape(num_gates * hidden_size, hidden_size),
        zeros,
        zeros,
    )


_BY_NAME = {"pytorch": pytorch_uniform, "orthogonal": orthogonal}


def initialize(initializer: str, key, num_gates: int, input_size: int, hidden_size: int, dtype=jnp.float32) -> Weights:
    """The initializer named `initializer` (one of `INITIALIZERS`; the cells check the name when constructed)."""
    return _BY_NAME[initializer](key, num_gates, input_size, hidden_size, dtype)
