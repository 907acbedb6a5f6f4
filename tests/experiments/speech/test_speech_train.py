"""The speech experiment end to end on a tiny synthetic FSDD (--quick): classification on the standard split, CTC
with one speaker held out (posteriors figure, greedy and beam decoding); error rates; the command line."""

import json

import numpy as np
import pytest

from experiments.speech import train as speech


def test_quick_classification_run(tiny_fsdd, tmp_path):
    summary = speech.main(["--quick", "--data-dir", str(tiny_fsdd), "--run-dir", str(tmp_path / "run")])
    (result,) = summary["runs"]
    assert result["examples"] == {"train": 12, "dev": 6, "test": 6}
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["steps"] == 2 * 3
    run = tmp_path / "run" / "standard"
    for name in ("config.json", "metrics.jsonl", "result.json"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "config.json").read_text())["run"]
    assert saved["examples"] == result["examples"] and len(saved["normalizer_mean"]) == 40
    again = speech.main(["--quick", "--data-dir", str(tiny_fsdd), "--run-dir", str(tmp_path / "again")])

    def metrics(path):  # timing varies between runs; everything else is identical, bit for bit
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_second"}
                for line in (path / "standard" / "metrics.jsonl").read_text().splitlines()]

    assert metrics(tmp_path / "run") == metrics(tmp_path / "again")
    assert again["runs"][0]["test_accuracy"] == result["test_accuracy"]


def test_quick_ctc_run_leaving_one_speaker_out(tiny_fsdd, tmp_path):
    summary = speech.main(["--quick", "--task", "ctc", "--stack-frames", "2", "--protocol", "loso",
                           "--speakers", "jackson", "--data-dir", str(tiny_fsdd), "--run-dir", str(tmp_path / "r")])
    (result,) = summary["runs"]
    assert result["run"] == "loso_jackson" and result["test_speakers"] == ["jackson"]
    for decoder in ("test_greedy", "test_beam"):
        assert result[decoder]["digit_error_rate"] >= 0.0 and 0.0 <= result[decoder]["string_accuracy"] <= 1.0
    assert (tmp_path / "r" / "loso_jackson" / "ctc_posteriors.png").stat().st_size > 1000
    assert summary["test_beam_digit_error_rate"]["n"] == 1


def test_error_rates():
    rates = speech.error_rates([(1, 2, 3), (4, 5)], [(1, 3), (4, 5)])
    assert rates == {"digit_error_rate": 0.2, "string_accuracy": 0.5, "edits": 1, "digits": 5}


def test_batches_bucket_lengths_and_offset_ctc_labels():
    config = speech.Config(task="ctc", batch_size=2, max_digits=3)
    examples = speech.Examples([np.ones((n, 4), np.float32) for n in (3, 5, 9)], [(0, 9), (4,), (1, 1, 2)],
                               ["a"] * 3, [None] * 3)
    batches = speech.make_batches(config, examples, boundaries=(5, 9))
    assert [b["features"].shape for b in batches] == [(2, 5, 4), (2, 9, 4)]
    first = batches[0]
    assert first["labels"].tolist() == [[1, 10, 0], [5, 0, 0]] and first["label_lengths"].tolist() == [2, 1]
    assert batches[1]["mask"].tolist() == [True, False] and batches[1]["features"][0, :9].sum() == 36


def test_command_line(capsys):
    config = speech.parse_config(["--preset", "ctc", "--protocol", "loso", "--speakers", "theo,lucas"])
    assert (config.task, config.stack_frames, config.speaker_names) == ("ctc", 3, ("theo", "lucas"))
    assert speech.parse_config([]).task == "classify"
    for argv, message in [(["--no-such-flag", "1"], "unrecognized arguments"),
                          (["--speakers", "alice"], "--speakers must be one of"),
                          (["--min-digits", "5", "--max-digits", "4"], "--min-digits (5) must be <= --max-digits"),
                          (["--pooling", "sum"], "--pooling must be one of"),
                          (["--data-dir", "/no/such/folder"], "--data-dir '/no/such/folder' is not a directory")]:
        with pytest.raises(SystemExit) as exit_info:
            speech.parse_config(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
