"""An encoder-decoder over token ids (Sutskever et al. 2014; Cho et al. 2014; Bahdanau et al. 2015; Luong et al.
2015), any core cell on either side, and its padding-masked loss.

    src [B, S] -> embedding -> encoder: `num_layers` of (Bidirectional) Recurrent(encoder cell) -> memory [B, S, D*H]
    bridge: each decoder layer's initial carry from its encoder layer's final states
        "tanh_backward"  tanh(W_s h^backward_1 + b)   (Bahdanau et al. 2015, App. A.2.2; the forward final state
                                                         when the encoder is unidirectional)
        "projection"     tanh(W_s [h^forward_S; h^backward_1] + b)
        "final"          the encoder's final (forward) carry as it is (Sutskever et al. 2014; same cell mode)
    decoder: `DecoderCell` (rnnjax.models.decoder) over x_t = [E y_{t-1}; c], with `attention` over the memory
        or none; `attention_style` "luong" (attend after the step, input feeding of h~) or "bahdanau" (attend with
        the previous state before the step, its context c'_t into the step and the output layer);
        `context_every_step` (Cho et al. 2014) concatenates the encoder summary c = [h^forward_S; h^backward_1] of
        the top layer to every step's input and to the output layer's input
    logits_t = W_o r_t + b_o,  r_t = [o_t; E y_{t-1}; c] with `context_every_step`, else [o_t; E y_{t-1}] in
        Bahdanau's style (his "readout" of App. A.2.2 without its maxout), else o_t; o_t = h~_t (Luong),
        [h^L_t; c'_t] (Bahdanau) or h^L_t (no attention)

Dropout (only when `train=True`, with a `key`) drops the embeddings, the outputs between encoder layers, and the
decoder outputs before the output layer; never inside the decoder's recurrence. `tie_embeddings` shares the target
embedding with the output weight (Press & Wolf 2017), which needs the output layer's input size to equal
`embed_size`.

The decoding functions of `rnnjax.models.decoding` use `init_state(params, src, src_lengths)` and
`step(params, state, tokens)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax import _checks
from rnnjax.layers import Bidirectional, Recurrent, Stack, dropout
from rnnjax.losses import accuracy
from rnnjax.models.attention import ATTENTIONS
from rnnjax.models.decoder import ATTENTION_STYLES, DecoderCell, bridge_apply, bridge_init, carry_h, dense_init
from rnnjax.rnn import CELL_MODES, make_cell
from rnnjax.time_loop import unroll

BRIDGES = ("tanh_backward", "projection", "final")
# Scheduled sampling's two choices: which model token is fed back ("sample" from the softmax, Bengio et al. 2015;
# "argmax", bentrevett/pytorch-seq2seq's `output.argmax(1)`), and whose coin decides ("example": one per example and
# step; "batch": one per step for the whole batch, the tutorials' `random.random() < teacher_forcing_ratio`).
SAMPLED_TOKENS = ("sample", "argmax")
SAMPLING_COINS = ("example", "batch")


class DecodeState(NamedTuple):
    """What a decoder carries from step to step, every leaf `[batch, ...]` (so a beam search can tile and reorder
    it): the `DecoderCarry`, the memory `[batch, source, Hk]` with its mask and projected keys (None without
    attention), and the context vector of `context_every_step` (None otherwise)."""

    carry: Any
    memory: Any = None
    memory_mask: Any = None
    projected_memory: Any = None
    context: Any = None


def check_ids(name: str, ids: Any, vocab_size: int, lengths: Any = None, what: str = "") -> None:
    """Raises unless `ids` is an integer `[batch, time]` array with every id (at `t < lengths`, when given) in
    [0, vocab_size): a ValueError now when concrete, a `checkify` check under `jit` (`rnnjax._checks`)."""
    if not hasattr(ids, "dtype") or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array of ids, got {getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != 2:
        raise ValueError(f"{name} must be [batch, time], got shape {tuple(ids.shape)}")
    valid = None if lengths is None else jnp.arange(ids.shape[1])[None, :] < jnp.reshape(lengths, (-1, 1))
    _checks.check_index_range(name, ids, vocab_size, valid=valid, what=what or f"vocab_size {vocab_size}")


def check_lengths(name: str, lengths: Any, batch_size: int, time: int) -> jax.Array:
    """`lengths` as an int `[batch]` array with entries in [0, time] (eagerly or by `checkify`)."""
    if not hasattr(lengths, "dtype") or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got {getattr(lengths, 'dtype', type(lengths).__name__)}")
    if tuple(lengths.shape) != (batch_size,):
        raise ValueError(f"{name} must have shape ({batch_size},) = [batch], got {tuple(lengths.shape)}")
    _checks.check_value_range(name, lengths, 0, time, what="the time axis")
    return jnp.asarray(lengths)


def sequence_loss(logits: jax.Array, targets: jax.Array, lengths: jax.Array, *,
                  label_smoothing: float = 0.0) -> jax.Array:
    """Softmax cross-entropy averaged over the valid tokens (`t < lengths[b]`) of `logits` `[batch, time, vocab]`
    against `targets` int `[batch, time]`; with `label_smoothing` = eps the target distribution is
    `(1 - eps) one_hot + eps / vocab` (`optax.smooth_labels`; Szegedy et al. 2016). Targets at padded positions
    are never read; valid ones must lie in [0, vocab) (checked eagerly, or by `checkify` under `jit`). 0 when no
    token is valid."""
    _checks.check_floating_array("logits", logits)
    _checks.check_rate("label_smoothing", label_smoothing)
    if logits.ndim != 3:
        raise ValueError(f"logits must be [batch, time, vocab], got shape {tuple(logits.shape)}")
    shape = tuple(getattr(targets, "shape", ()))
    if shape != tuple(logits.shape[:2]):
        raise ValueError(f"targets must have shape {tuple(logits.shape[:2])} ([batch, time]), got {shape}")
    lengths = check_lengths("lengths", lengths, logits.shape[0], logits.shape[1])
    check_ids("targets", targets, logits.shape[2], lengths, what=f"vocab {logits.shape[2]}, the last axis of logits")
    mask = jnp.arange(logits.shape[1])[None, :] < lengths[:, None]
    targets = jnp.where(mask, targets, 0)
    labels = jax.nn.one_hot(targets, logits.shape[2], dtype=jnp.float32)
    if label_smoothing:
        labels = optax.smooth_labels(labels, label_smoothing)
    losses = optax.softmax_cross_entropy(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), labels)
    total = jnp.sum(jnp.where(mask, losses, jnp.zeros_like(losses)))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(losses.dtype)


@dataclasses.dataclass(frozen=True)
class Seq2Seq:
    """An encoder-decoder (module docstring). `apply` trains with teacher forcing (one `rnnjax.unroll` of the
    decoder) or scheduled sampling; `init_state` / `step` drive `greedy_decode`, `sample_decode`, `beam_search`.

    >>> import jax, jax.numpy as jnp
    >>> model = Seq2Seq(src_vocab_size=7, tgt_vocab_size=9, embed_size=8, hidden_size=8, attention="general")
    >>> params = model.init(jax.random.key(0))
    >>> logits, weights = model.apply(params, jnp.ones((2, 5), jnp.int32), jnp.array([5, 3]),
    ...                               jnp.ones((2, 4), jnp.int32), jnp.array([4, 2]))
    >>> logits.shape, weights.shape, float(weights[1, 0, 3:].sum())
    ((2, 4, 9), (2, 4, 5), 0.0)
    """

    src_vocab_size: int  # source token ids lie in [0, src_vocab_size)
    tgt_vocab_size: int  # target ids, and the output layer's size
    embed_size: int  # both embeddings' size
    hidden_size: int  # every encoder and decoder cell's hidden size (each direction's, if bidirectional)
    encoder_mode: str = "gru"  # the encoder cell, any of rnnjax.CELL_MODES
    decoder_mode: str = "gru"  # the decoder cell
    num_layers: int = 1  # of the encoder and of the decoder
    bidirectional: bool = True  # bidirectional encoder (memory of 2 * hidden_size features)
    attention: str | None = "additive"  # one of ATTENTIONS, or None (no attention)
    attention_size: int | None = None  # the additive attention's hidden size (None: the memory size)
    attention_style: str = "luong"  # "luong" | "bahdanau" (ATTENTION_STYLES; module docstring)
    bridge: str = "tanh_backward"  # how the decoder's initial carry comes from the encoder (BRIDGES)
    context_every_step: bool = False  # Cho et al. 2014: the encoder summary into every step and the output layer
    dropout_rate: float = 0.0  # on embeddings, between encoder layers, before the output layer (train only)
    tie_embeddings: bool = False  # share the target embedding with the output weight

    def __post_init__(self):
        for name in ("src_vocab_size", "tgt_vocab_size", "embed_size", "hidden_size", "num_layers"):
            _checks.check_positive_int(name, getattr(self, name))
        _checks.check_choice("encoder_mode", self.encoder_mode, CELL_MODES)
        _checks.check_choice("decoder_mode", self.decoder_mode, CELL_MODES)
        for name in ("bidirectional", "context_every_step", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.attention is not None:
            _checks.check_choice("attention", self.attention, ATTENTIONS)
            if self.attention == "dot" and self.memory_size != self.hidden_size:
                raise ValueError(f"dot attention needs the memory size ({self.memory_size}: a bidirectional encoder "
                                 f"doubles hidden_size) to equal the decoder's hidden_size {self.hidden_size}; use "
                                 "'general' or 'additive', or bidirectional=False")
        if self.attention_size is not None:
            _checks.check_positive_int("attention_size", self.attention_size)
            if self.attention != "additive":
                raise ValueError(f"attention_size is for additive attention, got attention={self.attention!r}")
        _checks.check_choice("attention_style", self.attention_style, ATTENTION_STYLES)
        if self.attention_style != "luong" and self.attention is None:
            raise ValueError(f"attention_style={self.attention_style!r} needs an attention, got attention=None")
        _checks.check_choice("bridge", self.bridge, BRIDGES)
        if self.bridge == "final" and self.encoder_mode != self.decoder_mode:
            raise ValueError(f"bridge='final' copies the encoder's carry, so it needs encoder_mode == decoder_mode, "
                             f"got {self.encoder_mode!r} and {self.decoder_mode!r}")
        _checks.check_rate("dropout_rate", self.dropout_rate)
        if self.tie_embeddings and self.readout_size != self.embed_size:
            raise ValueError(f"tie_embeddings needs the output layer's input size ({self.readout_size}) to equal "
                             f"embed_size {self.embed_size}: hidden_size == embed_size, no context_every_step and no "
                             "Bahdanau-style attention")

    # -- sizes and parts -------------------------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def memory_size(self) -> int:
        return self.num_directions * self.hidden_size

    @property
    def context_size(self) -> int:
        return self.memory_size if self.context_every_step else 0

    @property
    def _bahdanau(self) -> bool:
        return self.attention is not None and self.attention_style == "bahdanau"

    @property
    def readout_size(self) -> int:
        size = self.hidden_size + (self.memory_size if self._bahdanau else 0)
        if self._bahdanau or self.context_every_step:
            size += self.embed_size + self.context_size  # E y_{t-1} once, then c with context_every_step
        return size

    @property
    def encoder(self) -> Stack:
        layer = Recurrent(make_cell(self.encoder_mode, self.hidden_size))
        if self.bidirectional:
            layer = Bidirectional(layer)
        return Stack((layer,) * self.num_layers, dropout_rate=self.dropout_rate)

    @property
    def decoder(self) -> DecoderCell:
        cells = tuple(make_cell(self.decoder_mode, self.hidden_size) for _ in range(self.num_layers))
        return DecoderCell(cells, self.attention, self.memory_size if self.attention else None, self.attention_size,
                           self.attention_style)

    def _bridge_source_size(self) -> int:
        return self.hidden_size if self.bridge == "tanh_backward" else self.memory_size

    def init(self, key: jax.Array) -> dict:
        """`{"src_embedding": [Vs, E], "tgt_embedding": [Vt, E], "encoder": per-layer params, "bridge": per
        decoder layer, per carry leaf {"weight", "bias"} (None for "final"), "decoder": DecoderParams, "output":
        {"weight": [Vt, readout] (absent if tied), "bias": [Vt]}}`; embeddings N(0, 1) (PyTorch's), the rest
        each cell's or `nn.Linear`'s default."""
        keys = jax.random.split(key, 6)
        cell = make_cell(self.decoder_mode, self.hidden_size)
        bridge = None
        if self.bridge != "final":
            bridge = tuple(bridge_init(k, cell, self._bridge_source_size())
                           for k in jax.random.split(keys[3], self.num_layers))
        output = dense_init(keys[5], self.readout_size, self.tgt_vocab_size)
        if self.tie_embeddings:
            del output["weight"]
        return {
            "src_embedding": jax.random.normal(keys[0], (self.src_vocab_size, self.embed_size)),
            "tgt_embedding": jax.random.normal(keys[1], (self.tgt_vocab_size, self.embed_size)),
            "encoder": self.encoder.init(keys[2], self.embed_size),
            "bridge": bridge,
            "decoder": self.decoder.init(keys[4], self.embed_size + self.context_size),
            "output": output,
        }

    # -- encoding --------------------------------------------------------------------------------------------------
    def encode(self, params: dict, src: jax.Array, src_lengths: jax.Array, *, key: jax.Array | None = None):
        """`(memory [B, S, D*H], final carries per encoder layer)` of `src` int `[B, S]` with `src_lengths` `[B]`
        (memory rows at `s >= src_lengths` are zero). Dropout when `key` is given."""
        check_ids("src", src, self.src_vocab_size)
        src_lengths = check_lengths("src_lengths", src_lengths, src.shape[0], src.shape[1])
        embed_key, stack_key = (None, None) if key is None else tuple(jax.random.split(key))
        xs = jnp.take(params["src_embedding"], src, axis=0)
        if key is not None:
            xs = dropout(embed_key, xs, self.dropout_rate)
        return self.encoder.apply(params["encoder"], xs, lengths=src_lengths, key=stack_key)

    def _directions(self, carry) -> tuple:
        return (carry.forward, carry.backward) if self.bidirectional else (carry,)

    def init_state(self, params: dict, src: jax.Array, src_lengths: jax.Array, *,
                   key: jax.Array | None = None) -> DecodeState:
        """The decoder's state before its first step: encoder, bridge, memory and context (module docstring)."""
        with jax.named_scope("rnnjax.models.Seq2Seq.encode"):
            memory, finals = self.encode(params, src, src_lengths, key=key)
            decoder = self.decoder
            layers = []
            for index, final in enumerate(finals):
                directions = self._directions(final)
                if self.bridge == "final":
                    layers.append(directions[0])
                    continue
                if self.bridge == "tanh_backward":
                    source = carry_h(directions[-1])
                else:
                    source = jnp.concatenate([carry_h(d) for d in directions], axis=-1)
                layers.append(bridge_apply(decoder.cells[index], params["bridge"][index], source))
            carry = decoder.initial_carry((src.shape[0],), memory.dtype)._replace(layers=tuple(layers))
            context = None
            if self.context_every_step:
                context = jnp.concatenate([carry_h(d) for d in self._directions(finals[-1])], axis=-1)
            if self.attention is None:
                return DecodeState(carry, context=context)
            mask = jnp.arange(src.shape[1])[None, :] < jnp.reshape(src_lengths, (-1, 1))
            bound = decoder.bind(params["decoder"], memory, mask)
            return DecodeState(carry, bound.memory, bound.memory_mask, bound.projected_memory, context)

    # -- decoding --------------------------------------------------------------------------------------------------
    def _step_inputs(self, embedded: jax.Array, context) -> jax.Array:
        if context is None:
            return embedded
        context = jnp.broadcast_to(context.reshape(context.shape[:1] + (1,) * (embedded.ndim - 2) + context.shape[1:]),
                                   embedded.shape[:-1] + context.shape[-1:])
        return jnp.concatenate([embedded, context], axis=-1)

    def _readout(self, params: dict, outputs: jax.Array, embedded: jax.Array, context, key=None) -> jax.Array:
        if self._bahdanau or self.context_every_step:
            outputs = jnp.concatenate([outputs, self._step_inputs(embedded, context)], axis=-1)
        if key is not None:
            outputs = dropout(key, outputs, self.dropout_rate)
        weight = params["tgt_embedding"] if self.tie_embeddings else params["output"]["weight"]
        return outputs @ weight.T + params["output"]["bias"].reshape((1,) * (outputs.ndim - 1) + (-1,))

    def _bound(self, params: dict, state: DecodeState):
        return params["decoder"]._replace(memory=state.memory, memory_mask=state.memory_mask,
                                          projected_memory=state.projected_memory)

    def _step(self, params, state: DecodeState, tokens, key=None):
        embedded = jnp.take(params["tgt_embedding"], tokens, axis=0)
        embed_key, out_key = (None, None) if key is None else tuple(jax.random.split(key))
        if key is not None:
            embedded = dropout(embed_key, embedded, self.dropout_rate)
        decoder = self.decoder
        carry, ys = decoder.recurrent_step(self._bound(params, state), state.carry,
                                           self._step_inputs(embedded, state.context))
        outputs, weights = decoder.split_outputs(ys)
        return state._replace(carry=carry), self._readout(params, outputs, embedded, state.context, out_key), weights

    def step(self, params: dict, state: DecodeState, tokens: jax.Array):
        """One decoder step on the previous tokens `[batch]`: `(state, logits [batch, V], attention [batch, S] or
        None)`."""
        if not hasattr(tokens, "dtype") or not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 1:
            raise TypeError(f"tokens must be an integer [batch] array, got {getattr(tokens, 'dtype', tokens)}")
        _checks.check_index_range("tokens", tokens, self.tgt_vocab_size, what=f"tgt_vocab_size {self.tgt_vocab_size}")
        return self._step(params, state, tokens)

    def apply(self, params: dict, src: jax.Array, src_lengths: jax.Array, tgt_in: jax.Array, tgt_lengths: jax.Array,
              *, key: jax.Array | None = None, train: bool = False, sampling_probability: float = 0.0,
              sampled_token: str = "sample", sampling_coin: str = "example"):
        """`(logits [B, T, Vt], attention weights [B, T, S] or None)` for the decoder inputs `tgt_in` int `[B, T]`
        (BOS then the target shifted right) with `tgt_lengths` `[B]`.

        Teacher forcing: one `rnnjax.unroll` of the decoder over `tgt_in` (logits past `tgt_lengths` come from
        zero outputs, and their attention weights are zero). With `sampling_probability` p > 0 (scheduled
        sampling, Bengio et al. 2015; needs `key`), each step after the first reads, with probability p, the model's
        own token instead of `tgt_in`, in a `lax.scan` over the decoder's step (positions past `tgt_lengths` are
        then not zeroed: the loss masks them). That token is `sampled_token`: "sample" (drawn from the previous
        step's softmax) or "argmax" (its most likely token); `sampling_coin` "example" tosses one coin per example
        and step, "batch" one per step for the whole batch (bentrevett/pytorch-seq2seq's teacher forcing ratio
        1 - p). `train=True` turns dropout on and needs `key`. Ids are range-checked as in
        `LanguageModel.apply`."""
        _checks.check_rate("sampling_probability", sampling_probability)
        _checks.check_choice("sampled_token", sampled_token, SAMPLED_TOKENS)
        _checks.check_choice("sampling_coin", sampling_coin, SAMPLING_COINS)
        if (train and self.dropout_rate) or sampling_probability:
            if key is None:
                raise ValueError("train=True with dropout, and sampling_probability > 0, need a PRNG key")
        check_ids("tgt_in", tgt_in, self.tgt_vocab_size, tgt_lengths)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"src and tgt_in must share the batch size, got {src.shape[0]} and {tgt_in.shape[0]}")
        tgt_lengths = check_lengths("tgt_lengths", tgt_lengths, tgt_in.shape[0], tgt_in.shape[1])
        keys = (None,) * 4 if key is None else tuple(jax.random.split(key, 4))
        dropping = train and self.dropout_rate > 0
        # Valid target ids only (padding may hold anything): the rest read row 0 and are masked by the unroll.
        valid = jnp.arange(tgt_in.shape[1])[None, :] < tgt_lengths[:, None]
        tgt_in = jnp.where(valid, tgt_in, jnp.zeros((), tgt_in.dtype))
        with jax.named_scope("rnnjax.models.Seq2Seq"):
            state = self.init_state(params, src, src_lengths, key=keys[0] if dropping else None)
            if sampling_probability:
                return self._scheduled_sampling(params, state, tgt_in, sampling_probability, keys[3],
                                                keys[1] if dropping else None, sampled_token, sampling_coin)
            embedded = jnp.take(params["tgt_embedding"], tgt_in, axis=0)
            if dropping:
                embedded = dropout(keys[1], embedded, self.dropout_rate)
            decoder = self.decoder
            ys, _ = unroll(decoder, self._bound(params, state), self._step_inputs(embedded, state.context),
                           carry=state.carry, lengths=tgt_lengths)
            outputs, weights = decoder.split_outputs(ys)
            logits = self._readout(params, outputs, embedded, state.context, keys[2] if dropping else None)
        return logits, weights

    def _scheduled_sampling(self, params, state, tgt_in, probability, key, dropout_key, sampled_token, coin):
        time = tgt_in.shape[1]
        step_keys = jax.random.split(key, time)
        drop_keys = None if dropout_key is None else jax.random.split(dropout_key, time)

        def body(loop, t):
            state, previous_logits = loop
            tokens = feed_back_tokens(step_keys[t], tgt_in[:, t], previous_logits, probability, sampled_token, coin,
                                      first=t == 0)
            state, logits, weights = self._step(params, state, tokens, None if drop_keys is None else drop_keys[t])
            return (state, logits), (logits, weights)

        initial_logits = jnp.zeros((tgt_in.shape[0], self.tgt_vocab_size), jnp.float32)
        _, (logits, weights) = jax.lax.scan(body, (state, initial_logits), jnp.arange(time))
        weights = None if weights is None else jnp.swapaxes(weights, 0, 1)
        return jnp.swapaxes(logits, 0, 1), weights


