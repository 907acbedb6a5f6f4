"""The training loop end to end on the toy run of tests/toy_training.py: it learns, it is deterministic, it survives
SIGKILL and a corrupted checkpoint, it stops on repeated NaNs, and it writes the run directory people expect."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import rnnjax

import toy_training
from helpers import assert_trees_equal
from rnnjax.train.checkpoint import CheckpointDirectory
from rnnjax.train.loop import NonFiniteError, TrainerConfig
from rnnjax.train.run_files import PreviousRunError

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMING_FIELDS = ("steps_per_second", "tokens_per_second")


def metric_lines(run_dir):
    lines = [json.loads(line) for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS} for line in lines]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted 3-epoch run (18 steps), shared by the tests that compare against it."""
    run_dir = tmp_path_factory.mktemp("reference")
    state, summary = toy_training.run(run_dir)
    return run_dir, state, summary


def test_the_toy_model_learns(reference_run):
    run_dir, _, summary = reference_run
    losses = [line["loss"] for line in metric_lines(run_dir) if line["split"] == "train"]
    assert summary["steps"] == 18 and len(losses) == 9
    assert losses[-1] < losses[0] / 2, losses  # the loop trains: the loss at least halves in 18 steps


def test_two_runs_with_one_seed_are_identical(reference_run, tmp_path):
    run_dir, state, _ = reference_run
    again, _ = toy_training.run(tmp_path)
    assert_trees_equal(again.params, state.params)
    assert_trees_equal(again.opt_state, state.opt_state)
    assert metric_lines(tmp_path) == metric_lines(run_dir)
    other_seed, _ = toy_training.run(tmp_path / "other", seed=1)
    assert not np.array_equal(other_seed.params["dense"], state.params["dense"])


def test_run_directory(reference_run):
    run_dir, _, summary = reference_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"] == {"seed": 0, "toy": True} and config["trainer"]["num_epochs"] == 3
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    first = metric_lines(run_dir)[0]
    assert {"split", "step", "epoch", "loss", "mae", "grad_norm", "skipped"} <= set(first)
    assert sorted(CheckpointDirectory(run_dir / "checkpoints").steps()) == [16, 18]  # keep_checkpoints=2


def test_plots_are_drawn(tmp_path):
    optimizer = toy_training.make_optimizer(toy_training.OptimizerConfig(max_grad_norm=1.0))
    state = toy_training.make_state(0, optimizer)
    config = TrainerConfig(run_dir=str(tmp_path), num_epochs=1, log_every=2, quiet=True, plots=True)
    toy_training.fit(config, state, toy_training.train_step_fn(toy_training.loss_fn, optimizer),
                     lambda epoch: toy_training.batches(0, epoch), resume=False)
    for name in ("loss", "grad_norm", "mae"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigkill_then_resume_reproduces_the_uninterrupted_run(reference_run, tmp_path):
    _, reference_state, _ = reference_run
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                                               str(ROOT / "tests" / "train")]))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "train" / "toy_training.py"), str(tmp_path), "--sleep", "0.4"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    checkpoints = tmp_path / "checkpoints"
    deadline = time.monotonic() + 120
    while not CheckpointDirectory(checkpoints).steps():  # a committed step: orbax renames it complete
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    steps = CheckpointDirectory(checkpoints).steps()
    assert steps and max(steps) < 18  # killed mid-run, after at least one checkpoint
    resumed, summary = toy_training.run(tmp_path)
    assert summary["steps"] == 18
    assert_trees_equal(resumed.params, reference_state.params)
    assert_trees_equal(resumed.opt_state, reference_state.opt_state)
    assert_trees_equal(resumed.carry, reference_state.carry)


