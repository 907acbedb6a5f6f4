"""The translation experiment end to end on the offline CLDR dates (run directory, metrics, attention heat-map),
the attention it draws equals the decoder's own, and its command line."""

import json

import jax
import numpy as np
import pytest

from experiments import cli
from experiments.translation import train as translation
from experiments.translation.tokenisation import BOS, EOS
from rnnjax.models import decoding
from rnnjax.models.seq2seq import Seq2Seq
from rnnjax.train import run_files


def test_quick_run_writes_scores_translations_and_attention(tmp_path):
    config = translation.Config(**translation.QUICK, run_dir=str(tmp_path / "run"), quiet=True,
                                compilation_cache=False)
    summary = translation.train(config)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "summary.json", "attention.png", "translations.test.txt",
                 "vocabulary.source.json", "vocabulary.target.json"):
        assert (run / name).is_file(), name
    assert len((run / "translations.test.txt").read_text().splitlines()) == config.cldr_eval_pairs
    result = summary["test"]["test"]
    assert 0.0 <= result["sacrebleu"] <= 100.0 and "case:lc" in result["sacrebleu_signature"]
    assert 0.0 <= result["tokenised_bleu"] <= 100.0 and result["perplexity"] > 1.0
    assert len(result["examples"]) == 2 and result["decoder"] == "greedy"
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"valid"' in line]
    assert len(valid) == 1 and np.isfinite(valid[0]["valid_perplexity"]) and summary["best_epoch"] == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert set(run_files.curves(records)["token_loss"]) == {"train", "valid"}  # one plot, train and valid overlaid
    assert json.loads((run / "summary.json").read_text())["test"]["test"]["sacrebleu"] == result["sacrebleu"]


def test_selecting_on_the_free_running_loss_keeps_its_best_epoch(tmp_path, monkeypatch):
    # Validation calls (one per epoch) see their free-running loss inflated more each epoch, so the free-running
    # choice is epoch 0 while the teacher-forced loss (falling every epoch here) would keep the last.
    real, calls = translation.free_running_nll, []

    def inflated(model, params, batches):
        nll, tokens = real(model, params, batches)
        calls.append(None)
        return nll * (1.0 + len(calls)) if len(calls) <= 3 else nll, tokens

    monkeypatch.setattr(translation, "free_running_nll", inflated)
    config = translation.Config(**dict(translation.QUICK, epochs=3), select_on="free_running_loss",
                                run_dir=str(tmp_path / "run"), quiet=True, compilation_cache=False)
    summary = translation.train(config)
    valid = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if '"valid"' in line]
    free_running = [record["valid_free_running_perplexity"] for record in valid]
    teacher_forced = [record["valid_perplexity"] for record in valid]
    assert len(free_running) == 3 and all(np.isfinite(free_running))
    assert int(np.argmin(teacher_forced)) == 2 and int(np.argmin(free_running)) == 0
    assert summary["best_epoch"] == 0 and summary["select_on"] == "free_running_loss"


