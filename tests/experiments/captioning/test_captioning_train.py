"""Captioning: canvases keep the digits apart and in reading order, captions are BOS/words/EOS, BLEU and the caption
metrics against hand-worked values, the CNN's grid shape, bad flags exit 2, and a --quick run end to end on a
200-image IDX fixture."""

import json

import numpy as np
import pytest

from helpers import write_mnist_fixture
from experiments.captioning import data
from experiments.captioning import train as captioning


def test_canvases_place_the_digits_apart_in_reading_order_and_repeat_for_a_seed():
    images = np.stack([np.full((28, 28), 10 * (i + 1), np.uint8) for i in range(10)])
    labels = np.arange(10, dtype=np.uint8)
    counts = np.array([2, 3, 4, 5, 5])
    canvases, digits, boxes = data.make_canvases(images, labels, counts, np.random.default_rng(0))
    again = data.make_canvases(images, labels, counts, np.random.default_rng(0))[0]
    assert np.array_equal(canvases, again) and canvases.shape == (5, data.HEIGHT, data.WIDTH)
    for i, k in enumerate(counts):
        lefts = boxes[i, :k, 1]
        assert np.all(np.diff(lefts) >= data.DIGIT)  # no overlap, left to right
        assert lefts[-1] + data.DIGIT <= data.WIDTH and np.all(digits[i, k:] == -1)
        for j in range(k):
            top, left = boxes[i, j]
            patch = canvases[i, top:top + 28, left:left + 28]
            assert np.allclose(patch, 10 * (digits[i, j] + 1) / 255.0)  # the digit drawn is the one named
        assert np.isclose(canvases[i].sum(), sum(10 * (d + 1) / 255.0 * 784 for d in digits[i, :k]))
    with pytest.raises(ValueError, match=r"digit counts must lie in \[2, 5\]"):
        data.make_canvases(images, labels, np.array([1]), np.random.default_rng(0))


def test_captions_are_bos_words_eos():
    inputs, targets, lengths = data.captions(np.array([[7, 3, -1, -1, -1], [1, 2, 3, 4, 5]]))
    assert inputs[0, :3].tolist() == [data.BOS, 9, 5] and targets[0, :3].tolist() == [9, 5, data.EOS]
    assert lengths.tolist() == [3, 6] and targets[1].tolist() == [3, 4, 5, 6, 7, data.EOS]
    assert data.caption_text(targets[0]) == "seven three"


def test_bleu_and_caption_metrics_on_worked_examples():
    reference = "one two three four five".split()
    assert captioning.corpus_bleu([reference], [reference]) == pytest.approx(1.0)
    # One wrong word of five: precisions 4/5, 2/4, 1/3, 0/2 -> no 4-gram match -> 0 (unsmoothed).
    assert captioning.corpus_bleu([reference], ["one two nine four five".split()]) == 0.0
    # Brevity: a correct 4-word prefix: precisions 1, BP = exp(1 - 5/4).
    assert captioning.corpus_bleu([reference], [reference[:4]]) == pytest.approx(np.exp(1 - 5 / 4))
    _, targets, lengths = data.captions(np.array([[1, 2, 3, 4, -1], [5, 6, -1, -1, -1]]))
    tokens = targets.copy()
    tokens[1, 1] = 2  # the second caption's last word wrong
    metrics = captioning.caption_metrics(tokens, targets, lengths)
    assert metrics["exact_match"] == 0.5 and metrics["token_accuracy"] == pytest.approx(7 / 8)
    assert metrics["bleu4"] == pytest.approx(1.0)  # only the 4-digit caption counts, and it is right


def test_the_cnn_gives_the_grid_and_both_decoders_take_it():
    import jax
    import jax.numpy as jnp
    for decoder in captioning.DECODERS:
        config = captioning.Config(decoder=decoder, hidden_size=8, embed_size=4, attention_size=4, vector_size=8)
        model = captioning.Captioner(config)
        params = model.init(jax.random.key(0))
        features = model.features(params, jnp.zeros((2, data.HEIGHT, data.WIDTH)))
        expected = (2, captioning.GRID[0] * captioning.GRID[1], 64 + 4 + 18) if decoder == "attention" else (2, 8)
        assert features.shape == expected
        if decoder == "attention":  # location 19 = row 1, column 1
            assert np.asarray(features[0, 19, 64:]).tolist() == [0, 1, 0, 0] + [0, 1] + [0] * 16


def test_bad_flags_exit_2_with_one_line(capsys):
    for argv, expected in ((["--decoder", "grid"], "--decoder must be one of"), (["--steps", "0"], "--steps must be")):
        with pytest.raises(SystemExit) as exit_info:
            captioning.parse_config(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1


def test_quick_run_end_to_end(tmp_path, monkeypatch):
    write_mnist_fixture(tmp_path / "mnist", monkeypatch, count=200)
    run_dir = tmp_path / "run"
    result = captioning.main(["--quick", "--data-dir", str(tmp_path), "--run-dir", str(run_dir)])
    assert set(result["test"]) == {"all", "2", "3", "4", "5"} and set(result["test_beam"]) == {"2", "3", "4", "5"}
    assert result["figures"] == ["attention.png"] and (run_dir / "attention.png").stat().st_size > 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "valid"] == [2, 4]
    assert 0.0 <= result["attention_on_named_digit"] <= 1.0
    # A re-run into the same directory is refused before any data loads; --overwrite is the way through.
    config_before = (run_dir / "config.json").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        captioning.main(["--quick", "--data-dir", str(tmp_path), "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    assert (run_dir / "config.json").read_bytes() == config_before
