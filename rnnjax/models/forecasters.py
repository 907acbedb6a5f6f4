"""Recurrent multi-horizon forecasters: direct (many-to-one) and sequence-to-sequence (many-to-many).

Both read a look-back `inputs` `[batch, L, C]` (C series, already z-normalised by the dataset scaler) and optional
calendar `covariates` `[batch, L, K]`, and forecast `[batch, H, C]`. Shared switches, applied in this order:

1. `revin`: reversible instance normalisation per window and series (`rnnjax.models.revin`, Kim et al. 2022),
   undone on the output; its statistics come from the look-back only.
2. `channel_independent`: each of the C series becomes its own univariate sequence (`[B, L, C] -> [B*C, L, 1]`)
   with shared weights, as DLinear and PatchTST do; the covariates are repeated for each series.
3. `patch_length` P: the encoder reads P consecutive steps (all features) per recurrent step,
   `[N, L, F] -> [N, L/P, P*F]` (the segment-wise iteration of SegRNN, Lin et al. 2023): the time loop is P times
   shorter, and the cell's input projection is the patch embedding.

`DirectForecaster` (one shot for all H steps):

    h = last output of Stack(cells)(patches)           ŷ = reshape(W_head h + b_head, [H, C'])
    with `linear_skip`: ŷ += W_lin x̂ + b_lin            (W_lin [H, L], shared by series: a DLinear-style residual
                                                        path, so the RNN learns what a linear map of the
                                                        look-back misses)

`Seq2SeqForecaster` (an autoregressive decoder, Sutskever et al. 2014; Cho et al. 2014):

    carry = final carries of the encoder Stack over the patches
    step t: input_t = [ŷ_{t-1} or y_{t-1}, covariates of step t],  ŷ_{t-1} at t = 0 is the last look-back value
            (carry, o_t) = decoder Stack step;  ŷ_t = W_head o_t + b_head

  Training feeds the true previous value (teacher forcing). With `scheduled_sampling_rate` r > 0 each step feeds the
  model's own previous prediction with probability r instead (Bengio et al. 2015; the fed-back prediction is
  `stop_gradient`ed, treated as an input as in that paper). Inference (`targets=None`) always feeds predictions
  back. Pure teacher forcing needs no loop: all decoder inputs are known, so it runs as one parallel `Stack.apply`
  over the shifted targets (the input projection hoisted into one GEMM) and equals the step-by-step loop.

Parameters are plain dicts of named tuples (`DenseParams`, `RevINParams`, the Stack's tuples).

>>> import jax, jax.numpy as jnp
>>> model = DirectForecaster(num_series=2, lookback=8, horizon=3, hidden_size=5, patch_length=2, revin=True)
>>> params = model.init(jax.random.key(0))
>>> model.apply(params, jnp.ones((4, 8, 2))).shape
(4, 3, 2)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.layers import Stack
from rnnjax.rnn import CELL_MODES, make_cell
from rnnjax.models.revin import RevINStats, revin_denormalize, revin_init, revin_normalize


class DenseParams(NamedTuple):
    """A dense layer in PyTorch's layout: `weight` [out, in], `bias` [out]."""

    weight: jax.Array
    bias: jax.Array


def dense_init(key: jax.Array, input_size: int, output_size: int, dtype=jnp.float32) -> DenseParams:
    """U(±1/sqrt(in)) for weight and bias (PyTorch's `nn.Linear` default)."""
    bound = 1.0 / input_size**0.5
    weight_key, bias_key = jax.random.split(key)
    return DenseParams(jax.random.uniform(weight_key, (output_size, input_size), dtype, -bound, bound),
                       jax.random.uniform(bias_key, (output_size,), dtype, -bound, bound))


def dense(params: DenseParams, x: jax.Array) -> jax.Array:
    """`x @ weight^T + bias` over the last axis of `x` `[..., in]`."""
    return x @ params.weight.T + params.bias.reshape((1,) * (x.ndim - 1) + params.bias.shape)


