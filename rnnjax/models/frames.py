"""Recurrent models over real-valued frames (audio features, pixels, any `[batch, time, features]` floats with
`lengths`): `FrameClassifier`, many-to-one, and `FrameTagger`, one output per frame (e.g. for `ctc_loss`).

    features [B, T, F] -> dropout (training) -> ys = Stack(cells, lengths) [B, T, D*H]  (ys = 0 at t >= length)
        FrameClassifier: -> p = masked_pool(ys, lengths) [B, D*H] -> dropout -> logits = p W^T + b   [B, C]
        FrameTagger:     -> dropout -> logits = ys W^T + b                                         [B, T, C]

Any core cell by name (`mode`), optionally bidirectional and stacked; `parallel_scan=True` makes a minimal cell
(MinGRU, MinLSTM) run on the associative-scan path at every length (`parallel_min_length=0`, so `unroll`'s
`scan="auto"` takes it), which is how the parallel mode is selected inside layers. The dense layers are PyTorch's
`nn.Linear` init, U(+-1/sqrt(fan_in)).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.initializers import INITIALIZERS
from rnnjax.layers import Bidirectional, Stack, dropout
from rnnjax.losses import accuracy, cross_entropy
from rnnjax.models.classifier import POOLINGS, masked_pool
from rnnjax.rnn import CELL_MODES, MINIMAL_MODES, make_cell


def _check_frames(features, lengths, input_size: int) -> None:
    if not hasattr(features, "dtype") or not jnp.issubdtype(features.dtype, jnp.floating) or features.ndim != 3:
        raise TypeError(f"features must be a floating array [batch, time, features], got "
                        f"{getattr(features, 'dtype', type(features))} {getattr(features, 'shape', '')}")
    if features.shape[2] != input_size:
        raise ValueError(f"features must have {input_size} features per frame (input_size), got shape "
                         f"{tuple(features.shape)}")
    if not hasattr(lengths, "shape") or tuple(lengths.shape) != features.shape[:1]:
        raise ValueError(f"lengths must have shape ({features.shape[0]},) = [batch], got "
                         f"{getattr(lengths, 'shape', type(lengths))}")


def _dense_init(key: jax.Array, outputs: int, inputs: int) -> dict:
    weight_key, bias_key = jax.random.split(key)
    bound = 1.0 / inputs ** 0.5
    return {"weight": jax.random.uniform(weight_key, (outputs, inputs), minval=-bound, maxval=bound),
            "bias": jax.random.uniform(bias_key, (outputs,), minval=-bound, maxval=bound)}


@dataclasses.dataclass(frozen=True)
class _FrameEncoder:
    """The fields and the recurrent stack the two models share (see the module docstring)."""

    input_size: int
    num_classes: int
    hidden_size: int = 128  # units per direction per layer
    num_layers: int = 1  # stacked recurrent levels
    mode: str = "lstm"  # any core cell: "lstm" | "gru" | "rnn_tanh" | "rnn_relu" | "mingru" | "minlstm"
    bidirectional: bool = True  # a forward and a backward layer per level, outputs concatenated
    dropout_rate: float = 0.0  # before the dense layer
    input_dropout_rate: float = 0.0  # on the input features
    layer_dropout_rate: float = 0.0  # between stacked levels
    initializer: str = "pytorch"  # the cells' "pytorch" | "orthogonal"
    forget_bias: float | None = None  # LSTM only: the forget-gate bias at init (None: the cell's default)
    parallel_scan: bool = False  # minimal cells only: the associative scan at every length

    def __post_init__(self):
        for name in ("input_size", "num_classes", "hidden_size", "num_layers"):
            _checks.check_positive_int(name, getattr(self, name))
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        _checks.check_choice("mode", self.mode, CELL_MODES)
        _checks.check_choice("initializer", self.initializer, INITIALIZERS)
        for name in ("dropout_rate", "input_dropout_rate", "layer_dropout_rate"):
            _checks.check_rate(name, getattr(self, name))
        if self.forget_bias is not None:
            if self.mode != "lstm":
                raise ValueError(f"forget_bias applies to mode='lstm' only, got mode={self.mode!r}")
            _checks.check_finite_float("forget_bias", self.forget_bias)
        if self.parallel_scan and self.mode not in MINIMAL_MODES:
            raise ValueError(f"parallel_scan needs a cell linear in its carry ({', '.join(MINIMAL_MODES)}), got "
                             f"mode={self.mode!r}")

    @property
    def cell(self):
        """The cell of every level and direction."""
        cell = make_cell(self.mode, self.hidden_size, self.initializer)
        if self.forget_bias is not None:
            cell = dataclasses.replace(cell, forget_bias=self.forget_bias)
        if self.parallel_scan:
            cell = dataclasses.replace(cell, parallel_min_length=0)
        return cell

    @property
    def stack(self) -> Stack:
        level = Bidirectional(self.cell) if self.bidirectional else self.cell
        return Stack(tuple(level for _ in range(self.num_layers)), dropout_rate=self.layer_dropout_rate)

    @property
    def features(self) -> int:
        """Width of the recurrent output per frame."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def backward_size(self) -> int:
        """The trailing features of the recurrent output that come from the backward direction (0 if none)."""
        return self.hidden_size if self.bidirectional else 0

    def init(self, key: jax.Array) -> dict:
        """`{"rnn": (per-level params), "output": {"weight": [C, D*H], "bias": [C]}}`."""
        rnn_key, output_key = jax.random.split(key)
        return {"rnn": self.stack.init(rnn_key, self.input_size),
                "output": _dense_init(output_key, self.num_classes, self.features)}

    def _encode(self, params: dict, features: jax.Array, lengths: jax.Array, key):
        _check_frames(features, lengths, self.input_size)
        keys = (None, None, None) if key is None else tuple(jax.random.split(key, 3))
        if key is not None:
            features = dropout(keys[0], features, self.input_dropout_rate)
        ys, _ = self.stack.apply(params["rnn"], features, lengths=lengths, key=keys[1])
        return ys, keys[2]


