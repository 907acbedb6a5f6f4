"""Seq2Seq: the teacher-forced unroll equals a Python loop over the decoder's step (every attention, both attention
styles, bridge and Cho's context), the bridge and the Bahdanau-style step are Bahdanau's formulas, padding never leaks, scheduled sampling at p -> 0 is teacher
forcing and at p -> 1 with argmax tokens the greedy loop, a batch coin feeds every row alike, the loss is the masked (label-smoothed) cross-entropy, and bad ids raise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from rnnjax.models.decoder import DecoderCell
from rnnjax.models.seq2seq import Seq2Seq, feed_back_tokens, seq2seq_loss_fn, sequence_loss
from rnnjax.rnn import make_cell
from rnnjax.time_loop import unroll

SRC = jnp.array([[3, 4, 5, 6, 2], [5, 6, 2, 0, 0]])
SRC_LENGTHS = jnp.array([5, 3])
TGT_IN = jnp.array([[1, 3, 4, 5], [1, 6, 0, 0]])
TGT_LENGTHS = jnp.array([4, 2])


def small(**overrides):
    options = dict(src_vocab_size=7, tgt_vocab_size=8, embed_size=6, hidden_size=6)
    options.update(overrides)
    return Seq2Seq(**options)


def loop_over_step(model, params):
    state = model.init_state(params, SRC, SRC_LENGTHS)
    logits, weights = [], []
    for t in range(TGT_IN.shape[1]):
        state, step_logits, step_weights = model.step(params, state, TGT_IN[:, t])
        logits.append(step_logits)
        weights.append(step_weights)
    return jnp.stack(logits, 1), (None if weights[0] is None else jnp.stack(weights, 1))


CONFIGS = [
    dict(attention="additive", bridge="tanh_backward"),
    dict(attention="general", bridge="projection", decoder_mode="lstm", encoder_mode="lstm", num_layers=2),
    dict(attention="dot", bidirectional=False, bridge="final", encoder_mode="lstm", decoder_mode="lstm"),
    dict(attention=None, bridge="projection", context_every_step=True, encoder_mode="mingru"),
    dict(attention="additive", context_every_step=True, decoder_mode="minlstm"),
    dict(attention=None, bridge="final", bidirectional=False, tie_embeddings=True),
    dict(attention="additive", attention_style="bahdanau", attention_size=5, bridge="projection"),
    dict(attention="general", attention_style="bahdanau", decoder_mode="lstm", num_layers=2, context_every_step=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_teacher_forced_unroll_equals_a_python_loop_over_step(config, key):
    model = small(**config)
    params = model.init(key)
    logits, weights = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS)
    loop_logits, loop_weights = loop_over_step(model, params)
    valid = np.arange(4)[None, :] < np.asarray(TGT_LENGTHS)[:, None]
    np.testing.assert_allclose(np.asarray(logits)[valid], np.asarray(loop_logits)[valid], rtol=1e-5, atol=1e-6)
    if config["attention"] is None:
        assert weights is None and loop_weights is None
    else:
        np.testing.assert_allclose(np.asarray(weights)[valid], np.asarray(loop_weights)[valid], rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(weights)[1, :, 3:] == 0)  # source padding
        assert np.all(np.asarray(weights)[1, 2:] == 0)  # target padding


@pytest.mark.parametrize("style", ["luong", "bahdanau"])
def test_the_decoder_cell_unroll_equals_its_step_with_lengths(style, key):
    cell = DecoderCell((make_cell("gru", 5), make_cell("lstm", 4)), "general", memory_size=3, attention_style=style)
    params = cell.bind(cell.init(key, 2), jax.random.normal(key, (2, 6, 3)), jnp.arange(6)[None, :] < jnp.array([[6],
                                                                                                                [2]]))
    xs = jax.random.normal(jax.random.key(2), (2, 5, 2))
    ys, final = unroll(cell, params, xs, lengths=jnp.array([5, 3]))
    carry = cell.initial_carry((2,))
    for t in range(5):
        carry, y = cell.step(params, carry, xs[:, t])
        np.testing.assert_allclose(ys[0, t], y[0], rtol=1e-5, atol=1e-6)
        if t < 3:
            np.testing.assert_allclose(ys[1, t], y[1], rtol=1e-5, atol=1e-6)
        if t == 2:
            held = jax.tree.map(lambda leaf: leaf[1], carry)
    # [h~ (4); weights (6)] in Luong's style, [h (4); context (3); weights (6)] in Bahdanau's
    assert ys.shape == (2, 5, cell.output_size + 6) and cell.output_size == {"luong": 4, "bahdanau": 7}[style]
    assert np.all(np.asarray(ys[1, 3:]) == 0)
    for got, want in zip(jax.tree.leaves(jax.tree.map(lambda leaf: leaf[1], final)), jax.tree.leaves(held)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_bahdanau_style_step_is_the_formula(key):
    """One step by hand: c_1 = sum_s softmax_s(v^T tanh(W_q s_0 + W_k k_s + b)) k_s over the valid s, s_1 =
    GRU(s_0, [E y_0; c_1]), logits = W_o [s_1; c_1; E y_0] + b_o (bentrevett's tutorial 3, Bahdanau et al. 2015)."""
    model = small(attention="additive", attention_style="bahdanau", attention_size=5, bridge="projection")
    params = model.init(key)
    memory, _ = model.encode(params, SRC, SRC_LENGTHS)
    state = model.init_state(params, SRC, SRC_LENGTHS)
    s0 = state.carry.layers[0]
    attention = params["decoder"].attention
    scores = jnp.tanh(memory @ attention["key"].T + attention["bias"][None, None, :]
                      + (s0 @ attention["query"].T)[:, None, :])
    scores = jnp.where(jnp.arange(5)[None, :] < SRC_LENGTHS[:, None], scores @ attention["v"], -jnp.inf)
    weights = jax.nn.softmax(scores, axis=1)
    context = jnp.einsum("bs,bsk->bk", weights, memory)
    embedded = params["tgt_embedding"][TGT_IN[:, 0]]
    cell = model.decoder.cells[0]
    _, s1 = cell.step(params["decoder"].layers[0], s0, jnp.concatenate([embedded, context], axis=-1))
    output = params["output"]
    expected = jnp.concatenate([s1, context, embedded], axis=-1) @ output["weight"].T + output["bias"][None, :]
    _, logits, step_weights = model.step(params, state, TGT_IN[:, 0])
    np.testing.assert_allclose(step_weights, weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert params["decoder"].combine is None and output["weight"].shape == (8, 6 + 12 + 6)


def test_tanh_backward_bridge_is_bahdanaus_formula(key):
    model = small(attention="additive", bridge="tanh_backward")
    params = model.init(key)
    memory, _ = model.encode(params, SRC, SRC_LENGTHS)
    backward_first = memory[:, 0, model.hidden_size:]  # h^backward_1: the backward direction's output at t = 0
    bridge = params["bridge"][0][0]
    expected = jnp.tanh(backward_first @ bridge["weight"].T + bridge["bias"][None, :])
    state = model.init_state(params, SRC, SRC_LENGTHS)
    np.testing.assert_allclose(state.carry.layers[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["additive", None])
def test_padding_never_reaches_the_valid_outputs(attention, key):
    model = small(attention=attention, context_every_step=attention is None)
    params = model.init(key)
    logits, _ = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS)
    other, _ = model.apply(params, SRC.at[1, 3:].set(6), SRC_LENGTHS, TGT_IN.at[1, 2:].set(99), TGT_LENGTHS)
    np.testing.assert_allclose(logits[0], other[0], rtol=1e-6)
    np.testing.assert_allclose(logits[1, :2], other[1, :2], rtol=1e-6)


def test_scheduled_sampling_at_a_vanishing_rate_is_teacher_forcing_and_at_a_high_rate_is_not(key):
    model = small(attention="general")
    params = model.init(key)
    logits, weights = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS)
    sampled, sampled_weights = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=jax.random.key(3),
                                           sampling_probability=1e-9)
    valid = np.arange(4)[None, :] < np.asarray(TGT_LENGTHS)[:, None]
    np.testing.assert_allclose(np.asarray(sampled)[valid], np.asarray(logits)[valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sampled_weights)[valid], np.asarray(weights)[valid], rtol=1e-5, atol=1e-6)
    mostly, _ = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=jax.random.key(3),
                            sampling_probability=0.99)
    assert not np.allclose(np.asarray(mostly)[0, 1:], np.asarray(logits)[0, 1:])
    np.testing.assert_allclose(mostly[:, 0], logits[:, 0], rtol=1e-5, atol=1e-6)  # step 0 always reads BOS
    with pytest.raises(ValueError, match="need a PRNG key"):
        model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, sampling_probability=0.5)
    with pytest.raises(ValueError, match="sampled_token must be one of .*'top'"):
        model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=key, sampling_probability=0.5,
                    sampled_token="top")
    with pytest.raises(ValueError, match="sampling_coin must be one of .*'step'"):
        model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=key, sampling_probability=0.5,
                    sampling_coin="step")