@dataclasses.dataclass(frozen=True)
class _Forecaster:
    """Fields and pre/post-processing shared by both forecasters (see the module docstring)."""

    num_series: int  # C: series read and forecast
    lookback: int  # L: look-back steps
    horizon: int  # H: steps forecast
    mode: str = "gru"  # any core cell: "lstm" | "gru" | "rnn_tanh" | "rnn_relu" | "mingru" | "minlstm"
    hidden_size: int = 64  # units per recurrent layer
    num_layers: int = 1  # stacked recurrent layers
    dropout_rate: float = 0.0  # between recurrent layers, training only
    patch_length: int = 1  # look-back steps read per encoder step; must divide lookback
    covariate_size: int = 0  # K: calendar features per step (0: none)
    revin: bool = False  # reversible instance normalisation
    channel_independent: bool = False  # one shared univariate model per series

    def __post_init__(self):
        for name in ("num_series", "lookback", "horizon", "hidden_size", "num_layers", "patch_length"):
            _checks.check_positive_int(name, getattr(self, name))
        _checks.check_nonnegative_int("covariate_size", self.covariate_size)
        _checks.check_choice("mode", self.mode, CELL_MODES)
        _checks.check_rate("dropout_rate", self.dropout_rate)
        if self.lookback % self.patch_length:
            raise ValueError(f"patch_length must divide lookback, got patch_length {self.patch_length} and "
                             f"lookback {self.lookback}")

    @property
    def series_per_sequence(self) -> int:
        """C': the series each recurrent sequence carries (1 when channel independent)."""
        return 1 if self.channel_independent else self.num_series

    @property
    def encoder_input_size(self) -> int:
        return self.patch_length * (self.series_per_sequence + self.covariate_size)

    def stack(self) -> Stack:
        return Stack(tuple(make_cell(self.mode, self.hidden_size) for _ in range(self.num_layers)),
                     dropout_rate=self.dropout_rate)

    def _init_common(self, key: jax.Array) -> tuple[dict, jax.Array]:
        encoder_key, head_key = jax.random.split(key)
        params = {"encoder": self.stack().init(encoder_key, self.encoder_input_size)}
        if self.revin:
            params["revin"] = revin_init(self.num_series)
        return params, head_key

    def _check(self, name: str, value, time: int, features: int, batch: int | None = None) -> jax.Array:
        value = _checks.check_floating_array(name, value)
        expected = (batch if batch is not None else value.shape[0] if value.ndim else None, time, features)
        if value.ndim != 3 or tuple(value.shape) != expected:
            raise ValueError(f"{name} must be [batch, {time}, {features}] for this forecaster (lookback "
                             f"{self.lookback}, horizon {self.horizon}, {self.num_series} series, "
                             f"{self.covariate_size} covariates), got shape {tuple(value.shape)}")
        return value

    def _check_covariates(self, covariates, time: int, batch: int, name: str):
        if self.covariate_size == 0:
            if covariates is not None:
                raise ValueError(f"{name} given but covariate_size is 0")
            return None
        if covariates is None:
            raise ValueError(f"covariate_size is {self.covariate_size}: pass {name} [batch, {time}, "
                             f"{self.covariate_size}]")
        return self._check(name, covariates, time, self.covariate_size, batch)

    def _to_sequences(self, xs: jax.Array, covariates) -> tuple[jax.Array, jax.Array | None]:
        """`[B, T, C]` (+ `[B, T, K]`) -> per-sequence series `[N, T, C']` and covariates `[N, T, K]`."""
        if self.channel_independent:
            batch, time, channels = xs.shape
            xs = jnp.transpose(xs, (0, 2, 1)).reshape(batch * channels, time, 1)  # row b * C + c
            if covariates is not None:
                covariates = jnp.repeat(covariates, channels, axis=0)
        return xs, covariates

    def _from_sequences(self, ys: jax.Array, batch: int) -> jax.Array:
        """`[N, H, C']` -> `[B, H, C]`, undoing `_to_sequences`."""
        if self.channel_independent:
            return jnp.transpose(ys.reshape(batch, self.num_series, -1), (0, 2, 1))
        return ys

    def _normalize(self, params, inputs) -> tuple[jax.Array, RevINStats | None]:
        if not self.revin:
            return inputs, None
        return revin_normalize(params["revin"], inputs)

    def _denormalize(self, params, stats, ys) -> jax.Array:
        return ys if stats is None else revin_denormalize(params["revin"], stats, ys)

    def _encode(self, params, series: jax.Array, covariates, key) -> tuple[jax.Array, Any]:
        """Encoder over the patched look-back: `(outputs [N, L/P, hidden], final carries)`."""
        features = series if covariates is None else jnp.concatenate([series, covariates], axis=-1)
        count, time, width = features.shape
        patches = features.reshape(count, time // self.patch_length, self.patch_length * width)
        return self.stack().apply(params["encoder"], patches, key=key)


@dataclasses.dataclass(frozen=True)
class DirectForecaster(_Forecaster):
    """Encoder stack -> last output -> dense head predicting all H steps at once (see the module docstring).

    Covariates enter with the look-back only; the future steps' calendar is implied by the look-back's.
    """

    linear_skip: bool = False  # add a linear map of the (normalised) look-back: a DLinear-style residual path

    def init(self, key: jax.Array) -> dict:
        params, key = self._init_common(key)
        head_key, _ = jax.random.split(key)
        params["head"] = dense_init(head_key, self.hidden_size, self.horizon * self.series_per_sequence)
        if self.linear_skip:
            # Zeros: training starts from the pure RNN and adds only what a linear map of the look-back explains.
            params["linear"] = DenseParams(jnp.zeros((self.horizon, self.lookback)), jnp.zeros((self.horizon,)))
        return params

    def apply(self, params: dict, inputs: jax.Array, covariates=None, *, key=None) -> jax.Array:
        """`inputs` `[B, L, C]`, `covariates` `[B, L, K]` or None -> forecasts `[B, H, C]`. `key` enables dropout."""
        with jax.named_scope("rnnjax.models.DirectForecaster"):
            inputs = self._check("inputs", inputs, self.lookback, self.num_series)
            covariates = self._check_covariates(covariates, self.lookback, inputs.shape[0], "covariates")
            normalized, stats = self._normalize(params, inputs)
            series, covariates = self._to_sequences(normalized, covariates)
            outputs, _ = self._encode(params, series, covariates, key)
            ys = dense(params["head"], outputs[:, -1]).reshape(series.shape[0], self.horizon, -1)
            if self.linear_skip:
                linear = params["linear"]
                ys = ys + jnp.einsum("nlc,hl->nhc", series, linear.weight) + linear.bias[None, :, None]
            return self._denormalize(params, stats, self._from_sequences(ys, inputs.shape[0]))


@dataclasses.dataclass(frozen=True)
class Seq2SeqForecaster(_Forecaster):
    """Encoder stack -> autoregressive decoder stack of the same cells (see the module docstring)."""

    @property
    def decoder_input_size(self) -> int:
        return self.series_per_sequence + self.covariate_size

    def init(self, key: jax.Array) -> dict:
        params, key = self._init_common(key)
        decoder_key, head_key = jax.random.split(key)
        params["decoder"] = self.stack().init(decoder_key, self.decoder_input_size)
        params["head"] = dense_init(head_key, self.hidden_size, self.series_per_sequence)
        return params

    def _prepare(self, params, inputs, covariates, future_covariates, targets, key):
        inputs = self._check("inputs", inputs, self.lookback, self.num_series)
        batch = inputs.shape[0]
        covariates = self._check_covariates(covariates, self.lookback, batch, "covariates")
        future_covariates = self._check_covariates(future_covariates, self.horizon, batch, "future_covariates")
        normalized, stats = self._normalize(params, inputs)
        series, covariates = self._to_sequences(normalized, covariates)
        encoder_key, decoder_key = (None, None) if key is None else jax.random.split(key)
        _, carry = self._encode(params, series, covariates, encoder_key)
        if self.channel_independent and future_covariates is not None:
            future_covariates = jnp.repeat(future_covariates, self.num_series, axis=0)
        if targets is not None:
            targets = self._check("targets", targets, self.horizon, self.num_series, batch)
            if stats is not None:  # the decoder works in RevIN's space: map the true values there too
                revin = params["revin"]
                targets = ((targets - stats.mean) / stats.std) * revin.weight[None, None, :] + revin.bias[None, None, :]
            targets, _ = self._to_sequences(targets, None)
        return batch, stats, series[:, -1], carry, future_covariates, targets, decoder_key

    def apply(self, params: dict, inputs: jax.Array, covariates=None, future_covariates=None, *, targets=None,
              scheduled_sampling_rate: float = 0.0, key=None) -> jax.Array:
        """Forecasts `[B, H, C]` from `inputs` `[B, L, C]` (+ `covariates` `[B, L, K]`, `future_covariates`
        `[B, H, K]`). With `targets` `[B, H, C]`: teacher forcing (parallel) or, with `scheduled_sampling_rate` > 0,
        scheduled sampling (needs `key`); without: autoregressive inference."""
        rate = _checks.check_rate("scheduled_sampling_rate", scheduled_sampling_rate)
        if targets is None or rate > 0.0:
            return self.autoregressive(params, inputs, covariates, future_covariates, targets=targets,
                                       scheduled_sampling_rate=rate, key=key)
        with jax.named_scope("rnnjax.models.Seq2SeqForecaster"):
            batch, stats, last, carry, future, targets, decoder_key = self._prepare(
                params, inputs, covariates, future_covariates, targets, key)
            previous = jnp.concatenate([last[:, None], targets[:, :-1]], axis=1)  # y_{t-1} for t = 0..H-1
            decoder_inputs = previous if future is None else jnp.concatenate([previous, future], axis=-1)
            outputs, _ = self.stack().apply(params["decoder"], decoder_inputs, carry=carry, key=decoder_key)
            ys = dense(params["head"], outputs)
            return self._denormalize(params, stats, self._from_sequences(ys, batch))

    def autoregressive(self, params: dict, inputs: jax.Array, covariates=None, future_covariates=None, *,
                       targets=None, scheduled_sampling_rate: float = 0.0, key=None) -> jax.Array:
        """The step-by-step decoder loop (`lax.scan` over H): feeds predictions back when `targets` is None,
        the truth with probability `1 - scheduled_sampling_rate` otherwise."""
        rate = _checks.check_rate("scheduled_sampling_rate", scheduled_sampling_rate)
        if targets is not None and rate > 0.0 and key is None:
            raise ValueError("scheduled sampling (scheduled_sampling_rate > 0) needs a PRNG key")
        with jax.named_scope("rnnjax.models.Seq2SeqForecaster.autoregressive"):
            batch, stats, last, carry, future, targets, decoder_key = self._prepare(
                params, inputs, covariates, future_covariates, targets, key)
            count, width = last.shape
            if targets is None:
                truth = jnp.zeros((self.horizon, count, width), last.dtype)
                use_truth = jnp.zeros((self.horizon, count), bool)
            else:
                truth = jnp.swapaxes(targets, 0, 1)
                if rate > 0.0:
                    sample_key = jax.random.fold_in(decoder_key, self.horizon)  # independent of dropout keys
                    use_truth = jax.random.bernoulli(sample_key, 1.0 - rate, (self.horizon, count))
                else:
                    use_truth = jnp.ones((self.horizon, count), bool)
            future = (jnp.zeros((self.horizon, count, 0), last.dtype) if future is None
                      else jnp.swapaxes(future, 0, 1))
            decoder = self.stack()

            def step(state, step_inputs):
                carry, previous = state
                true_value, covariate, feed_truth, index = step_inputs
                x = jnp.concatenate([previous, covariate], axis=-1)[:, None]  # one step: [N, 1, C' + K]
                step_key = None if decoder_key is None else jax.random.fold_in(decoder_key, index)
                outputs, carry = decoder.apply(params["decoder"], x, carry=carry, key=step_key)
                y = dense(params["head"], outputs[:, 0])
                fed = jnp.where(feed_truth[:, None], true_value, jax.lax.stop_gradient(y))
                return (carry, fed), y

            steps = (truth, future, use_truth, jnp.arange(self.horizon))
            _, ys = jax.lax.scan(step, (carry, last), steps)
            ys = jnp.swapaxes(ys, 0, 1)
            return self._denormalize(params, stats, self._from_sequences(ys, batch))
