"""Metric writers: `fit` sends every record to them; TensorBoard event files read back with the scalars logged,
CSV rows per split."""

import csv

import jax
import optax
import pytest

import toy_training
from helpers import read_scalars
from rnnjax.train import TrainerConfig
from rnnjax.train.writers import CSVWriter, TensorBoardWriter


def test_tensorboard_writer_round_trip(tmp_path):
    pytest.importorskip("tensorboardX")
    writer = TensorBoardWriter(tmp_path)
    writer.write({"split": "train", "step": 5, "epoch": 0, "loss": 1.5, "grad_norm": 2.0})
    writer.write({"split": "valid", "step": 5, "epoch": 0, "accuracy": 0.75})
    writer.close()
    scalars = read_scalars(tmp_path)
    assert scalars == {"train/loss": [(5, 1.5)], "train/grad_norm": [(5, 2.0)], "valid/accuracy": [(5, 0.75)]}


def test_fit_writes_tensorboard_events_and_csv(tmp_path):
    pytest.importorskip("tensorboardX")
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    config = TrainerConfig(run_dir=str(tmp_path), num_epochs=2, log_every=2, quiet=True, plots=False,
                           tensorboard=True, csv=True)
    state, _ = toy_training.fit(config, toy_training.make_state(0, optimizer),
                                toy_training.train_step_fn(toy_training.loss_fn, optimizer),
                                lambda epoch: toy_training.batches(0, epoch),
                                evaluate=lambda params: {"norm": jax.numpy.sum(params["dense"])})
    scalars = read_scalars(tmp_path / "tensorboard")
    steps = [step for step, _ in scalars["train/loss"]]
    assert steps == sorted(steps) and steps[-1] == int(state.step)
    assert len(scalars["valid/norm"]) == 2  # one per epoch
    with (tmp_path / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows] == steps
    assert (tmp_path / "metrics.valid.csv").read_text().startswith("split,step,epoch,norm")


def test_csv_writer_keeps_the_first_records_columns(tmp_path):
    writer = CSVWriter(tmp_path / "m.csv")
    writer.write({"split": "train", "step": 1, "loss": 2.0})
    writer.write({"split": "train", "step": 2, "loss": 1.0, "extra": 3.0})  # a new column is dropped
    assert (tmp_path / "m.csv").read_text().splitlines() == ["split,step,loss", "train,1,2.0", "train,2,1.0"]