def feed_back_tokens(key: jax.Array, teacher: jax.Array, logits: jax.Array, probability: float,
                     sampled_token: str = "sample", coin: str = "example", first: jax.Array | bool = False):
    """Scheduled sampling's choice for one step: the model's token (from `logits` `[B, V]`, the previous step's
    output, no gradient; `sampled_token` "sample" or "argmax") where a coin of probability `probability` says so
    (`coin` "example": one per row; "batch": one for all rows), `teacher` `[B]` elsewhere and wherever `first`."""
    coin_key, sample_key = jax.random.split(key)
    logits = jax.lax.stop_gradient(logits)
    if sampled_token == "argmax":
        model = jnp.argmax(logits, axis=-1)
    else:
        model = jax.random.categorical(sample_key, logits)
    shape = teacher.shape[:1] if coin == "example" else ()
    use_model = (jax.random.uniform(coin_key, shape) < probability) & jnp.logical_not(first)
    return jnp.where(use_model, model.astype(teacher.dtype), teacher)


def seq2seq_loss_fn(model: Seq2Seq, *, label_smoothing: float = 0.0, sampling_probability: float = 0.0,
                    sampled_token: str = "sample", sampling_coin: str = "example"):
    """The training engine's loss function (`rnnjax.train`) for batches with `src`, `src_lengths`, `tgt_in`,
    `tgt_out`, `tgt_lengths`: `sequence_loss` with `label_smoothing`, token `accuracy` as a metric; no carry."""

    def loss_fn(params, carry, batch, key):
        logits, _ = model.apply(params, batch["src"], batch["src_lengths"], batch["tgt_in"], batch["tgt_lengths"],
                                key=key, train=key is not None, sampling_probability=sampling_probability,
                                sampled_token=sampled_token, sampling_coin=sampling_coin)
        loss = sequence_loss(logits, batch["tgt_out"], batch["tgt_lengths"], label_smoothing=label_smoothing)
        mask = jnp.arange(logits.shape[1])[None, :] < batch["tgt_lengths"][:, None]
        return loss, (carry, {"accuracy": accuracy(logits, jnp.where(mask, batch["tgt_out"], 0), mask)})

    return loss_fn
