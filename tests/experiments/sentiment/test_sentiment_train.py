"""The sentiment experiment end to end on a tiny labelled set: run directory, best-dev selection, confusion
matrix, bounded shapes, repeatability; and its command line."""

import json

import numpy as np
import pytest

from experiments.sentiment import train as sentiment
from experiments.sentiment import data as sentiment_data
from experiments.sentiment.data import BINARY, LabelledTexts


def _tiny(count, seed):
    rng = np.random.default_rng(seed)
    words = ["film", "plot", "actor", "scene", "story"]
    texts, labels = [], []
    for _ in range(count):
        label = int(rng.integers(2))
        body = list(rng.choice(words, rng.integers(1, 6)))
        body.insert(int(rng.integers(len(body) + 1)), "great" if label else "awful")
        texts.append(" ".join(body))
        labels.append(label)
    return LabelledTexts(tuple(texts), np.array(labels), BINARY)


def test_run_one_writes_a_complete_repeatable_run(tmp_path):
    config = sentiment.Config(dataset="sst2", embedding_size=8, hidden_size=8, batch_size=8, epochs=2,
                              num_buckets=2, learning_rate=0.02, quiet=True, log_every=5, compilation_cache=False)
    train, dev, test = _tiny(64, 0), _tiny(16, 1), _tiny(16, 2)
    result = sentiment.run_one(config, train, dev, test, seed=3, run_dir=tmp_path / "a", extra={})
    run = tmp_path / "a"
    for name in ("config.json", "metrics.jsonl", "result.json", "vocabulary.json", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert list((run / "best").glob("checkpoint_*"))
    assert result["train_shapes"] <= 2 and 0 <= result["best_epoch"] < 2
    assert np.sum(result["confusion_matrix"]) == 16
    valid = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"valid"' in line]
    assert result["dev_accuracy"] == max(v["dev_accuracy"] for v in valid)
    assert result["test_accuracy"] > 0.8  # the label word decides the class
    again = sentiment.run_one(config, train, dev, test, seed=3, run_dir=tmp_path / "b", extra={})
    assert again["confusion_matrix"] == result["confusion_matrix"]
    assert (run / "metrics.jsonl").read_text() != ""
    def strip(text):  # timing varies between runs; everything else must be identical
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_second"} for line in text.splitlines()]

    assert strip((run / "metrics.jsonl").read_text()) == strip((tmp_path / "b" / "metrics.jsonl").read_text())
    summary = sentiment.summarize_command(["--run", str(tmp_path)])
    assert summary["runs"] == 2 and summary["test_accuracy"]["std"] == 0.0
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_cross_validation_runs_cover_every_example_once_as_test():
    config = sentiment.Config(dataset="rt_polarity", num_folds=5)
    data = sentiment_data.SentimentDataset("x", _tiny(50, 0), None, None, {})
    runs = sentiment.splits_of(config, data)
    assert len(runs) == 5
    assert sorted(t for _, _, test, _ in runs for t in test.texts) == sorted(data.train.texts)
    for train, dev, test, extra in runs:
        assert len(train) + len(dev) + len(test) == 50


def test_command_line(capsys):
    config = sentiment.parse_config(["--preset", "sst2", "--seeds", "2", "--no-bidirectional"])
    assert config.dataset == "sst2" and config.seeds == 2 and not config.bidirectional
    assert config.embedding_size == 300
    # The measured settings of the README's table (dev-selected, see the comments at PRESETS).
    phrases = sentiment.parse_config(["--preset", "sst2-phrases"])
    assert (phrases.dataset, phrases.batch_size, phrases.epochs, phrases.num_buckets) == ("sst2_phrases", 100, 3, 8)
    fine = sentiment.parse_config(["--preset", "sst5", "--epochs", "4"])
    assert (fine.dataset, fine.batch_size, fine.epochs) == ("sst5", 25, 4)
    for argv, message in ((["--no-such-flag", "1"], "unrecognized arguments"),
                          (["--pooling", "sum"], "--pooling must be one of"),
                          (["--dataset", "yelp"], "--dataset must be one of")):
        with pytest.raises(SystemExit) as exit_info:
            sentiment.parse_config(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_short_epochs_cover_every_example_once_per_pass():
    assert sentiment.epoch_examples(10, 0, seed=1, epoch=3).tolist() == list(range(10))
    passes = [[sentiment.epoch_examples(10, 4, seed=1, epoch=e) for e in range(p * 3, p * 3 + 3)] for p in (0, 1)]
    for slices in passes:  # ceil(10 / 4) = 3 epochs per pass: 4 + 4 + 2 examples, disjoint
        assert [len(s) for s in slices] == [4, 4, 2]
        assert sorted(np.concatenate(slices).tolist()) == list(range(10))
    assert passes[0][0].tolist() != passes[1][0].tolist()  # a new order every pass
    assert sentiment.epoch_examples(10, 4, seed=1, epoch=4).tolist() == passes[1][1].tolist()  # repeatable
    fine = sentiment.parse_config(["--preset", "sst5-trees"])  # the README's measured settings
    assert (fine.dataset, fine.hidden_size, fine.epoch_size, fine.epochs) == ("sst5_trees", 100, 20_000, 8)
    assert sentiment.parse_config(["--preset", "sst2-trees"]).dataset == "sst2_trees"