def test_a_resumed_run_keeps_the_uninterrupted_runs_best_epoch(tmp_path, monkeypatch):
    # Epoch 2's free-running validation loss is inflated x10 in both runs, so the best epoch is 0 or 1. The second
    # run stops in epoch 2's validation and is resumed: the resumed process scores epoch 2 alone, and must still
    # choose among all three epochs (its checkpoint records the best so far), as the uninterrupted run does.
    real = translation.free_running_nll

    def inflating(call_of_epoch_2, stop_at=None):
        calls = []

        def scored(model, params, batches):
            calls.append(None)
            if len(calls) == stop_at:
                raise KeyboardInterrupt
            nll, tokens = real(model, params, batches)
            return nll * (10.0 if len(calls) == call_of_epoch_2 else 1.0), tokens
        return scored

    def config(name):
        return translation.Config(**dict(translation.QUICK, epochs=3), select_on="free_running_loss",
                                  run_dir=str(tmp_path / name), quiet=True, compilation_cache=False)

    monkeypatch.setattr(translation, "free_running_nll", inflating(call_of_epoch_2=3))
    whole = translation.train(config("whole"))
    monkeypatch.setattr(translation, "free_running_nll", inflating(call_of_epoch_2=None, stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        translation.train(config("run"))
    monkeypatch.setattr(translation, "free_running_nll", inflating(call_of_epoch_2=1))  # resumed in epoch 2
    with cli.using_run_flags(cli.RunFlags(resume=True)):
        resumed = translation.train(config("run"))
    assert whole["best_epoch"] in (0, 1) and resumed["best_epoch"] == whole["best_epoch"]
    for name in ("sacrebleu", "perplexity", "free_running_perplexity"):
        assert resumed["test"]["test"][name] == whole["test"]["test"][name], name


def test_normal_init_is_tutorial_3s_init_weights():
    model = translation.make_model(translation.Config(**translation.PRESETS["bahdanau"]), 300, 400)
    default = translation.init_params(model, jax.random.key(0), "default")
    normal = translation.init_params(model, jax.random.key(0), "normal")
    assert jax.tree_util.tree_structure(default) == jax.tree_util.tree_structure(normal)
    named = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(normal)}
    biases = [name for name in named if "bias" in name]
    # bridge 1, encoder GRUs 4, decoder GRU 2, attention 1, output 1
    assert len(biases) == 9 and all(not np.any(named[name]) for name in biases)
    for name, leaf in named.items():
        if name not in biases:
            assert abs(float(np.std(leaf)) - 0.01) < 0.002 and abs(float(np.mean(leaf))) < 0.002, name
    assert float(np.std(jax.tree_util.tree_leaves(default["src_embedding"])[0])) > 0.9  # N(0, 1), PyTorch's


def test_a_quick_run_with_the_tutorials_teacher_forcing_trains(tmp_path):
    config = translation.Config(**translation.QUICK, sampling_probability=0.5, sampled_token="argmax",
                                sampling_coin="batch", init="normal", run_dir=str(tmp_path / "run"), quiet=True,
                                compilation_cache=False)
    summary = translation.train(config)
    assert np.isfinite(summary["test"]["test"]["perplexity"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["run"]["config"]
    assert (saved["sampled_token"], saved["sampling_coin"], saved["init"]) == ("argmax", "batch", "normal")


def test_drawn_attention_is_the_greedy_decoders_own():
    model = Seq2Seq(src_vocab_size=12, tgt_vocab_size=10, embed_size=6, hidden_size=5, attention="additive")
    params = model.init(jax.random.key(1))
    sources = [[5, 6, 7, 8], [9, 4]]
    src = np.zeros((2, 5), np.int32)
    for row, source in enumerate(sources):
        src[row, :len(source) + 1] = source + [EOS]
    tokens, lengths, attention = decoding.greedy_decode(model, params, src, np.array([5, 3], np.int32), bos_id=BOS,
                                                        eos_id=EOS, max_length=6)
    outputs = [np.asarray(tokens)[row, :int(lengths[row])].tolist() for row in range(2)]
    drawn = translation.output_attention(model, params, sources, outputs)
    for row, weights in enumerate(drawn):
        steps = min(len(weights), int(lengths[row]) + 1, 6)
        np.testing.assert_allclose(weights[:steps], np.asarray(attention)[row, :steps, :len(sources[row]) + 1],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    plain = Seq2Seq(src_vocab_size=12, tgt_vocab_size=10, embed_size=6, hidden_size=5, attention=None)
    assert translation.output_attention(plain, plain.init(jax.random.key(1)), sources, outputs) is None


def test_command_line(capsys):
    config = translation.parse_config(["--preset", "bahdanau", "--src", "en", "--tgt", "de"])
    assert (config.dataset, config.attention, config.hidden_size, config.src, config.tgt) == (
        "multi30k", "additive", 512, "en", "de")
    assert (config.attention_style, config.attention_size) == ("bahdanau", 512)  # tutorial 3's decoder
    assert (config.sampling_probability, config.sampled_token, config.sampling_coin, config.init,
            config.select_on) == (0.5, "argmax", "batch", "normal", "free_running_loss")  # and its training
    sutskever = translation.parse_config(["--preset", "sutskever"])
    assert (sutskever.encoder_cell, sutskever.num_layers, sutskever.attention) == ("lstm", 2, "none")
    assert translation.parse_config(["--quick"]).cldr_train_pairs == 96
    for argv, message in ((["--no-such-flag", "1"], "unrecognized arguments"),
                          (["--attention", "luong"], "--attention must be one of"),
                          (["--attention-style", "cho"], "--attention-style must be one of"),
                          (["--attention-size", "-1"], "--attention-size must be >= 0, got -1"),
                          (["--src", "en"], "--src and --tgt are both 'en'"),
                          (["--dataset", "multi30k", "--src", "cs"], "--src must be one of en, de, fr for Multi30k"),
                          (["--dataset", "multi30k", "--test-splits", "test_2019"], "no split 'test_2019'"),
                          (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
                          (["--src", "zz_QQ"], "--src language 'zz_QQ' is not a CLDR locale"),
                          (["--encoder-cell", "tree"], "--encoder-cell must be one of"),
                          (["--sampled-token", "top"], "--sampled-token must be one of"),
                          (["--sampling-coin", "step"], "--sampling-coin must be one of"),
                          (["--init", "xavier"], "--init must be one of"),
                          (["--attention", "dot"], "pass --no-bidirectional"),
                          (["--bridge", "final", "--decoder-cell", "lstm"], "--decoder-cell must match")):
        with pytest.raises(SystemExit) as exit_info:
            translation.parse_config(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
