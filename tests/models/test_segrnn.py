"""SegmentForecaster (SegRNN): shapes for every cell and switch, the broadcast decoder against M repeated steps,
PyTorch parity with the paper's forward pass, dropout and dependency masks, normalisation, a tiny overfit, and
bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FAST_COMPILE

from rnnjax.models.segrnn import SegmentForecaster
from rnnjax.rnn import CELL_MODES


def _jit(function):
    return jax.jit(function, compiler_options=FAST_COMPILE)


def _small(**overrides):
    fields = dict(num_series=3, lookback=8, horizon=6, segment_length=2, hidden_size=6, dropout_rate=0.5)
    return SegmentForecaster(**{**fields, **overrides})


SWITCHES = [("last", True), ("revin", False), ("none", True)]


@pytest.mark.parametrize("mode, normalization, channel_embedding",
                         [(mode, *SWITCHES[index % 3]) for index, mode in enumerate(CELL_MODES)])
def test_shapes_for_every_cell_and_switch(mode, normalization, channel_embedding, key):
    model = _small(mode=mode, normalization=normalization, channel_embedding=channel_embedding)
    params = model.init(key)
    assert params["position"].shape == (3, 3 if channel_embedding else 6)  # M = 6 / 2 segments
    assert ("channel" in params) == channel_embedding and ("revin" in params) == (normalization == "revin")
    inputs = jax.random.normal(key, (4, 8, 3))
    outputs = _jit(lambda p, k: (model.apply(p, inputs), model.apply(p, inputs, key=k)))(params, jax.random.key(1))
    for output in outputs:
        assert output.shape == (4, 6, 3) and bool(jnp.isfinite(output).all())


@pytest.mark.parametrize("mode", CELL_MODES)
def test_broadcast_decoder_equals_m_repeated_steps(mode, key):
    """The shared recurrent product is the paper's M single steps from a repeated carry, for every cell."""
    model = _small(mode=mode, num_series=2)
    params = model.init(key)
    carry = model.encode(params, jax.random.normal(key, (3, 8, 2)))  # leaves [B, C, 1, d]
    decoded = _jit(lambda p, c: model.decode(p, c))(params, carry)
    cell, segments = model.cell(), model.output_segments
    repeated = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (3, 2, segments, 6)).reshape(-1, 6), carry)
    step_inputs = jnp.broadcast_to(model.decoder_inputs(params), (3, 2, segments, 6)).reshape(-1, 6)
    _, outputs = cell.step(params["cell"], repeated, step_inputs)  # B*C*M rows, one step each
    expected = (outputs @ params["head"].weight.T + params["head"].bias[None]).reshape(3, 2, segments, 2)
    np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["gru", "lstm"])
def test_matches_the_papers_forward_in_pytorch(mode, key):
    """The paper's forward (last-value normalisation, ReLU segment embedding, encoder, repeated carry, one decoder
    step per segment from [pos; channel], linear head), written in PyTorch with our weights."""
    torch = pytest.importorskip("torch")
    model = SegmentForecaster(num_series=3, lookback=12, horizon=8, segment_length=4, hidden_size=6, mode=mode)
    params = model.init(key)
    inputs = np.asarray(jax.random.normal(jax.random.key(2), (2, 12, 3)))
    tensor = lambda value: torch.tensor(np.asarray(value))  # noqa: E731
    embed = torch.nn.Linear(4, 6)
    rnn = (torch.nn.GRU if mode == "gru" else torch.nn.LSTM)(6, 6, batch_first=True)
    head = torch.nn.Linear(6, 4)
    with torch.no_grad():
        embed.weight.copy_(tensor(params["embed"].weight)), embed.bias.copy_(tensor(params["embed"].bias))
        head.weight.copy_(tensor(params["head"].weight)), head.bias.copy_(tensor(params["head"].bias))
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, f"{name}_l0").copy_(tensor(getattr(params["cell"], name)))
        x = torch.tensor(inputs)
        last = x[:, -1:, :]
        segments = (x - last).permute(0, 2, 1).reshape(-1, 3, 4)  # [B*C, N, W]
        _, state = rnn(torch.relu(embed(segments)))
        count = 2  # M
        pos = tensor(params["position"]).unsqueeze(0).repeat(3, 1, 1)  # [C, M, d/2]
        chan = tensor(params["channel"]).unsqueeze(1).repeat(1, count, 1)  # [C, M, d/2]
        step_inputs = torch.cat([pos, chan], dim=-1).view(-1, 1, 6).repeat(2, 1, 1)  # [B*C*M, 1, d]
        state = (state.repeat(1, 1, count).view(1, -1, 6) if mode == "gru"
                 else tuple(part.repeat(1, 1, count).view(1, -1, 6) for part in state))
        outputs, _ = rnn(step_inputs, state)  # [B*C*M, 1, d], rows ordered (b, c, m)
        expected = (head(outputs[:, 0]).view(2, 3, 8).permute(0, 2, 1) + last).numpy()
    actual = _jit(lambda p: model.apply(p, jnp.asarray(inputs)))(params)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_dropout_mask_applies_only_with_a_key(key):
    model = _small()
    params = model.init(key)
    inputs = jax.random.normal(key, (4, 8, 3))
    apply = _jit(lambda p, k: model.apply(p, inputs, key=k))
    plain = _jit(lambda p: model.apply(p, inputs))(params)
    np.testing.assert_array_equal(plain, _jit(lambda p: model.apply(p, inputs))(params))
    first, second = apply(params, jax.random.key(1)), apply(params, jax.random.key(2))
    assert not np.allclose(first, plain) and not np.allclose(first, second)
    np.testing.assert_array_equal(first, apply(params, jax.random.key(1)))
    unmasked = _small(dropout_rate=0.0)
    np.testing.assert_array_equal(_jit(lambda p, k: unmasked.apply(p, inputs, key=k))(params, jax.random.key(1)),
                                  plain)


