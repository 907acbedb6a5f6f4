"""The Flax NNX modules equal the functional API (outputs and gradients), hold PyTorch-named `nnx.Param`s, and
train with `nnx.Optimizer`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnnjax
from helpers import assert_trees_close
from rnnjax import nnx as rnn_nnx

MODULES = {"rnn_tanh": rnn_nnx.SimpleRNN, "lstm": rnn_nnx.LSTM, "gru": rnn_nnx.GRU, "mingru": rnn_nnx.MinGRU,
           "minlstm": rnn_nnx.MinLSTM}


@pytest.mark.parametrize("name", MODULES)
def test_cell_module_equals_unroll(name):
    module = MODULES[name](input_size=3, hidden_size=4, rngs=nnx.Rngs(0))
    cell = rnnjax.make_cell(name, 4)
    params = module.params
    assert jax.tree.structure(params) == jax.tree.structure(cell.init(jax.random.key(0), 3))
    assert set(nnx.state(module, nnx.Param)) == set(params._fields)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
    lengths = jnp.array([5, 3])
    assert_trees_close(module(xs, lengths=lengths), rnnjax.unroll(cell, params, xs, lengths=lengths))

    def loss(ys):
        return jnp.sum(jnp.sin(ys))

    grads = nnx.grad(lambda m: loss(m(xs, lengths=lengths)[0]))(module)
    expected = jax.grad(lambda p: loss(rnnjax.unroll(cell, p, xs, lengths=lengths)[0]))(params)
    for field in params._fields:
        np.testing.assert_allclose(grads[field][...], getattr(expected, field), atol=1e-6, rtol=1e-6)


def test_rnn_module_has_pytorch_names_and_equals_rnn_apply():
    module = rnn_nnx.RNN("lstm", 3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    spec = rnnjax.RNN("lstm", 3, 4, num_layers=2, bidirectional=True)
    params = module.params
    assert jax.tree.structure(params) == jax.tree.structure(spec.init(jax.random.key(0)))
    assert set(module.state_dict()) == set(rnnjax.to_torch_state_dict(params))
    assert "weight_hh_l1_reverse" in module.state_dict()
    xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
    assert_trees_close(module(xs, lengths=jnp.array([6, 2])), spec.apply(params, xs, lengths=jnp.array([6, 2])))


def test_a_flax_model_with_an_rnnjax_lstm_trains_with_nnx_optimizer():
    class Regressor(nnx.Module):
        def __init__(self, rngs):
            self.lstm = rn_lstm = rnn_nnx.LSTM(1, 8, rngs=rngs)
            self.head = nnx.Linear(rn_lstm.cell.hidden_size, 1, rngs=rngs)

        def __call__(self, xs):
            _, carry = self.lstm(xs)
            return self.head(carry.h)[:, 0]

    model = Regressor(nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(2), (16, 7, 1))
    targets = jnp.sum(xs[:, :, 0], axis=1)  # the running sum: needs the recurrence
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs) - targets) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    first = float(train_step(model, optimizer))
    for _ in range(60):
        last = float(train_step(model, optimizer))
    assert last < 0.2 * first
