"""Decoding: greedy equals a Python argmax loop, beam size 1 is greedy, beam search finds the exhaustive optimum on
a tiny model, sampling is reproducible (top_k=1 is greedy), the output layout holds, and a second call with the
same shapes does not trace again."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.models.captioner import CaptionDecoder
from rnnjax.models.decoding import beam_search, greedy_decode, sample_decode
from rnnjax.models.seq2seq import Seq2Seq

BOS, EOS = 0, 1
SRC = jnp.array([[2, 3, 4], [4, 2, 0], [3, 3, 3]])
SRC_LENGTHS = jnp.array([3, 2, 3])


def model_and_params(vocab=6, seed=0, **overrides):
    model = Seq2Seq(src_vocab_size=5, tgt_vocab_size=vocab, embed_size=4, hidden_size=4, **overrides)
    params = model.init(jax.random.key(seed))
    # Sharper distributions than the initialisation gives, so the searches disagree when they are wrong.
    params["output"]["weight"] = params["output"]["weight"] * 4.0
    return model, params


def test_greedy_equals_a_python_argmax_loop_and_the_layout_holds():
    model, params = model_and_params()
    tokens, lengths, attention = greedy_decode(model, params, SRC, SRC_LENGTHS, bos_id=BOS, eos_id=EOS,
                                               max_length=6, pad_id=5)
    state = model.init_state(params, SRC, SRC_LENGTHS)
    previous = jnp.full((3,), BOS)
    expected = []
    for _ in range(6):
        state, logits, _ = model.step(params, state, previous)
        previous = jnp.argmax(logits, -1)
        expected.append(np.asarray(previous))
    expected = np.stack(expected, 1)
    for b in range(3):
        ends = np.flatnonzero(expected[b] == EOS)
        length = int(ends[0]) if ends.size else 6
        assert int(lengths[b]) == length
        np.testing.assert_array_equal(tokens[b, :min(length + 1, 6)], expected[b, :min(length + 1, 6)])
        assert np.all(np.asarray(tokens[b, length + 1:]) == 5)
        assert np.all(np.asarray(attention[b, length + 1:]) == 0)
    assert attention.shape == (3, 6, 3) and np.all(np.asarray(attention[1, :, 2]) == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_is_greedy(seed):
    model, params = model_and_params(seed=seed, attention="general")
    tokens, lengths, _ = greedy_decode(model, params, SRC, SRC_LENGTHS, bos_id=BOS, eos_id=EOS, max_length=7)
    beam_tokens, beam_lengths, _ = beam_search(model, params, SRC, SRC_LENGTHS, beam_size=1, bos_id=BOS, eos_id=EOS,
                                               max_length=7, length_penalty=0.0)
    np.testing.assert_array_equal(beam_tokens, tokens)
    np.testing.assert_array_equal(beam_lengths, lengths)


def exhaustive_best(model, params, vocab, max_length, length_penalty):
    """The best hypothesis of every example by scoring every token sequence of max_length (cut at its EOS)."""
    best = [(-np.inf, None)] * SRC.shape[0]
    seen = set()
    # One compiled step (eager dispatch of every op made this loop the slowest test); the start state is shared.
    step = jax.jit(lambda state, previous: (lambda s, logits, _: (s, jax.nn.log_softmax(logits)))(
        *model.step(params, state, previous)))
    start = model.init_state(params, SRC, SRC_LENGTHS)
    for sequence in itertools.product(range(vocab), repeat=max_length):
        cut = sequence[:sequence.index(EOS) + 1] if EOS in sequence else sequence
        if cut in seen:
            continue
        seen.add(cut)
        state = start
        previous = jnp.full((3,), BOS)
        total = np.zeros(3)
        for token in cut:
            state, log_probs = step(state, previous)
            total += np.asarray(log_probs[:, token], np.float64)
            previous = jnp.full((3,), token)
        score = total / len(cut) ** length_penalty
        best = [(s, cut) if s > b[0] else b for s, b in zip(score, best)]
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_a_wide_beam_finds_the_exhaustive_optimum_and_a_narrow_one_never_beats_it(length_penalty):
    vocab, max_length = 4, 3
    model, params = model_and_params(vocab=vocab, seed=3)
    best = exhaustive_best(model, params, vocab, max_length, length_penalty)
    tokens, lengths, scores = beam_search(model, params, SRC, SRC_LENGTHS, beam_size=16, bos_id=BOS, eos_id=EOS,
                                          max_length=max_length, length_penalty=length_penalty)
    for b, (score, cut) in enumerate(best):
        np.testing.assert_allclose(float(scores[b]), score, rtol=1e-5)
        assert tuple(np.asarray(tokens[b, :len(cut)]).tolist()) == cut
        assert int(lengths[b]) == (len(cut) - 1 if cut[-1] == EOS else len(cut))
    _, _, narrow = beam_search(model, params, SRC, SRC_LENGTHS, beam_size=2, bos_id=BOS, eos_id=EOS,
                               max_length=max_length, length_penalty=length_penalty)
    assert np.all(np.asarray(narrow) <= np.asarray(scores) + 1e-6)


def test_sampling_is_reproducible_and_top_k_one_is_greedy():
    model, params = model_and_params()
    options = dict(bos_id=BOS, eos_id=EOS, max_length=6)
    one = sample_decode(model, params, SRC, SRC_LENGTHS, key=jax.random.key(4), **options)
    two = sample_decode(model, params, SRC, SRC_LENGTHS, key=jax.random.key(4), **options)
    np.testing.assert_array_equal(one[0], two[0])
    draws = {tuple(np.asarray(sample_decode(model, params, SRC, SRC_LENGTHS, key=jax.random.key(k), temperature=3.0,
                                            **options)[0]).ravel()) for k in range(4)}
    assert len(draws) > 1
    greedy = greedy_decode(model, params, SRC, SRC_LENGTHS, **options)
    top1 = sample_decode(model, params, SRC, SRC_LENGTHS, key=jax.random.key(5), top_k=1, **options)
    np.testing.assert_array_equal(top1[0], greedy[0])


class CountingSeq2Seq(Seq2Seq):
    traces = 0

    def step(self, params, state, tokens):
        type(self).traces += 1
        return super().step(params, state, tokens)


def test_the_decoders_trace_once_per_shape():
    model = CountingSeq2Seq(src_vocab_size=5, tgt_vocab_size=6, embed_size=4, hidden_size=4)
    params = model.init(jax.random.key(0))
    for search in ("greedy", "beam"):
        counts = []
        for shift in range(3):
            src = (SRC + shift) % 5
            if search == "greedy":
                greedy_decode(model, params, src, SRC_LENGTHS, bos_id=BOS, eos_id=EOS, max_length=5)
            else:
                beam_search(model, params, src, SRC_LENGTHS, beam_size=3, bos_id=BOS, eos_id=EOS, max_length=5)
            counts.append(CountingSeq2Seq.traces)
        assert counts[0] > 0 and counts[1] == counts[0] and counts[2] == counts[0]
        CountingSeq2Seq.traces = 0


def test_caption_decoders_decode_too():
    features = jax.random.normal(jax.random.key(1), (2, 6, 5))
    for attention, inputs in (("additive", features), (None, features.mean(1))):
        model = CaptionDecoder(vocab_size=7, embed_size=4, hidden_size=8, feature_size=5, attention=attention)
        params = model.init(jax.random.key(0))
        tokens, lengths, weights = greedy_decode(model, params, inputs, bos_id=BOS, eos_id=EOS, max_length=4)
        beam_tokens, _, _ = beam_search(model, params, inputs, beam_size=1, bos_id=BOS, eos_id=EOS, max_length=4,
                                        length_penalty=0.0)
        np.testing.assert_array_equal(beam_tokens, tokens)
        assert (weights is None) == (attention is None)
        if weights is not None:
            assert weights.shape == (2, 4, 6)


def test_bad_arguments_raise():
    model, params = model_and_params()
    with pytest.raises(ValueError, match=r"eos_id must lie in \[0, 6\)"):
        greedy_decode(model, params, SRC, SRC_LENGTHS, bos_id=BOS, eos_id=6, max_length=3)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        greedy_decode(model, params, SRC, SRC_LENGTHS, bos_id=BOS, eos_id=EOS, max_length=0)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        beam_search(model, params, SRC, SRC_LENGTHS, beam_size=2, bos_id=BOS, eos_id=EOS, max_length=3,
                    length_penalty=-1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_decode(model, params, SRC, SRC_LENGTHS, key=jax.random.key(0), bos_id=BOS, eos_id=EOS, max_length=3,
                      temperature=0.0)
