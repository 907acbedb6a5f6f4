"""Forecasters: shapes, switches, fitting a noiseless sine, and teacher forcing (loop == parallel pass)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FAST_COMPILE, assert_trees_close

from rnnjax.models.forecasters import DirectForecaster, Seq2SeqForecaster


def _jit(function):
    """One compiled program instead of eager op-by-op dispatch, with the fast test compile options."""
    return jax.jit(function, compiler_options=FAST_COMPILE)


def _sine_windows(count: int, lookback: int, horizon: int, period: float = 12.0):
    phase = np.random.default_rng(0).uniform(0, 2 * np.pi, (count, 1))
    steps = np.arange(lookback + horizon)[None, :]
    series = np.sin(2 * np.pi * steps / period + phase).astype(np.float32)[..., None]
    return jnp.asarray(series[:, :lookback]), jnp.asarray(series[:, lookback:])


@pytest.mark.parametrize("cls", [DirectForecaster, Seq2SeqForecaster])
@pytest.mark.parametrize("channel_independent", [False, True])
def test_shapes_with_every_switch(cls, channel_independent, key):
    model = cls(num_series=3, lookback=8, horizon=4, hidden_size=5, mode="lstm", num_layers=2, patch_length=2,
                covariate_size=2, revin=True, channel_independent=channel_independent, dropout_rate=0.1)
    params = model.init(key)
    inputs, covariates = jax.random.normal(key, (2, 8, 3)), jnp.zeros((2, 8, 2))
    extra = (jnp.zeros((2, 4, 2)),) if cls is Seq2SeqForecaster else ()
    outputs = _jit(lambda p, k: model.apply(p, inputs, covariates, *extra, key=k))(params, jax.random.key(1))
    assert outputs.shape == (2, 4, 3) and bool(jnp.isfinite(outputs).all())


def test_channel_independence_forecasts_each_series_alone(key):
    model = DirectForecaster(num_series=2, lookback=6, horizon=3, hidden_size=4, channel_independent=True,
                             revin=True, linear_skip=True)
    params = model.init(key)
    inputs = jax.random.normal(key, (3, 6, 2))
    both = _jit(lambda p: model.apply(p, inputs))(params)
    single = DirectForecaster(num_series=1, lookback=6, horizon=3, hidden_size=4, channel_independent=True,
                              revin=True, linear_skip=True)
    one_params = dict(params, revin=params["revin"]._replace(weight=params["revin"].weight[1:],
                                                             bias=params["revin"].bias[1:]))
    alone = _jit(lambda p: single.apply(p, inputs[:, :, 1:]))(one_params)
    np.testing.assert_allclose(alone, both[:, :, 1:], rtol=1e-5, atol=1e-6)


def test_revin_makes_forecasts_shift_equivariant(key):
    model = DirectForecaster(num_series=1, lookback=8, horizon=3, hidden_size=4, revin=True)
    params = model.init(key)
    inputs = jax.random.normal(key, (2, 8, 1))
    np.testing.assert_allclose(model.apply(params, inputs + 100.0), model.apply(params, inputs) + 100.0,
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode", ["gru", "lstm", "mingru", "minlstm", "rnn_tanh"])
def test_teacher_forced_loop_equals_parallel_pass(mode, key):
    model = Seq2SeqForecaster(num_series=2, lookback=6, horizon=5, hidden_size=7, mode=mode, num_layers=2,
                              covariate_size=1, revin=True, patch_length=3)
    params = model.init(key)
    inputs, targets = jax.random.normal(key, (3, 6, 2)), jax.random.normal(jax.random.key(1), (3, 5, 2))
    covariates, future = jnp.ones((3, 6, 1)), jnp.linspace(-0.5, 0.5, 15).reshape(3, 5, 1)

    def outputs_and_gradients(forecast):
        def loss(p):
            outputs = forecast(p, inputs, covariates, future, targets=targets)
            return jnp.sum(outputs**2), outputs
        return _jit(jax.value_and_grad(loss, has_aux=True))(params)

    (_, parallel), parallel_grads = outputs_and_gradients(model.apply)
    (_, loop), loop_grads = outputs_and_gradients(model.autoregressive)
    np.testing.assert_allclose(loop, parallel, rtol=1e-5, atol=1e-6)
    assert_trees_close(loop_grads, parallel_grads, atol=1e-5, rtol=1e-4)
    free = _jit(lambda p: model.apply(p, inputs, covariates, future))(params)  # predictions fed back: differs
    assert not np.allclose(free, parallel)
    np.testing.assert_allclose(free[:, 0], parallel[:, 0], rtol=1e-5, atol=1e-6)  # step 0 sees no target


def test_scheduled_sampling_interpolates_and_needs_a_key(key):
    model = Seq2SeqForecaster(num_series=1, lookback=4, horizon=6, hidden_size=4)
    params = model.init(key)
    inputs, targets = jax.random.normal(key, (8, 4, 1)), jax.random.normal(jax.random.key(1), (8, 6, 1))
    sampled = _jit(lambda p, k: model.apply(p, inputs, targets=targets, scheduled_sampling_rate=0.5, key=k))(
        params, jax.random.key(2))
    assert sampled.shape == (8, 6, 1)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        model.apply(params, inputs, targets=targets, scheduled_sampling_rate=0.5)
    with pytest.raises(ValueError, match=r"scheduled_sampling_rate must be in \[0, 1\)"):
        model.apply(params, inputs, targets=targets, scheduled_sampling_rate=1.5)


@pytest.mark.parametrize("cls", [DirectForecaster, Seq2SeqForecaster])
def test_fits_a_noiseless_sine(cls, key):
    lookback, horizon = 24, 6
    inputs, targets = _sine_windows(64, lookback, horizon)
    model = cls(num_series=1, lookback=lookback, horizon=horizon, hidden_size=16, patch_length=4)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    params = model.init(key)
    state = optimizer.init(params)

    def loss(params):
        if cls is Seq2SeqForecaster:
            return jnp.mean((model.apply(params, inputs, targets=targets) - targets) ** 2)
        return jnp.mean((model.apply(params, inputs) - targets) ** 2)

    @_jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    first = None
    for _ in range(300):
        params, state, value = step(params, state)
        first = value if first is None else first
    predictions = _jit(lambda p: model.apply(p, inputs))(params)  # free-running for seq2seq
    final = float(jnp.mean((predictions - targets) ** 2))
    assert final < 0.01 < float(first), (float(first), final)


def test_bad_inputs_are_clear_errors(key):
    model = DirectForecaster(num_series=2, lookback=8, horizon=3, hidden_size=4)
    params = model.init(key)
    with pytest.raises(ValueError, match=r"inputs must be \[batch, 8, 2\].*got shape \(1, 7, 2\)"):
        model.apply(params, jnp.ones((1, 7, 2)))
    with pytest.raises(TypeError, match="floating dtype"):
        model.apply(params, jnp.ones((1, 8, 2), jnp.int32))
    with pytest.raises(ValueError, match="covariates given but covariate_size is 0"):
        model.apply(params, jnp.ones((1, 8, 2)), jnp.ones((1, 8, 1)))
    with pytest.raises(ValueError, match="patch_length must divide lookback"):
        DirectForecaster(num_series=1, lookback=10, horizon=2, patch_length=3)
    with pytest.raises(ValueError, match="mode must be one of"):
        Seq2SeqForecaster(num_series=1, lookback=4, horizon=2, mode="transformer")
    with_covariates = Seq2SeqForecaster(num_series=1, lookback=4, horizon=2, covariate_size=2)
    with pytest.raises(ValueError, match="pass future_covariates"):
        with_covariates.apply(with_covariates.init(key), jnp.ones((1, 4, 1)), jnp.ones((1, 4, 2)))
