"""A recurrent language model: embedding -> a stack of any cell -> output projection, with Zaremba et al. (2014)'s
dropout placement and initialisation, its loss, and a jitted sampling loop.

    tokens [batch, time] -> embedding [batch, time, E] -> dropout -> Stack of L cells (dropout between layers)
        -> dropout -> logits = h W_out^T + b_out [batch, time, vocab]

Dropout is applied only to non-recurrent connections (Zaremba et al. 2014, Fig. 2) and only when a `key` is given.
With `init_scale`, every parameter (embedding, recurrent weights, softmax) is drawn from U(-init_scale,
init_scale), as in Zaremba's code; `init_scale=None` keeps each cell's own initializer and draws the embedding
and output layer U(-0.1, 0.1). `tie_weights` shares the embedding with the output projection (Press & Wolf 2017;
Inan et al. 2017), which needs `embedding_size == hidden_size`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax.interop import from_torch_state_dict, to_torch_state_dict
from rnnjax.layers import Stack, dropout
from rnnjax.losses import cross_entropy
from rnnjax.rnn import CELL_MODES, MODES, make_cell


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """Embedding -> `num_layers` recurrent layers -> softmax over `vocab_size` tokens (see the module docstring).

    >>> import jax, jax.numpy as jnp
    >>> model = LanguageModel(vocab_size=11, embedding_size=8, hidden_size=8, num_layers=2, tie_weights=True)
    >>> params = model.init(jax.random.key(0))
    >>> logits, carry = model.apply(params, jnp.zeros((3, 5), jnp.int32), model.initial_carry(3))
    >>> logits.shape
    (3, 5, 11)
    """

    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_layers: int = 2
    mode: str = "lstm"
    dropout_rate: float = 0.0
    tie_weights: bool = False
    init_scale: float | None = 0.1

    def __post_init__(self):
        for name in ("vocab_size", "embedding_size", "hidden_size", "num_layers"):
            _checks.check_positive_int(name, getattr(self, name))
        _checks.check_choice("mode", self.mode, CELL_MODES)
        _checks.check_rate("dropout_rate", self.dropout_rate)
        if self.tie_weights and self.embedding_size != self.hidden_size:
            raise ValueError(
                f"tie_weights needs embedding_size == hidden_size, got {self.embedding_size} and {self.hidden_size}"
            )
        if self.init_scale is not None:
            _checks.check_positive_float("init_scale", self.init_scale)

    @property
    def stack(self) -> Stack:
        cells = tuple(make_cell(self.mode, self.hidden_size) for _ in range(self.num_layers))
        return Stack(cells, dropout_rate=self.dropout_rate)

    def init(self, key: jax.Array) -> dict:
        """`{"embedding": [V, E], "rnn": (layer params, ...), "output": {"weight": [V, H] (absent if tied),
        "bias": [V]}}`."""
        embedding_key, rnn_key, output_key = jax.random.split(key, 3)
        scale = 0.1 if self.init_scale is None else self.init_scale
        if self.init_scale is None:
            rnn = self.stack.init(rnn_key, self.embedding_size)
        else:  # Zaremba: every recurrent weight and bias U(-init_scale, init_scale), same tree as the cells' init
            shapes = jax.eval_shape(lambda k: self.stack.init(k, self.embedding_size), rnn_key)
            leaves, treedef = jax.tree.flatten(shapes)
            keys = jax.random.split(rnn_key, len(leaves))
            rnn = jax.tree.unflatten(treedef, [
                jax.random.uniform(k, leaf.shape, leaf.dtype, -scale, scale) for k, leaf in zip(keys, leaves)
            ])
        weight_key, bias_key = jax.random.split(output_key)
        output = {"bias": jax.random.uniform(bias_key, (self.vocab_size,), minval=-scale, maxval=scale)}
        if not self.tie_weights:
            output["weight"] = jax.random.uniform(weight_key, (self.vocab_size, self.hidden_size), minval=-scale,
                                                  maxval=scale)
        embedding = jax.random.uniform(embedding_key, (self.vocab_size, self.embedding_size), minval=-scale,
                                       maxval=scale)
        return {"embedding": embedding, "rnn": rnn, "output": output}

    def from_torch_state_dict(self, state_dict, embedding: str = "embedding.", rnn: str = "rnn.",
                              output: str = "decoder.") -> dict:
        """This model's params from the state dict of a PyTorch word LM `nn.Embedding -> nn.LSTM/GRU/RNN
        (batch_first) -> nn.Linear`, the three submodules named by their key prefixes (`embedding.weight`
        [V, E]; `rnn.weight_ih_l0`, ...; `decoder.weight` [V, H] and `decoder.bias` [V]; with `tie_weights` the
        decoder's weight is the embedding's and only `decoder.bias` is read). Same weights, same logits.

        PyTorch has no minimal cells, so `mode` must be one of `rnnjax.MODES`; shapes are checked against this
        model's sizes and a mismatch names the key.
        """
        _checks.check_choice("mode (PyTorch has no minimal cells)", self.mode, MODES)
        arrays = {key: np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
                  for key, value in state_dict.items()}
        expected = {f"{embedding}weight": (self.vocab_size, self.embedding_size), f"{output}bias": (self.vocab_size,)}
        if not self.tie_weights:
            expected[f"{output}weight"] = (self.vocab_size, self.hidden_size)
        for key, shape in expected.items():
            if key not in arrays:
                raise ValueError(f"state_dict has no {key!r} (expected shape {shape}); keys: {sorted(arrays)}")
            if arrays[key].shape != shape:
                raise ValueError(f"state_dict[{key!r}] must have shape {shape} for this model, got "
                                 f"{arrays[key].shape}")
        layers = from_torch_state_dict(arrays, self.mode, self.num_layers, prefix=rnn)
        if layers[0].weight_ih.shape[1] != self.embedding_size or layers[0].weight_hh.shape[1] != self.hidden_size:
            raise ValueError(f"the {rnn!r} module has input size {layers[0].weight_ih.shape[1]} and hidden size "
                             f"{layers[0].weight_hh.shape[1]}, this model {self.embedding_size} and {self.hidden_size}")
        params = {"embedding": jnp.asarray(arrays[f"{embedding}weight"]), "rnn": layers,
                  "output": {"bias": jnp.asarray(arrays[f"{output}bias"])}}
        if not self.tie_weights:
            params["output"]["weight"] = jnp.asarray(arrays[f"{output}weight"])
        return params

    def to_torch_state_dict(self, params: dict, embedding: str = "embedding.", rnn: str = "rnn.",
                            output: str = "decoder.") -> dict:
        """The inverse of `from_torch_state_dict`: NumPy arrays under PyTorch's key names (with `tie_weights`,
        `decoder.weight` is written as a copy of the embedding, as `load_state_dict` expects it present)."""
        _checks.check_choice("mode (PyTorch has no minimal cells)", self.mode, MODES)
        state = {f"{embedding}weight": np.array(params["embedding"])}
        state.update(to_torch_state_dict(tuple(params["rnn"]), prefix=rnn))
        weight = params["embedding"] if self.tie_weights else params["output"]["weight"]
        state[f"{output}weight"] = np.array(weight)
        state[f"{output}bias"] = np.array(params["output"]["bias"])
        return state

    def initial_carry(self, batch_size: int) -> tuple:
        """Zero carries for a batch (one per layer)."""
        return self.stack.initial_carry((batch_size,))

    def apply(self, params: dict, tokens: jax.Array, carry=None, key: jax.Array | None = None):
        """`tokens` int `[batch, time]`, each in [0, vocab_size) -> `(logits [batch, time, vocab], carry)`; dropout
        when `key` is given. An out-of-range id raises a ValueError naming it when `tokens` is concrete, and
        fails a `checkify` check under `jit` (`rnnjax.train` steps raise it)."""
        if not hasattr(tokens, "dtype") or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"tokens must be an integer array of ids, got {getattr(tokens, 'dtype', type(tokens))}")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tuple(tokens.shape)}")
        # `take` would wrap a negative id around and fill NaN past the end: a silent wrong answer.
        _checks.check_index_range("tokens", tokens, self.vocab_size, what=f"vocab_size {self.vocab_size}")
        with jax.named_scope("rnnjax.models.LanguageModel"):
            xs = jnp.take(params["embedding"], tokens, axis=0)
            keys = (None, None, None) if key is None else tuple(jax.random.split(key, 3))
            if key is not None:
                xs = dropout(keys[0], xs, self.dropout_rate)
            ys, carry = self.stack.apply(params["rnn"], xs, carry=carry, key=keys[1])
            if key is not None:
                ys = dropout(keys[2], ys, self.dropout_rate)
            weight = params["embedding"] if self.tie_weights else params["output"]["weight"]
            logits = jnp.matmul(ys, weight.T) + params["output"]["bias"].reshape(1, 1, -1)
        return logits, carry


def zaremba_loss(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(loss, mean_token_cross_entropy)`: Zaremba's loss is the SUM over the unrolled steps of the batch-mean
    cross-entropy, i.e. `num_steps` times the token mean; plain SGD with lr 1 and a clip of 5 is tuned for that
    scale. Perplexity is `exp(mean_token_cross_entropy)`."""
    mean = cross_entropy(logits, targets)
    return mean * targets.shape[1], mean


def _top_k_mask(logits: jax.Array, top_k: int | None) -> jax.Array:
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    threshold = jax.lax.top_k(logits, top_k)[0][..., -1:]
    return jnp.where(logits < threshold, -jnp.inf, logits)


def sample(model: LanguageModel, params: dict, key: jax.Array, prime: jax.Array, length: int,
           temperature: float = 1.0, top_k: int | None = None) -> jax.Array:
    """Generates `length` token ids after the non-empty `prime` ids (one-to-many): the prime sets the state, then a
    `lax.scan` feeds each sampled token back. Sampling from `softmax(logits / temperature)` restricted to the
    `top_k` most likely tokens; reproducible for a given `key`. Jit-friendly (`model`, `length`, `top_k` static).
    `prime` ids must lie in [0, vocab_size) (checked as in `LanguageModel.apply`).
    """
    length = _checks.check_positive_int("length", length)
    if top_k is not None:
        _checks.check_positive_int("top_k", top_k)
    _checks.check_positive_float("temperature", temperature)
    if prime.ndim != 1 or prime.shape[0] < 1:
        raise ValueError(f"prime must be a non-empty 1-D array of token ids, got shape {tuple(prime.shape)}")
    logits, carry = model.apply(params, prime[None, :], model.initial_carry(1))
    last_logits = logits[0, -1]

    def step(state, step_key):
        carry, logits = state
        token = jax.random.categorical(step_key, _top_k_mask(logits / temperature, top_k))
        new_logits, carry = model.apply(params, token.reshape(1, 1).astype(jnp.int32), carry)
        return (carry, new_logits[0, -1]), token

    _, tokens = jax.lax.scan(step, (carry, last_logits), jax.random.split(key, length))
    return tokens.astype(jnp.int32)