def test_a_truncated_latest_checkpoint_is_skipped(reference_run, tmp_path):
    _, reference_state, _ = reference_run
    toy_training.run(tmp_path, epochs=2)  # checkpoints at steps 8 and 12
    latest = tmp_path / "checkpoints" / "checkpoint_000000012"
    victim = max((p for p in latest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="checkpoint_000000012"):
        resumed, summary = toy_training.run(tmp_path)  # falls back to step 8, trains on to 18
    assert summary["steps"] == 18
    assert_trees_equal(resumed.params, reference_state.params)


def test_repeated_non_finite_steps_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    # Batches from global index 5 on give a NaN loss: step 5 is the last good one.
    with pytest.raises(NonFiniteError, match="3 consecutive steps had a non-finite loss or gradient"):
        toy_training.run(tmp_path / "poisoned", poison_from=5, max_bad_steps=3, checkpoint_every=4)
    template = toy_training.make_state(0, toy_training.make_optimizer(toy_training.OptimizerConfig()))
    state, _, step = CheckpointDirectory(tmp_path / "poisoned" / "checkpoints").restore_latest(template)
    assert step == 6  # the end-of-epoch checkpoint, written after the skipped step 6
    assert int(state.skipped_steps) == 1
    # its params are those after step 5 of a clean run: the bad step changed nothing
    toy_training.run(tmp_path / "clean", epochs=1, checkpoint_every=5)
    clean, _, clean_step = CheckpointDirectory(tmp_path / "clean" / "checkpoints").restore_latest(template)
    assert clean_step == 6
    clean_5 = toy_training.checkpoint_params(tmp_path / "clean" / "checkpoints", 5, template)
    assert_trees_equal(state.params, clean_5)
    skipped = [line["skipped"] for line in metric_lines(tmp_path / "poisoned")]
    assert skipped[:2] == [0, 0] and sum(skipped) >= 3


def test_a_single_non_finite_step_is_skipped_and_counted(tmp_path):
    # Only the last batch of the run is poisoned: one bad step, below the limit; the run finishes.
    state, summary = toy_training.run(tmp_path, epochs=1, poison_from=5, max_bad_steps=3)
    assert summary["skipped_steps"] == 1 and int(state.bad_steps) == 1
    assert metric_lines(tmp_path)[-1]["skipped"] == 1


@pytest.mark.parametrize(
    "fields, error, match",
    [
        (dict(log_every=0), ValueError, "log_every must be >= 1"),
        (dict(num_epochs=-1), ValueError, "num_epochs must be >= 1"),
        (dict(keep_checkpoints=1.5), TypeError, "keep_checkpoints must be an int"),
        (dict(run_dir=""), ValueError, "run_dir must be a non-empty path"),
        (dict(best_mode="lowest"), ValueError, r"best_mode must be one of \('min', 'max'\), got 'lowest'"),
        (dict(best_metric=""), ValueError, "best_metric must be the name of a metric evaluate returns"),
    ],
)
def test_bad_trainer_configuration(fields, error, match):
    with pytest.raises(error, match=match):
        TrainerConfig(**({"run_dir": "runs/x"} | fields))


def test_an_empty_batch_is_a_clear_error_before_compilation(tmp_path):
    optimizer = toy_training.make_optimizer(toy_training.OptimizerConfig())
    state = toy_training.make_state(0, optimizer)
    compiled = []

    def train_step(state, batch):  # would be traced by jit; must never be reached
        compiled.append(True)
        return state, {}

    empty = {"xs": np.zeros((0, 5, 2), np.float32)}
    config = TrainerConfig(run_dir=str(tmp_path), quiet=True, plots=False)
    with pytest.raises(ValueError, match=r"batch leaf \['xs'\] has batch size 0"):
        toy_training.fit(config, state, train_step, lambda epoch: [empty])
    assert not compiled


def directory_contents(path):
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(pathlib.Path(path).rglob("*")) if f.is_file()}


