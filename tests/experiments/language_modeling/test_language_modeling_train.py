"""The language-modeling experiment end to end on the embedded corpus with a tiny model: it trains, evaluates,
samples, is repeatable, resumes its vocabulary checks, and rejects bad input."""

import json

import pytest

from experiments import text
from experiments.language_modeling import train as lm

TINY = ["--hidden-size", "16", "--embedding-size", "8", "--num-layers", "1", "--epochs", "1",
        "--max-steps-per-epoch", "4", "--batch-size", "8", "--num-steps", "16", "--log-every", "2",
        "--sample-length", "20", "--quiet", "--eval-num-steps", "400"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lm")
    return run_dir, lm.main(TINY + ["--run-dir", str(run_dir)])


def test_a_tiny_run_trains_evaluates_and_samples(tiny_run):
    run_dir, result = tiny_run
    assert result["steps"] == 4
    for split in ("valid", "test"):
        assert result[f"{split}_perplexity"] == pytest.approx(2 ** result[f"{split}_bits_per_token"], rel=1e-9)
    assert len(result["sample"]) >= 20
    for name in ("config.json", "vocabulary.json", "metrics.jsonl", "summary.json", "result.json"):
        assert (run_dir / name).is_file(), name
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"perplexity", "bits_per_token", "token_loss", "accuracy"} <= set(metrics[0])
    config = json.loads((run_dir / "config.json").read_text())["run"]
    assert config["corpus"]["name"] == "pydoc" and "sha256" in json.dumps(config["corpus"])


def test_runs_are_repeatable(tiny_run, tmp_path):
    _, result = tiny_run
    again = lm.main(TINY + ["--run-dir", str(tmp_path)])
    assert again["valid_loss"] == result["valid_loss"] and again["sample"] == result["sample"]


def test_sample_command_is_deterministic_by_seed(tiny_run, capsys):
    run_dir, _ = tiny_run
    first = lm.main(["sample", "--run", str(run_dir), "--prime", "The ", "--length", "30", "--seed", "3"])
    second = lm.main(["sample", "--run", str(run_dir), "--prime", "The ", "--length", "30", "--seed", "3"])
    assert first == second and first.startswith("The ")
    greedy = lm.main(["sample", "--run", str(run_dir), "--prime", "The ", "--length", "30", "--top-k", "1"])
    assert greedy == lm.main(["sample", "--run", str(run_dir), "--prime", "The ", "--length", "30", "--top-k", "1",
                              "--seed", "9"])  # greedy decoding ignores the seed


def test_bad_prime_and_a_vocabulary_from_another_run(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    with pytest.raises(ValueError, match="prime text has tokens not in the run's vocabulary: \\['☃'\\]"):
        lm.main(["sample", "--run", str(run_dir), "--prime", "a☃"])
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json",):
        (other / name).write_text((run_dir / name).read_text())
    (other / "checkpoints").symlink_to(run_dir / "checkpoints")
    text.Vocabulary.build(list("a different run")).save(other / "vocabulary.json")
    with pytest.raises(ValueError, match="fingerprint"):
        lm.main(["sample", "--run", str(other)])


def test_presets_are_zarembas_published_hyperparameters():
    small = lm.parse_config(["--preset", "zaremba-small"])
    assert (small.num_layers, small.hidden_size, small.init_scale, small.learning_rate, small.max_grad_norm,
            small.num_steps, small.batch_size, small.epochs, small.decay_start_epoch, small.decay_factor,
            small.dropout_rate, small.optimizer, small.sum_loss_over_steps) == (
        2, 200, 0.1, 1.0, 5.0, 20, 20, 13, 4, 0.5, 0.0, "sgd", True)
    medium = lm.parse_config(["--preset", "zaremba-medium", "--epochs", "2"])  # flags override a preset
    assert (medium.hidden_size, medium.dropout_rate, medium.num_steps, medium.decay_start_epoch,
            medium.decay_factor, medium.init_scale, medium.epochs) == (650, 0.5, 35, 6, 0.8, 0.05, 2)
    large = lm.parse_config(["--preset", "zaremba-large"])
    assert (large.hidden_size, large.dropout_rate, large.max_grad_norm, large.epochs) == (1500, 0.65, 10.0, 55)


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "8"], "unrecognized arguments"),
    (["--level", "byte"], "--level must be one of ('char', 'word')"),
    (["--tie-weights", "--embedding-size", "8", "--hidden-size", "16"], "--tie-weights needs"),
])
def test_bad_configuration_is_rejected_before_any_data_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        lm.parse_config(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
