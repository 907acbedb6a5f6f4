"""Every experiment's command line rejects a bad value before it touches data or disk: exit status 2, one line on
stderr naming the flag the user typed, no traceback, no run directory."""

import subprocess
import sys

import pytest

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