@dataclasses.dataclass(frozen=True)
class FrameClassifier(_FrameEncoder):
    """Many-to-one over frames: masked pooling of the recurrent outputs, then a dense layer to class logits.
    `pooling` "last" reads the forward direction at `t = length - 1` and the backward one at `t = 0` (a
    unidirectional "last" is the final state: sequential MNIST's readout). Hashable (a static `jit` argument).

    >>> import jax, jax.numpy as jnp
    >>> model = FrameClassifier(input_size=3, num_classes=4, hidden_size=5, mode="gru")
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.ones((2, 7, 3)), jnp.array([7, 2])).shape
    (2, 4)
    """

    pooling: str = "mean"  # "last" | "mean" | "max", over valid frames only

    def __post_init__(self):
        super().__post_init__()
        _checks.check_choice("pooling", self.pooling, POOLINGS)

    def apply(self, params: dict, features: jax.Array, lengths: jax.Array, key: jax.Array | None = None):
        """`features` `[batch, time, input_size]` float, `lengths` int `[batch]` -> logits `[batch, classes]`.
        Dropout only when `key` is given (training)."""
        with jax.named_scope("rnnjax.models.FrameClassifier"):
            ys, key = self._encode(params, features, lengths, key)
            pooled = masked_pool(ys, lengths, self.pooling, backward_size=self.backward_size)
            if key is not None:
                pooled = dropout(key, pooled, self.dropout_rate)
            return jnp.matmul(pooled, params["output"]["weight"].T) + params["output"]["bias"][None, :]


@dataclasses.dataclass(frozen=True)
class FrameTagger(_FrameEncoder):
    """One class distribution per frame (logits `[batch, time, classes]`, zero-input frames past each length are
    still computed but meaningless): the acoustic model of `ctc_loss`, with class 0 as the blank by convention, so
its labels lie in [1, num_classes) (`ctc_loss` checks them, and `lengths` in [0, time] is checked here).

    >>> import jax, jax.numpy as jnp
    >>> model = FrameTagger(input_size=3, num_classes=11, hidden_size=5)
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.ones((2, 7, 3)), jnp.array([7, 2])).shape
    (2, 7, 11)
    """

    def apply(self, params: dict, features: jax.Array, lengths: jax.Array, key: jax.Array | None = None):
        """`features` `[batch, time, input_size]` float, `lengths` int `[batch]` -> logits `[batch, time,
        classes]`. Dropout only when `key` is given (training)."""
        with jax.named_scope("rnnjax.models.FrameTagger"):
            ys, key = self._encode(params, features, lengths, key)
            if key is not None:
                ys = dropout(key, ys, self.dropout_rate)
            weight, bias = params["output"]["weight"], params["output"]["bias"]
            return jnp.einsum("btf,cf->btc", ys, weight) + bias[None, None, :]


def frame_classification_loss_fn(model: FrameClassifier):
    """The training engine's loss function for batches with `features`, `lengths`, `labels` and `mask` (real
    rows): cross-entropy averaged over the real rows, with `accuracy` as a metric; no carry."""

    def loss_fn(params, carry, batch, key):
        logits = model.apply(params, batch["features"], batch["lengths"], key)
        loss = cross_entropy(logits, batch["labels"], batch["mask"])
        return loss, (carry, {"accuracy": accuracy(logits, batch["labels"], batch["mask"])})

    return loss_fn