@pytest.mark.parametrize("coin", ["example", "batch"])
def test_argmax_sampling_at_a_rate_near_one_is_the_greedy_loop_over_step(coin, key):
    model = small(attention="additive")
    params = model.init(key)
    fed, _ = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=jax.random.key(3),
                         sampling_probability=1 - 1e-7, sampled_token="argmax", sampling_coin=coin)
    state, tokens, logits = model.init_state(params, SRC, SRC_LENGTHS), TGT_IN[:, 0], []
    for _ in range(TGT_IN.shape[1]):
        state, step_logits, _ = model.step(params, state, tokens)
        logits.append(step_logits)
        tokens = jnp.argmax(step_logits, axis=-1).astype(TGT_IN.dtype)
    np.testing.assert_allclose(fed, jnp.stack(logits, 1), rtol=1e-5, atol=1e-6)


def test_a_batch_coin_feeds_every_row_alike_and_an_example_coin_does_not():
    teacher = jnp.zeros(64, jnp.int32)
    logits = jnp.zeros((64, 8)).at[:, 5].set(50.0)  # the model's token is 5 however it is chosen
    outcomes = {"batch": set(), "example": set()}
    for coin in outcomes:
        for seed in range(16):
            tokens = np.asarray(feed_back_tokens(jax.random.key(seed), teacher, logits, 0.5, "argmax", coin))
            outcomes[coin].add(tuple(sorted(set(tokens.tolist()))))
            sampled = feed_back_tokens(jax.random.key(seed), teacher, logits, 0.5, "sample", coin)
            np.testing.assert_array_equal(sampled, tokens)  # the same coins; a sample of a peaked softmax is 5
    assert outcomes["batch"] == {(0,), (5,)}  # all teacher or all model, both seen
    assert (0, 5) in outcomes["example"]
    first = feed_back_tokens(jax.random.key(0), teacher, logits, 1 - 1e-7, "argmax", "batch", first=True)
    np.testing.assert_array_equal(first, teacher)


