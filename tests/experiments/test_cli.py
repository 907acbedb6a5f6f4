"""Every experiment's command line rejects a bad value before it touches data or disk: exit status 2, one line on
stderr naming the flag the user typed, no traceback, no run directory."""

import dataclasses
import subprocess
import sys

import pytest
from helpers import read_scalars

from experiments import cli, gradient_flow, quickstart
from experiments.forecasting import train as forecasting
from experiments.language_modeling import train as language_modeling
from experiments.sentiment import train as sentiment

# (experiment, arguments, what the one line must say). Most of these used to pass parsing and fail only after the
# data was loaded and the run directory written (the optimizer, the sampling and the file settings), or with a
# field's name instead of its flag.
BAD_VALUES = [
    (language_modeling, ["--hidden-size", "0"], "--hidden-size must be >= 1, got 0"),
    (language_modeling, ["--learning-rate", "-1"], "--learning-rate must be > 0, got -1.0"),
    (language_modeling, ["--schedule", "linear"], "--schedule must be one of ('constant', 'step_decay', 'cosine')"),
    (language_modeling, ["--temperature", "0"], "--temperature must be > 0, got 0.0"),
    (language_modeling, ["--top-k", "-1"], "--top-k must be >= 0, got -1"),
    (language_modeling, ["--level", "byte"], "--level must be one of ('char', 'word'), got 'byte'"),
    (language_modeling, ["--tie-weights", "--embedding-size", "8"],
     "--tie-weights needs --embedding-size == --hidden-size, got 8 and 256"),
    (sentiment, ["--dev-fraction", "1.5"], "--dev-fraction must be in (0, 1), got 1.5"),
    (sentiment, ["--optimizer", "rmsprop"], "--optimizer must be one of ('sgd', 'adam', 'adamw'), got 'rmsprop'"),
    (sentiment, ["--tokenizer", "bytes"], "--tokenizer must be one of ('whitespace', 'words', 'chars')"),
    (sentiment, ["--embeddings", "no-such-glove.txt"], "--embeddings 'no-such-glove.txt' is not a file"),
    (forecasting, ["--model", "seq2seq", "--scheduled-sampling-rate", "1.5"],
     "--scheduled-sampling-rate must be in [0, 1), got 1.5"),
    (forecasting, ["--learning-rate", "0"], "--learning-rate must be > 0, got 0.0"),
    (forecasting, ["--fill", "mean"], "--fill must be one of ('interpolate', 'ffill', 'zero'), got 'mean'"),
    (forecasting, ["--patch-length", "5"], "--patch-length must divide --lookback"),
    (quickstart, ["--time", "1"], "--time must be >= 2"),
    (quickstart, ["--max-grad-norm", "0"], "--max-grad-norm must be > 0, got 0.0"),
    (gradient_flow, ["--num-seeds", "0"], "--num-seeds must be >= 1, got 0"),
    (gradient_flow, ["--times", "50,-3"], "every T (--times, --grad-time, --explode-time) must be >= 2"),
    (language_modeling, ["--hidden-size", "many"], "argument --hidden-size: invalid int value: 'many'"),
    (sentiment, ["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag 1"),
]


@pytest.fixture
def no_data(monkeypatch):
    """Any data loading fails the test: validation must come first."""
    def touched(*args, **kwargs):
        raise AssertionError("the experiment loaded data before validating its config")

    monkeypatch.setattr(language_modeling, "load_corpus", touched)
    monkeypatch.setattr(sentiment.sentiment_data, "load_sentiment", touched)
    monkeypatch.setattr(forecasting, "load_series", touched)
    monkeypatch.setattr(quickstart, "run", touched)
    monkeypatch.setattr(gradient_flow, "run", touched)


@pytest.mark.parametrize("experiment, argv, message", BAD_VALUES,
                         ids=[f"{e.__name__.split('.')[1]}{'-'.join(a)}" for e, a, _ in BAD_VALUES])
def test_a_bad_value_exits_2_with_one_line_naming_the_flag(experiment, argv, message, tmp_path, capsys, no_data):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(argv + ["--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing printed: not even the config
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m experiments."), captured.err
    assert message in lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize("experiment", [language_modeling, sentiment, forecasting, quickstart, gradient_flow])
def test_a_run_dir_that_is_a_file_is_rejected_before_anything_runs(experiment, tmp_path, capsys, no_data):
    occupied = tmp_path / "results.txt"
    occupied.write_text("someone's results")
    for run_dir, message in ((occupied, "exists and is not a directory"),
                             (occupied / "run", "cannot be created: ")):
        with pytest.raises(SystemExit) as exit_info:
            experiment.main(["--run-dir", str(run_dir)])
        assert exit_info.value.code == 2
        line, = capsys.readouterr().err.splitlines()
        assert f"--run-dir '{run_dir}' " in line and message in line
    assert occupied.read_text() == "someone's results"


def test_the_subcommands_reject_bad_values_too(tmp_path, capsys):
    for argv, message in ((["sample", "--run", str(tmp_path), "--length", "0"], "--length must be >= 1, got 0"),
                          (["sample", "--run", str(tmp_path)], "is not a run directory (it has no config.json)")):
        with pytest.raises(SystemExit) as exit_info:
            language_modeling.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        sentiment.main(["summarize", "--run", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "is not a directory" in capsys.readouterr().err


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.quickstart", "--hidden-size", "-4", "--run-dir",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "python -m experiments.quickstart: error: --hidden-size must be >= 1, got -4 (see --help)\n"
    assert not (tmp_path / "run").exists()


def test_field_names_become_flags_as_whole_words_only():
    fields = ["max_grad_norm", "grad", "lookback", "patch_length"]
    assert cli.flag_message("patch_length must divide lookback, got patch_length 5", fields) == (
        "--patch-length must divide --lookback, got --patch-length 5")
    assert cli.flag_message("max_grad_norm must be > 0 (grad clipping; lookbacks)", fields) == (
        "--max-grad-norm must be > 0 (--grad clipping; lookbacks)")


TRAINING = {"language_modeling": language_modeling, "sentiment": sentiment, "forecasting": forecasting,
            "quickstart": quickstart}


def experiment_modules():
    from experiments.sequential_mnist import train as sequential_mnist
    from experiments.speech import train as speech

    return TRAINING | {"sequential_mnist": sequential_mnist, "speech": speech}


@pytest.mark.parametrize("name", ["language_modeling", "sentiment", "forecasting", "quickstart", "sequential_mnist",
                                  "speech"])
def test_help_shows_comments_defaults_choices_presets_subcommands_and_the_run_flags(name, capsys):
    experiment = experiment_modules()[name]
    with pytest.raises(SystemExit) as exit_info:
        experiment.parse_config(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with spaces collapsed
    comments = cli.field_comments(experiment.Config)
    assert set(comments) == {field.name for field in dataclasses.fields(experiment.Config)}  # one per field
    assert f"--seed SEED {comments['seed']}; default: 0" in text
    assert f"{comments['run_dir']}; default: '{experiment.Config().run_dir}'" in text
    for flag_name in ("--quick", "--resume", "--overwrite", "--tensorboard", "--csv"):
        assert flag_name in text
    presets = getattr(experiment, "PRESETS", {})
    if presets:
        assert "presets (--preset NAME; flags given override them):" in text
        assert all(f" {preset} " in text for preset in presets)
    expected = {"language_modeling": "subcommands (their own --help): sample sample text from a finished run",
                "sentiment": "subcommands (their own --help): summarize mean/std over the finished runs",
                "quickstart": "--mode MODE \"lstm\" | \"gru\" | \"rnn_tanh\" | \"rnn_relu\"; choices: lstm, gru, "
                              "rnn_tanh, rnn_relu; default: 'lstm'"}
    if name in expected:
        assert expected[name] in text


def test_field_comments_read_continuation_lines():
    comments = cli.field_comments(forecasting.Config)
    assert comments["model"].startswith('"direct" (encoder -> dense head)') and '"segrnn"' in comments["model"]


def test_a_previous_run_is_refused_before_any_data_loads(tmp_path, capsys, no_data):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"split": "train", "step": 1, "loss": 1.0}\n')
    for experiment in TRAINING.values():
        with pytest.raises(SystemExit) as exit_info:
            experiment.main(["--run-dir", str(run_dir)])
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        line, = captured.err.splitlines()
        assert captured.out == ""
        assert (f"error: --run-dir '{run_dir}' holds a previous run (metrics.jsonl); pass --resume to continue it, "
                f"--overwrite to delete it and start over, or another --run-dir") in line
        with pytest.raises(SystemExit):
            experiment.main(["--run-dir", str(run_dir), "--resume", "--overwrite"])
        assert "--resume and --overwrite exclude each other" in capsys.readouterr().err
    subrun = tmp_path / "multi" / "seed0"  # experiments with one run directory per seed/cell/fold
    subrun.mkdir(parents=True)
    (subrun / "config.json").write_text("{}")
    with pytest.raises(SystemExit):
        sentiment.main(["--run-dir", str(tmp_path / "multi")])
    assert f"'{subrun}' holds a previous run (config.json)" in capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 1  # untouched


def test_overwrite_resume_tensorboard_and_csv_reach_fit(tmp_path, capsys):
    """A tiny quickstart run with --tensorboard --csv: the event files hold the logged scalars; run again with
    --overwrite it replaces the run, and with --resume it continues the finished one (no new steps)."""
    run_dir = tmp_path / "run"
    argv = ["--quick", "--quiet", "--run-dir", str(run_dir), "--tensorboard", "--csv"]
    first = quickstart.main(argv)
    scalars = read_scalars(run_dir / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [5, 10, 15, 20] and "valid/test_mse" in scalars
    assert (run_dir / "metrics.csv").read_text().startswith("split,step,epoch,grad_norm,loss,")
    again = quickstart.main(argv + ["--overwrite"])
    assert again["test_mse"] == first["test_mse"]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1  # the old events went too
    resumed = quickstart.main(["--quick", "--quiet", "--run-dir", str(run_dir), "--resume"])
    assert resumed["test_mse"] == first["test_mse"] and resumed["steps"] == first["steps"]


def test_format_table_aligns_two_columns_and_flattens_nested_results():
    table = cli.format_table({"test": {"model": {"mse": 0.123456789}}, "steps": 20, "rate": 1.0,
                              "cells": ["lstm", "gru"], "long": list(range(100))}, title="result")
    assert table.splitlines() == ["== result ==", "test.model.mse  0.123457", "steps           20",
                                  "rate            1.0", 'cells           ["lstm", "gru"]',
                                  "long            [100 values]"]
