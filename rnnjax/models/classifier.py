"""A many-to-one sequence classifier: embedding -> (bidirectional) stack of any cell -> masked pooling -> dropout ->
dense -> class logits (softmax in the loss).

    tokens [B, T] -> x = E[tokens] [B, T, D] -> dropout (per element, or one mask per sequence: variational)
        -> ys = Stack(cells, lengths) [B, T, F]  (F = H, or 2H bidirectional; ys = 0 at t >= length)
        -> p = pool(ys, lengths) [B, F] -> dropout -> logits = p W^T + b [B, C]

Pooling uses valid steps only (`t < length`), so padding can never change a prediction:
- "last": the forward direction's output at `t = length - 1` and the backward direction's at `t = 0` (where it
  has read the whole sequence) — the final states of a packed PyTorch BiLSTM;
- "mean": `sum_{t < length} ys[t] / length`;
- "max": elementwise `max_{t < length} ys[t]` (Conneau et al. 2017's BiLSTM-max).

Defaults follow Kim (2014) where a choice is needed: embeddings U(-0.25, 0.25), dropout 0.5 before the output
layer. The dense layer is PyTorch's `nn.Linear` init, U(+-1/sqrt(F)). Variational input dropout samples one
mask per sequence and feature and applies it at every step (Gal & Ghahramani 2016).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.layers import Bidirectional, Stack, dropout
from rnnjax.losses import accuracy, cross_entropy
from rnnjax.rnn import CELL_MODES, make_cell

POOLINGS = ("last", "mean", "max")


def masked_pool(ys: jax.Array, lengths: jax.Array, pooling: str, *, backward_size: int | None = None) -> jax.Array:
    """Pools `ys` `[batch, time, features]` over the valid steps `t < lengths[b]` into `[batch, features]`.

    `backward_size` (keyword, required for "last", ignored otherwise): the trailing features that come from a
    backward direction; "last" reads those at `t = 0`, where the backward direction has read the whole sequence,
    and the others at `t = length - 1`. Pass 0 for a unidirectional output and the backward layer's hidden size for
    a concatenated `Bidirectional` one. There is no default on purpose: reading a backward direction at
    `length - 1` (after one step) is a silent wrong answer. The models compute it from their config
    (`SequenceClassifier.backward_size`, `FrameClassifier.backward_size`). A sequence of length 0 pools to zeros.

    >>> import jax.numpy as jnp
    >>> ys = jnp.array([[[1.0], [3.0], [9.0]]])  # the third step is padding
    >>> [masked_pool(ys, jnp.array([2]), p, backward_size=0).tolist() for p in POOLINGS]
    [[[3.0]], [[2.0]], [[3.0]]]
    """
    _checks.check_choice("pooling", pooling, POOLINGS)
    if ys.ndim != 3:
        raise ValueError(f"ys must be [batch, time, features], got shape {tuple(ys.shape)}")
    batch, time, features = ys.shape
    if pooling == "last":
        if backward_size is None:
            raise ValueError("masked_pool(..., 'last') needs backward_size=: 0 for a unidirectional output, the "
                             "backward layer's hidden size for a concatenated bidirectional one (read at t = 0)")
        backward_size = _checks.check_nonnegative_int("backward_size", backward_size)
        if backward_size > features:
            raise ValueError(f"backward_size must be <= the {features} features of ys, got {backward_size}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) = [batch], got {tuple(lengths.shape)}")
    # A length past the time axis would divide the mean by more steps than were summed.
    _checks.check_value_range("lengths", lengths, 0, time, what="the time axis")
    valid = (jnp.arange(time)[None, :] < lengths[:, None])[:, :, None]  # [B, T, 1]
    nonempty = (lengths > 0)[:, None]
    if pooling == "mean":
        total = jnp.sum(jnp.where(valid, ys, jnp.zeros_like(ys)), axis=1)
        return total / jnp.maximum(lengths, 1)[:, None].astype(ys.dtype)
    if pooling == "max":
        pooled = jnp.max(jnp.where(valid, ys, jnp.full_like(ys, -jnp.inf)), axis=1)
        return jnp.where(nonempty, pooled, jnp.zeros_like(pooled))
    last = jnp.clip(lengths - 1, 0, time - 1)
    at_last = jnp.take_along_axis(ys, last[:, None, None], axis=1)[:, 0]  # [B, F]
    pooled = at_last if backward_size == 0 else jnp.concatenate(
        [at_last[:, :features - backward_size], ys[:, 0, features - backward_size:]], axis=-1)
    return jnp.where(nonempty, pooled, jnp.zeros_like(pooled))


def variational_dropout(key: jax.Array, xs: jax.Array, dropout_rate: float) -> jax.Array:
    """Inverted dropout on `xs` `[batch, time, features]` with one mask `[batch, 1, features]` shared by every
    time step (Gal & Ghahramani 2016): a dropped embedding feature stays dropped for the whole sequence."""
    dropout_rate = _checks.check_rate("dropout_rate", dropout_rate)
    if dropout_rate == 0.0:
        return xs
    keep = jax.random.bernoulli(key, 1.0 - dropout_rate, (xs.shape[0], 1, xs.shape[2]))
    return jnp.where(keep, xs / (1.0 - dropout_rate), jnp.zeros_like(xs))


@dataclasses.dataclass(frozen=True)
class SequenceClassifier:
    """See the module docstring. Hashable, so it can be a static argument of `jit`.

    >>> import jax, jax.numpy as jnp
    >>> model = SequenceClassifier(vocab_size=10, num_classes=3, embedding_size=4, hidden_size=5)
    >>> params = model.init(jax.random.key(0))
    >>> model.apply(params, jnp.ones((2, 6), jnp.int32), jnp.array([6, 2])).shape
    (2, 3)
    """

    vocab_size: int
    num_classes: int
    embedding_size: int = 300  # word vector width (Kim 2014; GloVe 300d)
    hidden_size: int = 150  # units per direction per layer
    num_layers: int = 1  # stacked recurrent layers
    mode: str = "lstm"  # any core cell: "lstm" | "gru" | "rnn_tanh" | "rnn_relu" | "mingru" | "minlstm"
    bidirectional: bool = True  # a forward and a backward layer per level, outputs concatenated
    pooling: str = "max"  # "last" | "mean" | "max", over valid steps only
    dropout_rate: float = 0.5  # on the pooled features, before the dense layer (Kim 2014)
    input_dropout_rate: float = 0.0  # on the embeddings
    variational: bool = False  # input dropout with one mask per sequence for all steps
    layer_dropout_rate: float = 0.0  # between stacked layers
    embedding_scale: float = 0.25  # random embeddings U(-scale, scale) (Kim 2014)

    def __post_init__(self):
        for name in ("vocab_size", "num_classes", "embedding_size", "hidden_size", "num_layers"):
            _checks.check_positive_int(name, getattr(self, name))
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        _checks.check_choice("mode", self.mode, CELL_MODES)
        _checks.check_choice("pooling", self.pooling, POOLINGS)
        for name in ("dropout_rate", "input_dropout_rate", "layer_dropout_rate"):
            _checks.check_rate(name, getattr(self, name))
        _checks.check_positive_float("embedding_scale", self.embedding_scale)

    @property
    def stack(self) -> Stack:
        def level():
            cell = make_cell(self.mode, self.hidden_size)
            return Bidirectional(cell) if self.bidirectional else cell

        return Stack(tuple(level() for _ in range(self.num_layers)), dropout_rate=self.layer_dropout_rate)

    @property
    def features(self) -> int:
        """Width F of the pooled representation."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def backward_size(self) -> int:
        """The trailing features of the recurrent output that come from the backward direction (0 if none)."""
        return self.hidden_size if self.bidirectional else 0

    def init(self, key: jax.Array, embeddings=None) -> dict:
        """`{"embedding": [V, D], "rnn": (per-layer params), "output": {"weight": [C, F], "bias": [C]}}`.

        `embeddings`: an optional `[V, D]` matrix (e.g. `word_vectors.load_word_vectors`) used instead of the
        random init. The `<pad>` row (id 0) is zero either way; it is never read through the masks.
        """
        embedding_key, rnn_key, weight_key, bias_key = jax.random.split(key, 4)
        shape = (self.vocab_size, self.embedding_size)
        if embeddings is None:
            embedding = jax.random.uniform(embedding_key, shape, minval=-self.embedding_scale,
                                           maxval=self.embedding_scale)
        else:
            embedding = jnp.asarray(embeddings, jnp.float32)
            if tuple(embedding.shape) != shape:
                raise ValueError(f"embeddings must have shape {shape} = [vocab_size, embedding_size], got "
                                 f"{tuple(embedding.shape)}")
        embedding = embedding.at[0].set(0.0)
        bound = 1.0 / self.features ** 0.5
        output = {
            "weight": jax.random.uniform(weight_key, (self.num_classes, self.features), minval=-bound, maxval=bound),
            "bias": jax.random.uniform(bias_key, (self.num_classes,), minval=-bound, maxval=bound),
        }
        return {"embedding": embedding, "rnn": self.stack.init(rnn_key, self.embedding_size), "output": output}

    def apply(self, params: dict, tokens: jax.Array, lengths: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """`tokens` int `[batch, time]` (every id, padding included, in [0, vocab_size)), `lengths` int `[batch]`
        (each in [0, time]) -> logits `[batch, classes]`. Dropout only when `key` is given (training). Out-of-range
        ids or lengths raise a ValueError naming them when concrete and fail a `checkify` check under `jit`."""
        if not hasattr(tokens, "dtype") or not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 2:
            raise TypeError(f"tokens must be an integer array [batch, time], got "
                            f"{getattr(tokens, 'dtype', type(tokens))} {getattr(tokens, 'shape', '')}")
        if not hasattr(lengths, "shape") or tuple(lengths.shape) != tokens.shape[:1]:
            raise ValueError(f"lengths must have shape ({tokens.shape[0]},) = [batch], got "
                             f"{getattr(lengths, 'shape', type(lengths))}")
        # `take` would wrap a negative id around and fill NaN past the end: a silent wrong answer.
        _checks.check_index_range("tokens", tokens, self.vocab_size, what=f"vocab_size {self.vocab_size}")
        with jax.named_scope("rnnjax.models.SequenceClassifier"):
            xs = jnp.take(params["embedding"], tokens, axis=0)
            keys = (None, None, None) if key is None else tuple(jax.random.split(key, 3))
            if key is not None:
                drop = variational_dropout if self.variational else dropout
                xs = drop(keys[0], xs, self.input_dropout_rate)
            ys, _ = self.stack.apply(params["rnn"], xs, lengths=lengths, key=keys[1])
            pooled = masked_pool(ys, lengths, self.pooling, backward_size=self.backward_size)
            if key is not None:
                pooled = dropout(keys[2], pooled, self.dropout_rate)
            return jnp.matmul(pooled, params["output"]["weight"].T) + params["output"]["bias"][None, :]


def classification_loss_fn(model: SequenceClassifier):
    """The training engine's loss function for `bucketing` batches (`tokens`, `lengths`, `labels`, `mask`):
    cross-entropy averaged over the real rows (`mask`), with `accuracy` as a metric; no carry."""

    def loss_fn(params, carry, batch, key):
        logits = model.apply(params, batch["tokens"], batch["lengths"], key)
        loss = cross_entropy(logits, batch["labels"], batch["mask"])
        return loss, (carry, {"accuracy": accuracy(logits, batch["labels"], batch["mask"])})

    return loss_fn