def test_dropout_only_in_training_and_reproducible(key):
    model = small(dropout_rate=0.5)
    params = model.init(key)
    plain, _ = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=jax.random.key(1))
    evaluation, _ = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS)
    np.testing.assert_array_equal(plain, evaluation)  # a key without train=True drops nothing
    one, _ = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=jax.random.key(1), train=True)
    two, _ = model.apply(params, SRC, SRC_LENGTHS, TGT_IN, TGT_LENGTHS, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(one, two)
    assert not np.allclose(one, plain)


def test_sequence_loss_is_the_masked_label_smoothed_cross_entropy(key):
    logits = jax.random.normal(key, (2, 3, 5))
    targets = jnp.array([[1, 4, 2], [3, 99, -1]])  # padding may hold anything
    lengths = jnp.array([3, 1])
    log_probs = np.asarray(jax.nn.log_softmax(logits), np.float64)
    valid = [(0, 0), (0, 1), (0, 2), (1, 0)]
    plain = -np.mean([log_probs[b, t, int(targets[b, t])] for b, t in valid])
    np.testing.assert_allclose(sequence_loss(logits, targets, lengths), plain, rtol=1e-6)
    eps = 0.1
    smoothed = np.mean([-(1 - eps) * log_probs[b, t, int(targets[b, t])] - eps / 5 * log_probs[b, t].sum()
                        for b, t in valid])
    np.testing.assert_allclose(sequence_loss(logits, targets, lengths, label_smoothing=eps), smoothed, rtol=1e-6)
    assert float(sequence_loss(logits, targets, jnp.array([0, 0]))) == 0.0
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\).*got 99"):
        sequence_loss(logits, targets, jnp.array([3, 2]))