@pytest.mark.parametrize("normalization", ["last", "revin", "none"])
def test_dependency_mask_is_per_series_and_spans_the_look_back(normalization, key):
    """d forecast[b, :, c] / d input[b', :, c'] is zero unless b = b' and c = c' (channel independence: the
    channel embedding tells series apart without mixing them), and nonzero at every look-back step."""
    model = _small(normalization=normalization)
    params = model.init(key)
    inputs = jax.random.normal(key, (2, 8, 3))
    jacobian = np.asarray(_jit(jax.jacrev(lambda x: model.apply(params, x)))(inputs))  # [B, H, C, B, L, C]
    influence = np.abs(jacobian).sum(axis=(1, 4))  # [B, C, B, C]
    mask = np.einsum("ab,cd->acbd", np.eye(2), np.eye(3)).astype(bool)
    assert np.all(influence[~mask] == 0.0) and np.all(influence[mask] > 0.0)
    per_step = np.abs(jacobian[0, :, 0, 0, :, 0]).sum(axis=0)  # [L]
    assert np.all(per_step > 0.0), per_step


@pytest.mark.parametrize("normalization", ["last", "revin"])
def test_normalisation_makes_forecasts_shift_equivariant(normalization, key):
    model = _small(normalization=normalization)
    params = model.init(key)
    inputs = jax.random.normal(key, (2, 8, 3))
    shift = jnp.asarray([100.0, -5.0, 3.0])[None, None, :]
    np.testing.assert_allclose(model.apply(params, inputs + shift), model.apply(params, inputs) + shift,
                               rtol=1e-4, atol=1e-3)


def test_overfits_noiseless_sines(key):
    lookback, horizon = 24, 8
    phase = np.random.default_rng(0).uniform(0, 2 * np.pi, (32, 1, 2))
    steps = np.arange(lookback + horizon)[None, :, None]
    series = np.sin(2 * np.pi * steps / np.asarray([12.0, 7.0]) + phase).astype(np.float32)  # [32, T, 2]
    inputs, targets = jnp.asarray(series[:, :lookback]), jnp.asarray(series[:, lookback:])
    model = SegmentForecaster(num_series=2, lookback=lookback, horizon=horizon, segment_length=4, hidden_size=16,
                              dropout_rate=0.0)
    optimizer = optax.adam(1e-2)
    params = model.init(key)
    state = optimizer.init(params)

    def loss(params):
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
    final = float(_jit(loss)(params))
    assert final < 0.01 < float(first), (float(first), final)


def test_bad_inputs_are_clear_errors(key):
    model = _small()
    params = model.init(key)
    with pytest.raises(ValueError, match=r"inputs must be \[batch, 8, 3\].*got shape \(1, 7, 3\)"):
        model.apply(params, jnp.ones((1, 7, 3)))
    with pytest.raises(TypeError, match="floating dtype"):
        model.apply(params, jnp.ones((1, 8, 3), jnp.int32))
    with pytest.raises(ValueError, match="segment_length must divide horizon, got segment_length 2 and horizon 5"):
        _small(horizon=5)
    with pytest.raises(ValueError, match="segment_length must divide lookback"):
        _small(lookback=9)
    with pytest.raises(ValueError, match="hidden_size in two halves.*must be even, got 5"):
        _small(hidden_size=5)
    with pytest.raises(ValueError, match="normalization must be one of"):
        _small(normalization="zscore")
    with pytest.raises(ValueError, match="mode must be one of"):
        _small(mode="transformer")
