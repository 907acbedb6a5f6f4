"""A segment-wise recurrent forecaster with parallel multi-step decoding (SegRNN, Lin et al. 2023,
"SegRNN: Segment Recurrent Neural Network for Long-Term Time Series Forecasting", arXiv:2308.11200).

Reads a look-back `inputs` `[batch, L, C]` and forecasts `[batch, H, C]`, every series on its own with shared
weights (channel independence). With W = `segment_length`, N = L / W look-back segments, M = H / W forecast
segments and d = `hidden_size`:

    x̃ = x - x_L                   (normalization="last": each series' last look-back value, added back at the end;
                                   "revin": `rnnjax.models.revin`; "none": as given)
    segments s_1..s_N  ∈ R^W      (each series cut into N non-overlapping segments)
    e_n = ReLU(W_e s_n + b_e)     ∈ R^d          value embedding, shared by every segment and series
    h_N = final carry of cell over e_1..e_N      any core cell ("gru" in the paper)
    p_{c,m} = [pos_m ; chan_c]    ∈ R^d          pos [M, d/2], chan [C, d/2] ~ N(0, 1), learned
                                                 (channel_embedding=False: pos [M, d] alone)
    (_, o_{c,m}) = cell step from h_N with input p_{c,m}, for every m at once   (parallel multi-step decoding:
                                                 M independent single steps, no prediction is fed back)
    ŷ_{c,m} = W_o dropout(o_{c,m}) + b_o ∈ R^W   the forecast's m-th segment; the M segments concatenate to H steps

The M decoder steps of a series all start from the same carry h_N, so the recurrent product `h_N W_hh^T` is the
same for each: it is computed once per series (carry `[B, C, 1, d]`) and broadcast against the M projected
embeddings (`[1, C, M, G*d]`) inside `cell.recurrent_step`, which is exactly the paper's M repeated steps at 1/M of
the recurrent GEMM's cost (the test suite checks it against the repeated form for every cell).

Parameters: a dict with "embed" and "head" (`DenseParams`), "cell" (the cell's named tuple), "position" and
optionally "channel" (arrays) and "revin" (`RevINParams`).

>>> import jax, jax.numpy as jnp
>>> model = SegmentForecaster(num_series=3, lookback=8, horizon=6, segment_length=2, hidden_size=4)
>>> params = model.init(jax.random.key(0))
>>> model.apply(params, jnp.ones((5, 8, 3))).shape
(5, 6, 3)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.layers import dropout
from rnnjax.models.forecasters import dense, dense_init
from rnnjax.models.revin import revin_denormalize, revin_init, revin_normalize
from rnnjax.rnn import CELL_MODES, make_cell
from rnnjax.time_loop import unroll


@dataclasses.dataclass(frozen=True)
class SegmentForecaster:
    """SegRNN: a recurrent cell over look-back segments, then M parallel decoder steps (see the module docstring).

    Defaults are the paper's ETT settings at L = 96 (GRU, d = 512, dropout 0.5, channel embedding, no RevIN);
    its scripts use W = 24 on hourly and W = 48 on 15-minute data.
    """

    num_series: int  # C: series read and forecast
    lookback: int  # L: look-back steps; a multiple of segment_length
    horizon: int  # H: steps forecast; a multiple of segment_length
    segment_length: int = 24  # W: steps per segment, read by one encoder step and written by one decoder step
    mode: str = "gru"  # any core cell: "gru" | "lstm" | "rnn_tanh" | "rnn_relu" | "mingru" | "minlstm"
    hidden_size: int = 512  # d: segment embedding width and the cell's hidden size
    dropout_rate: float = 0.5  # on the decoder outputs before the head, training only (with a key)
    channel_embedding: bool = True  # decoder inputs [position ; channel] (the paper's channel_id), else position
    normalization: str = "last"  # "last": subtract each series' last value | "revin" | "none"

    NORMALIZATIONS: ClassVar[tuple[str, ...]] = ("last", "revin", "none")

    def __post_init__(self):
        for name in ("num_series", "lookback", "horizon", "segment_length", "hidden_size"):
            _checks.check_positive_int(name, getattr(self, name))
        _checks.check_choice("mode", self.mode, CELL_MODES)
        _checks.check_choice("normalization", self.normalization, self.NORMALIZATIONS)
        _checks.check_rate("dropout_rate", self.dropout_rate)
        for name in ("lookback", "horizon"):
            if getattr(self, name) % self.segment_length:
                raise ValueError(f"segment_length must divide {name}, got segment_length {self.segment_length} and "
                                 f"{name} {getattr(self, name)}")
        if self.channel_embedding and self.hidden_size % 2:
            raise ValueError(f"channel_embedding splits hidden_size in two halves (position, channel): it must be "
                             f"even, got {self.hidden_size}")

    @property
    def input_segments(self) -> int:
        """N: encoder steps."""
        return self.lookback // self.segment_length

    @property
    def output_segments(self) -> int:
        """M: decoder steps, run in parallel."""
        return self.horizon // self.segment_length

    def cell(self):
        return make_cell(self.mode, self.hidden_size)

    def init(self, key: jax.Array) -> dict:
        embed_key, cell_key, position_key, channel_key, head_key = jax.random.split(key, 5)
        width = self.hidden_size // 2 if self.channel_embedding else self.hidden_size
        params = {
            "embed": dense_init(embed_key, self.segment_length, self.hidden_size),
            "cell": self.cell().init(cell_key, self.hidden_size),
            "position": jax.random.normal(position_key, (self.output_segments, width)),  # torch.randn, as the paper
            "head": dense_init(head_key, self.hidden_size, self.segment_length),
        }
        if self.channel_embedding:
            params["channel"] = jax.random.normal(channel_key, (self.num_series, width))
        if self.normalization == "revin":
            params["revin"] = revin_init(self.num_series)
        return params

    def decoder_inputs(self, params: dict) -> jax.Array:
        """`[1, C, M, d]` (`[1, 1, M, d]` without channel embedding): the embedding each decoder step reads."""
        position = params["position"][None, None]  # [1, 1, M, d/2 or d]
        if not self.channel_embedding:
            return position
        count, segments = self.num_series, self.output_segments
        channel = jnp.broadcast_to(params["channel"][None, :, None], (1, count, segments, params["channel"].shape[1]))
        return jnp.concatenate([jnp.broadcast_to(position, channel.shape), channel], axis=-1)

    def encode(self, params: dict, normalized: jax.Array):
        """Normalised look-back `[B, L, C]` -> the cell's final carry, each leaf `[B, C, 1, d]`."""
        batch = normalized.shape[0]
        series = jnp.transpose(normalized, (0, 2, 1))  # [B, C, L]: one row per series
        segments = series.reshape(batch * self.num_series, self.input_segments, self.segment_length)
        embedded = jax.nn.relu(dense(params["embed"], segments))  # [B*C, N, d]
        _, carry = unroll(self.cell(), params["cell"], embedded)
        return jax.tree.map(lambda leaf: leaf.reshape(batch, self.num_series, 1, self.hidden_size), carry)

    def decode(self, params: dict, carry, key=None) -> jax.Array:
        """Final carries `[B, C, 1, d]` -> forecast segments `[B, C, M, W]`: M single cell steps from the same
        carry, the recurrent product shared by broadcasting (module docstring)."""
        cell = self.cell()
        projected = cell.project_inputs(params["cell"], self.decoder_inputs(params))  # [1, C or 1, M, G*d]
        _, outputs = cell.recurrent_step(params["cell"], carry, projected)  # [B, C, M, d]
        if key is not None:
            outputs = dropout(key, outputs, self.dropout_rate)
        return dense(params["head"], outputs)

    def apply(self, params: dict, inputs: jax.Array, *, key=None) -> jax.Array:
        """`inputs` `[B, L, C]` -> forecasts `[B, H, C]`. `key` enables dropout (training)."""
        with jax.named_scope("rnnjax.models.SegmentForecaster"):
            inputs = _checks.check_floating_array("inputs", inputs)
            if inputs.ndim != 3 or tuple(inputs.shape[1:]) != (self.lookback, self.num_series):
                raise ValueError(f"inputs must be [batch, {self.lookback}, {self.num_series}] for this forecaster "
                                 f"(lookback {self.lookback}, {self.num_series} series), got shape "
                                 f"{tuple(inputs.shape)}")
            stats = None
            if self.normalization == "last":
                last = inputs[:, -1:, :]  # [B, 1, C]
                normalized = inputs - last
            elif self.normalization == "revin":
                normalized, stats = revin_normalize(params["revin"], inputs)
            else:
                normalized = inputs
            segments = self.decode(params, self.encode(params, normalized), key)  # [B, C, M, W]
            ys = jnp.transpose(segments.reshape(inputs.shape[0], self.num_series, self.horizon), (0, 2, 1))
            if self.normalization == "last":
                return ys + last
            if self.normalization == "revin":
                return revin_denormalize(params["revin"], stats, ys)
            return ys