def test_loss_fn_gives_finite_gradients(key):
    model = small(attention="additive", dropout_rate=0.1)
    params = model.init(key)
    batch = {"src": SRC, "src_lengths": SRC_LENGTHS, "tgt_in": TGT_IN, "tgt_out": jnp.roll(TGT_IN, -1, axis=1),
             "tgt_lengths": TGT_LENGTHS}
    loss_fn = seq2seq_loss_fn(model, label_smoothing=0.1)
    (loss, (_, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, None, batch, jax.random.key(1))
    assert np.isfinite(loss) and 0 <= float(metrics["accuracy"]) <= 1
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["decoder"].attention["v"]).sum()) > 0


def test_bad_ids_and_configs_raise_clear_errors(key):
    model = small()
    params = model.init(key)
    with pytest.raises(ValueError, match=r"src must lie in \[0, 7\) \(vocab_size 7\), got 9"):
        model.apply(params, SRC.at[0, 1].set(9), SRC_LENGTHS, TGT_IN, TGT_LENGTHS)
    with pytest.raises(ValueError, match=r"tgt_in must lie in \[0, 8\) \(vocab_size 8\), got -1"):
        model.apply(params, SRC, SRC_LENGTHS, TGT_IN.at[0, 1].set(-1), TGT_LENGTHS)
    with pytest.raises(ValueError, match=r"tgt_lengths must lie in \[0, 4\]"):
        model.apply(params, SRC, SRC_LENGTHS, TGT_IN, jnp.array([5, 1]))
    with pytest.raises(TypeError, match="src must be an integer array of ids"):
        model.apply(params, SRC.astype(jnp.float32), SRC_LENGTHS, TGT_IN, TGT_LENGTHS)
    apply = jax.jit(checkify.checkify(lambda p, src: model.apply(p, src, SRC_LENGTHS, TGT_IN, TGT_LENGTHS)[0]))
    error, _ = apply(params, SRC.at[1, 4].set(70))
    assert error.get().startswith("src must lie in [0, 7) (vocab_size 7), got 70 at flat index 9")
    with pytest.raises(ValueError, match="bridge must be one of"):
        small(bridge="mean")
    with pytest.raises(ValueError, match="dot attention needs the memory size"):
        small(attention="dot")
    with pytest.raises(ValueError, match="bridge='final' copies the encoder's carry"):
        small(bridge="final", encoder_mode="lstm")
    with pytest.raises(ValueError, match="tie_embeddings needs"):
        small(tie_embeddings=True, context_every_step=True)
    with pytest.raises(ValueError, match="attention_style must be one of"):
        small(attention_style="cho")
    with pytest.raises(ValueError, match="attention_style='bahdanau' needs an attention"):
        small(attention=None, attention_style="bahdanau")
    with pytest.raises(ValueError, match="tie_embeddings needs"):
        small(tie_embeddings=True, attention_style="bahdanau")