def test_a_previous_run_is_never_deleted_unless_overwrite_is_asked(tmp_path):
    _, summary = toy_training.run(tmp_path, epochs=1)
    before = directory_contents(tmp_path)
    _, resumed = toy_training.run(tmp_path, epochs=1)  # resume=True of a finished run: nothing to do
    assert resumed["steps"] == summary["steps"] and resumed["train"] == summary["train"]  # its last metrics
    assert directory_contents(tmp_path)["metrics.jsonl"] == before["metrics.jsonl"]
    before = directory_contents(tmp_path)
    with pytest.raises(PreviousRunError, match=r"holds a previous run \(config.json, metrics.jsonl, summary.json, "
                                               r"checkpoints/\) and resume=False was passed; pass overwrite=True "
                                               r"to delete it and start over, resume=True to continue it"):
        toy_training.run(tmp_path, epochs=1, resume=False)
    assert directory_contents(tmp_path) == before  # nothing written, not even config.json
    shutil.rmtree(tmp_path / "checkpoints")  # as if killed before its first checkpoint
    with pytest.raises(PreviousRunError, match=r"it has no checkpoint that can be restored; pass overwrite=True"):
        toy_training.run(tmp_path, epochs=1, resume=True)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]


def test_overwrite_replaces_the_previous_run_in_its_directory(tmp_path):
    toy_training.run(tmp_path, epochs=3)  # checkpoints at 16 and 18
    state, summary = toy_training.run(tmp_path, epochs=1, overwrite=True)
    assert summary["steps"] == 6
    assert CheckpointDirectory(tmp_path / "checkpoints").steps() == [4, 6]
    assert max(line["step"] for line in metric_lines(tmp_path)) == 6


def test_a_relative_run_dir_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state, summary = toy_training.run("runs/relative", epochs=1)
    assert summary["steps"] == 6 and CheckpointDirectory(tmp_path / "runs/relative/checkpoints").steps() == [4, 6]


# -- the best epoch's params (TrainerConfig.best_metric) --------------------------------------------------------------
# The toy's validation loss falls every epoch, so "min" picks the last epoch and "max" the first.


@pytest.fixture(scope="module")
def best_reference(tmp_path_factory):
    """Uninterrupted 3-epoch runs keeping the best epoch by min and by max validation loss."""
    runs = {}
    for mode in ("min", "max"):
        run_dir = tmp_path_factory.mktemp(f"best_{mode}")
        state, summary = toy_training.run(run_dir, evaluate=toy_training.validation_loss, best_metric="valid_loss",
                                          best_mode=mode)
        runs[mode] = run_dir, state, summary
    return runs


def valid_losses(run_dir):
    return [line["valid_loss"] for line in metric_lines(run_dir) if line["split"] == "valid"]


def test_the_best_epoch_is_kept_by_its_metric(best_reference):
    for mode, epoch in (("min", 2), ("max", 0)):
        run_dir, state, summary = best_reference[mode]
        losses = valid_losses(run_dir)
        assert len(losses) == 3 and losses[0] > losses[1] > losses[2], losses
        assert summary["best"] == {"epoch": epoch, "step": 6 * (epoch + 1), "metric": "valid_loss",
                                   "mode": mode, "value": losses[epoch]}
        params, record = rnnjax.train.load_best(run_dir, state.params)
        assert record == summary["best"]
    min_dir, min_state, _ = best_reference["min"]
    assert_trees_equal(rnnjax.train.load_best(min_dir, min_state.params)[0],
                       toy_training.checkpoint_params(min_dir / "checkpoints", 18, min_state))  # the last epoch
    max_dir, max_state, _ = best_reference["max"]
    first_epoch, _ = toy_training.run(max_dir.parent / "one_epoch", epochs=1)
    assert_trees_equal(rnnjax.train.load_best(max_dir, max_state.params)[0], first_epoch.params)


def test_a_resumed_run_keeps_the_best_epoch_of_the_uninterrupted_run(best_reference, tmp_path):
    # Stopped after epoch 1 (as a kill between epochs), then resumed: epoch 0 stays the best by "max", although
    # the resumed process scores only epoch 2. Before the fix the pick was among the resumed process's epochs.
    run_dir, state, summary = best_reference["max"]
    toy_training.run(tmp_path, epochs=2, evaluate=toy_training.validation_loss, best_metric="valid_loss",
                     best_mode="max")
    resumed, resumed_summary = toy_training.run(tmp_path, evaluate=toy_training.validation_loss,
                                                best_metric="valid_loss", best_mode="max")
    assert resumed_summary["best"] == summary["best"]
    assert_trees_equal(rnnjax.train.load_best(tmp_path, state.params)[0],
                       rnnjax.train.load_best(run_dir, state.params)[0])
    assert_trees_equal(resumed.params, state.params)


