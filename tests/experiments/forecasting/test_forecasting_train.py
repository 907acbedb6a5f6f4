"""The forecasting experiment: a tiny end-to-end run, repeatability, the run directory, and rejected configs."""

import json
import re
import shutil

import numpy as np
import pytest

from experiments.forecasting import train as forecasting
from rnnjax.train import run_files

pytest.importorskip("statsmodels")  # the embedded default series ships with statsmodels

TINY = ["--dataset", "co2", "--lookback", "16", "--horizon", "4", "--patch-length", "4", "--hidden-size", "4",
        "--epochs", "2", "--max-steps-per-epoch", "3", "--batch-size", "8", "--eval-batch-size", "512",
        "--log-every", "1", "--quiet"]


def test_tiny_run_is_repeatable_and_writes_the_run_directory(capsys, tmp_path):
    first = forecasting.main(TINY + ["--run-dir", str(tmp_path / "a")])
    output = capsys.readouterr().out
    assert re.search(r"^dataset +co2$", output, re.M) and re.search(r"^seed +0$", output, re.M)  # config table
    assert "repeat_last" in output
    second = forecasting.main(TINY + ["--run-dir", str(tmp_path / "b")])
    assert first["test"] == second["test"] and first["test_by_step"] == second["test_by_step"]
    assert set(first["test"]) == {"model", "repeat_last", "seasonal_naive", "linear", "nlinear"} - (
        set() if first["lookback"] >= 52 else {"seasonal_naive"})
    assert set(first["linear_ridge"]) == {"linear", "nlinear"}  # penalties picked on the validation windows
    run = tmp_path / "a"
    for name in ("config.json", "metrics.jsonl", "results.json", "plots/forecasts.png", "plots/error_by_step.png"):
        assert (run / name).exists(), name
    assert list((run / "best").glob("checkpoint_*")) and list((run / "checkpoints").glob("checkpoint_*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert set(run_files.curves(records)["mse"]) == {"train", "valid"}  # one plot: the train loss is the MSE
    assert (run / "plots" / "mse.png").exists() and not (run / "plots" / "loss.png").exists()
    saved = json.loads((run / "results.json").read_text())
    assert len(saved["test_by_step"]["model"]["mse"]) == 4 and first["steps"] == 6
    third = forecasting.main(TINY + ["--run-dir", str(tmp_path / "c"), "--seed", "1"])
    assert third["test"]["model"] != first["test"]["model"]
    assert third["test"]["linear"] == first["test"]["linear"]  # baselines do not depend on the seed


def test_seq2seq_with_covariates_and_scheduled_sampling(tmp_path):
    report = forecasting.main(TINY + ["--model", "seq2seq", "--covariates", "--scheduled-sampling-rate", "0.3",
                                      "--mode", "lstm", "--epochs", "1", "--run-dir", str(tmp_path / "s")])
    assert np.isfinite(report["test"]["model"]["mse"])


def test_segrnn_run_reports_the_lookback_96_references(tmp_path):
    report = forecasting.main(["--dataset", "co2", "--model", "segrnn", "--lookback", "16", "--horizon", "8",
                               "--patch-length", "4", "--hidden-size", "4", "--dropout-rate", "0.5", "--no-revin",
                               "--epochs", "2", "--max-steps-per-epoch", "2", "--batch-size", "8",
                               "--lr-decay-start-epoch", "1", "--lr-decay-factor", "0.5", "--eval-batch-size", "512",
                               "--quiet", "--run-dir", str(tmp_path / "s")])
    assert np.isfinite(report["test"]["model"]["mse"]) and report["model"] == "segrnn" and report["steps"] == 4
    assert report["references"] == {}  # co2 has no published rows
    config = forecasting.parse_config(["--preset", "etth2-segrnn", "--horizon", "336"])
    assert (config.model, config.lookback, config.patch_length, config.hidden_size, config.learning_rate) == (
        "segrnn", 96, 24, 512, 2e-4)
    references = forecasting.published_references(config)
    assert references["SegRNN"][336] == (0.421, 0.436) and references["DLinear"][336] == (0.594, 0.541)
    assert set(forecasting.PRESETS) >= {"etth1-segrnn", "etth2-segrnn", "ettm1-segrnn", "ettm2-segrnn"}


@pytest.mark.parametrize("argv, message", [
    (["--model", "segrnn", "--lookback", "16", "--horizon", "6", "--patch-length", "4"],
     "--patch-length must divide --horizon for --model='segrnn'"),
    (["--model", "segrnn", "--covariates"], "covariates apply to --model='direct' or 'seq2seq' only"),
    (["--model", "segrnn", "--num-layers", "2"], "--num-layers != 1"),
    (["--model", "segrnn", "--lookback", "16", "--horizon", "8", "--hidden-size", "5"], "must be even, got 5"),
    (["--lr-decay-start-epoch", "-1"], "--lr-decay-start-epoch must be"),
    (["--hidden", "8"], "unrecognized arguments: --hidden 8"),
    (["--dataset", "ETTh9"], "unknown --dataset 'ETTh9'; known: ETTh1"),
    (["--lookback", "10", "--patch-length", "4"], "--patch-length must divide --lookback"),
    (["--scheduled-sampling-rate", "0.2"], "--scheduled-sampling-rate applies to --model='seq2seq' only"),
])
def test_rejected_configurations(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        forecasting.parse_config(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_horizon_longer_than_a_split_is_a_clear_error(tmp_path):
    config = forecasting.parse_config(["--dataset", "nile", "--lookback", "8", "--horizon", "12", "--patch-length",
                                       "1", "--run-dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"the valid split \(rows \[70, 80\), 10 rows\).*horizon 12"):
        forecasting.build_data(config)


def test_a_resumed_run_reports_what_the_uninterrupted_run_reports(tmp_path):
    whole = forecasting.main(TINY + ["--run-dir", str(tmp_path / "whole")])
    interrupted = tmp_path / "interrupted"
    forecasting.main(TINY + ["--run-dir", str(interrupted)])
    shutil.rmtree(interrupted / "checkpoints" / "checkpoint_000000006")  # as if killed during epoch 1
    resumed = forecasting.main(TINY + ["--run-dir", str(interrupted), "--resume"])
    # The resumed process scores epoch 1 only; the best epoch is still chosen among both, and labelled as such.
    assert resumed["steps"] == whole["steps"] == 6
    assert (resumed["best_epoch"], resumed["best_valid_mse"]) == (whole["best_epoch"], whole["best_valid_mse"])
    assert resumed["test"] == whole["test"] and resumed["test_by_step"] == whole["test_by_step"]