def test_a_best_epoch_saved_after_the_resumed_checkpoint_is_discarded(best_reference, tmp_path):
    # As if killed after saving a best epoch 1 but before epoch 1's checkpoint (on a machine where the rerun of
    # epoch 1 then scores differently): the resumed run starts from epoch 0's checkpoint, whose record names
    # epoch 0, and must not keep the later save, which epochs 1 and 2 (no better than epoch 0 by "max") never replace.
    run_dir, state, summary = best_reference["max"]
    toy_training.run(tmp_path, epochs=1, evaluate=toy_training.validation_loss, best_metric="valid_loss",
                     best_mode="max")
    stray = jax.tree.map(lambda leaf: leaf + 1.0, state.params)
    CheckpointDirectory(tmp_path / "best", keep=None).save(12, stray, {"epoch": 1, "step": 12,
                                                                       "metric": "valid_loss", "mode": "max",
                                                                       "value": 9.0})
    _, resumed_summary = toy_training.run(tmp_path, evaluate=toy_training.validation_loss,
                                          best_metric="valid_loss", best_mode="max")
    assert resumed_summary["best"] == summary["best"]
    assert CheckpointDirectory(tmp_path / "best").steps() == [6]
    assert_trees_equal(rnnjax.train.load_best(tmp_path, state.params)[0],
                       rnnjax.train.load_best(run_dir, state.params)[0])


def test_a_resumed_run_with_another_best_metric_chooses_afresh(tmp_path):
    toy_training.run(tmp_path, epochs=2, evaluate=toy_training.validation_loss, best_metric="valid_loss",
                     best_mode="max")  # picks epoch 0
    _, summary = toy_training.run(tmp_path, evaluate=toy_training.validation_loss, best_metric="valid_loss")
    assert summary["best"]["epoch"] == 2 and summary["best"]["mode"] == "min"
    assert CheckpointDirectory(tmp_path / "best").steps() == [18]


def test_a_non_finite_metric_is_never_the_best(tmp_path):
    scores = iter([float("nan"), 2.0, float("inf")])
    _, summary = toy_training.run(tmp_path, evaluate=lambda params: {"score": next(scores)}, best_metric="score")
    assert summary["best"] == {"epoch": 1, "step": 12, "metric": "score", "mode": "min", "value": 2.0}
    scores = iter([float("nan")])
    _, summary = toy_training.run(tmp_path / "none", epochs=1, evaluate=lambda params: {"score": next(scores)},
                                  best_metric="score")
    assert summary["best"] is None
    with pytest.raises(rnnjax.train.CheckpointError, match=r"no best epoch in .*none/best"):
        rnnjax.train.load_best(tmp_path / "none")


def test_best_metric_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="best_metric='valid_loss' names a metric of evaluate, but fit was given "
                                         "no evaluate"):
        toy_training.run(tmp_path / "a", epochs=1, best_metric="valid_loss")
    with pytest.raises(ValueError, match=r"best_metric 'accuracy' is not among the metrics evaluate returned: "
                                         r"\['valid_loss'\]"):
        toy_training.run(tmp_path / "b", epochs=1, evaluate=toy_training.validation_loss, best_metric="accuracy")


def test_overwrite_deletes_the_previous_best(tmp_path):
    toy_training.run(tmp_path, evaluate=toy_training.validation_loss, best_metric="valid_loss")  # best: step 18
    _, summary = toy_training.run(tmp_path, epochs=1, overwrite=True, evaluate=toy_training.validation_loss,
                                  best_metric="valid_loss")
    assert summary["best"]["step"] == 6 and CheckpointDirectory(tmp_path / "best").steps() == [6]
