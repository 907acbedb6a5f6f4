"""The training loop: epochs of jitted steps, metrics fetched once per log interval, checkpoints that survive a
kill, resume, a progress bar, and a run directory people can read.

The run directory holds `config.json`, `metrics.jsonl`, `summary.json`, `plots/` (`rnnjax.train.run_files`) and
`checkpoints/`, the last `keep_checkpoints` checkpoints (`rnnjax.train.checkpoint`, on orbax-checkpoint). With
`TrainerConfig.best_metric`, `best/` holds the params of the epoch whose `evaluate` metric was best so far, as
Keras' `ModelCheckpoint(save_best_only=True)` keeps them (`load_best` reads them back).

The data enters as `train_batches(epoch) -> iterable of batches`, which must give the same batches for the same
epoch (shuffle with a seed derived from the epoch): resume skips the batches already consumed in the interrupted
epoch, and the checkpoint records the position (epoch, batch index). The RNG key, optimizer state and
truncated-BPTT carry live in the `TrainState`, so a resumed run reproduces the uninterrupted one bit for bit on CPU.
The best epoch so far is recorded in every checkpoint too, so a resumed run picks the same best epoch as the
uninterrupted one, not the best of the epochs it trained itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import time
from typing import Any, Callable, Iterable

import jax

from rnnjax import _checks
from rnnjax.train.checkpoint import CheckpointDirectory, CheckpointError
from rnnjax.train.run_files import PreviousRunError, RunFiles, is_writer, previous_run
from rnnjax.train.step import TrainState, accumulate_metrics, distinct_buffers, summarize_metrics, zeros_like_metrics
from rnnjax.train.writers import CSVWriter, TensorBoardWriter


BEST_DIRECTORY = "best"  # under run_dir: the best epoch's params (TrainerConfig.best_metric)
BEST_MODES = ("min", "max")


class NonFiniteError(RuntimeError):
    """Raised when too many consecutive steps had a NaN/inf loss or gradient."""


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    run_dir: str  # where config, metrics, plots and checkpoints go
    num_epochs: int = 1  # passes over train_batches
    log_every: int = 50  # steps between metric fetches (the only host syncs besides checkpoints)
    checkpoint_every: int = 500  # steps between checkpoints; one is also written at the end of every epoch
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    max_bad_steps: int = 10  # consecutive non-finite steps that stop the run (checked at each log interval)
    quiet: bool = False  # no progress bar and no printed lines (metrics files are still written)
    plots: bool = True  # draw PNG curves at the end (needs matplotlib, the `experiments` extra; skipped without)
    tensorboard: bool = False  # also write TensorBoard event files to run_dir/tensorboard (needs tensorboardX)
    csv: bool = False  # also write run_dir/metrics.csv (train) and metrics.valid.csv
    perplexity: bool = False  # also log exp(token loss) and token loss / ln 2 (bits per token): cross-entropy losses
    best_metric: str | None = None  # a metric of fit's `evaluate`: the params of its best epoch go to run_dir/best
    best_mode: str = "min"  # best_metric's best is its "min" (a loss, a perplexity) or its "max" (accuracy, BLEU)

    def __post_init__(self):
        if not isinstance(self.run_dir, (str, pathlib.Path)) or not str(self.run_dir):
            raise ValueError(f"run_dir must be a non-empty path, got {self.run_dir!r}")
        for name in ("num_epochs", "log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps"):
            _checks.check_positive_int(name, getattr(self, name))
        if self.best_metric is not None and (not isinstance(self.best_metric, str) or not self.best_metric):
            raise ValueError(f"best_metric must be the name of a metric evaluate returns, or None; got "
                             f"{self.best_metric!r}")
        if self.best_mode not in BEST_MODES:
            raise ValueError(f"best_mode must be one of {BEST_MODES}, got {self.best_mode!r}")


def _check_batch(batch) -> None:
    """The first batch, checked before anything compiles: every array needs a non-empty leading batch axis."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        shape = getattr(leaf, "shape", None)
        if shape is None:
            continue
        name = jax.tree_util.keystr(path) or "batch"
        if len(shape) == 0:
            raise ValueError(f"batch leaf {name} is a scalar; every batch array needs a leading batch axis")
        if shape[0] == 0:
            raise ValueError(f"batch leaf {name} has batch size 0 (shape {tuple(shape)}); batch size must be >= 1")


def _local_copy(tree):
    """Leaves this process can read whole: a replicated array spanning several hosts is not fully addressable,
    but each host holds a complete copy of it."""

    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and leaf.is_fully_replicated:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(local, tree)


def fit(
    config: TrainerConfig,
    state: TrainState,
    train_step: Callable,
    train_batches: Callable[[int], Iterable],
    *,
    evaluate: Callable[[Any], dict] | None = None,
    initial_carry: Callable[[], Any] | None = None,
    run_config: dict | None = None,
    tokens_per_batch: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    place_batch: Callable[[Any], Any] | None = None,
    steps_per_epoch: int | None = None,
    writers: tuple = (),
) -> tuple[TrainState, dict]:
    """Trains `state` for `config.num_epochs` epochs; returns the final state and the summary.

    Args:
      train_step: the pure step `(state, batch) -> (state, metrics)` (`rnnjax.train.train_step_fn`); jitted here
        together with the metric accumulation, state and sums donated.
      train_batches: `epoch -> iterable of batches`, deterministic per epoch.
      evaluate: `params -> dict of metrics`, run after every epoch (logged with `"split": "valid"`). With
        `config.best_metric`, the epoch whose metric of that name is best so far (strictly better than every earlier
        epoch's; NaN never is) has its params saved to `run_dir/best` as its newest checkpoint (`load_best` reads
        it; the one before, the previous best, stays for a resume), its console line says "(best)", and every
        checkpoint records it; the summary's "best" gives its epoch, step, metric, mode and value.
      initial_carry: `() -> carry`; the truncated-BPTT carry is reset to it at the start of every epoch.
      run_config: the experiment's own config, written to config.json and stored in every checkpoint.
      tokens_per_batch: for the tokens/s figure (default: not reported).
      resume: continue from the newest valid checkpoint in `run_dir/checkpoints` if there is one (a new or empty
        `run_dir` starts at step 0).
      overwrite: start over in a `run_dir` that holds a previous run (`run_files.RUN_MARKERS`), deleting its
        config, metrics, summary, plots and checkpoints first; `resume` is then ignored. Without it a previous run
        is never deleted: `PreviousRunError` (naming `resume=` and `overwrite=`) is raised, before anything is
        written, when `resume` is False, or when it is True and no checkpoint can be restored (a run killed before
        its first checkpoint, or whose checkpoints are all corrupt).
      place_batch: e.g. `lambda b: rnnjax.train.shard_batch(b, mesh)` for data parallelism.
      steps_per_epoch: batches per epoch, if known: gives the progress bar a total and an ETA.
      writers: metric writers (`rnnjax.train.writers`: `write(record)`, `close()`) that get every record
        `metrics.jsonl` gets, besides the ones `config.tensorboard` and `config.csv` add; closed at the end.
    """
    run_dir = pathlib.Path(config.run_dir)
    if config.best_metric is not None and evaluate is None:
        raise ValueError(f"best_metric={config.best_metric!r} names a metric of evaluate, but fit was given no "
                         f"evaluate")
    # absolute: orbax refuses relative checkpoint paths, and run_dir is usually given relative (runs/lm)
    manager = CheckpointDirectory((run_dir / "checkpoints").absolute(), keep=config.keep_checkpoints)
    # Two kept: a run killed after saving a new best but before its next checkpoint resumes from a checkpoint that
    # records the best before it, whose params must still be there.
    best = None if config.best_metric is None else CheckpointDirectory((run_dir / BEST_DIRECTORY).absolute(), keep=2)
    say = (lambda text: None) if config.quiet else print
    # Decided before anything is written (config.json included), so a refused call leaves the directory as it was.
    state, (start_epoch, start_batch), best_so_far = _restore_or_start(RunFiles(run_dir), manager, best, state,
                                                                       resume, overwrite, say)
    if best is not None:
        best_so_far = _continue_best(config, best, best_so_far)
    writers = tuple(writers)
    if config.tensorboard and is_writer():
        writers += (TensorBoardWriter(run_dir / "tensorboard"),)
    if config.csv and is_writer():
        run_dir.mkdir(parents=True, exist_ok=True)
        writers += (CSVWriter(run_dir / "metrics.csv"),)
    with contextlib.closing(RunFiles(run_dir, writers)) as run:  # the writers are closed whatever happens
        full_config = {"run": run_config or {}, "trainer": {k: str(v) if isinstance(v, pathlib.Path) else v
                                                            for k, v in dataclasses.asdict(config).items()}}
        run.write_config(full_config)
        epochs = _Epochs(config, run, manager, train_step, full_config, tokens_per_batch, distinct_buffers(state))
        epochs.best_directory, epochs.best = best, best_so_far
        started = time.perf_counter()
        with _progress_bar(config, epochs.host_step, steps_per_epoch) as epochs.progress:
            for epoch in range(start_epoch, config.num_epochs):
                first_batch = start_batch if epoch == start_epoch else 0
                if first_batch == 0 and initial_carry is not None:
                    epochs.state = epochs.state._replace(carry=distinct_buffers(initial_carry()))
                epochs.train_epoch(epoch, train_batches(epoch), first_batch, place_batch)
                if evaluate is not None:
                    line = epochs.evaluate(epoch, evaluate)
                    # through the bar while it is live, so the line is never glued to it
                    (epochs.progress.write if epochs.progress is not None else say)(line)
                epochs.save(epoch + 1, 0)

        state = epochs.state
        summary = {
            "steps": int(state.step),
            "skipped_steps": int(state.skipped_steps),
            "seconds": round(time.perf_counter() - started, 2),
            "train": epochs.last_logged,
            "valid": epochs.last_valid,
        }
        if config.best_metric is not None:
            summary["best"] = epochs.best
        run.write_summary(summary)
        if config.plots:
            run.plot()
        return state, summary


def _restore_or_start(run: RunFiles, manager: CheckpointDirectory, best: CheckpointDirectory | None,
                      state: TrainState, resume: bool, overwrite: bool, say):
    """`(state, (epoch, batch_index), best epoch so far)` to start from: the newest valid checkpoint's (and the best
    epoch it records) when resuming, the given state at (0, 0) with no best epoch in a new directory or (its
    previous run deleted) with `overwrite`; else `PreviousRunError`. `best`: run_dir/best when `best_metric` is
    set, else None."""
    previous = previous_run(run.path)
    if overwrite:
        if previous and is_writer():
            # Its checkpoints would otherwise outrank this run's by step number and be what a later resume picks.
            run.remove_previous_run()
            manager.delete_all()
            if best is not None:
                best.delete_all()
            say(f"overwrite: deleted the previous run in {run.path} ({', '.join(previous)})")
        return state, (0, 0), None
    restored = manager.restore_latest(state) if resume and manager.steps() else None
    if restored is None:
        if previous:
            reason = ("it has no checkpoint that can be restored" if resume else "resume=False was passed")
            raise PreviousRunError(
                f"run_dir {str(run.path)!r} holds a previous run ({', '.join(previous)}) and {reason}; pass "
                f"overwrite=True to delete it and start over{'' if resume else ', resume=True to continue it'}, "
                f"or use another run_dir")
        return state, (0, 0), None
    restored_state, metadata, step = restored
    # back onto the devices (and shardings, e.g. replicated on a data mesh) the caller's state was placed on
    state = jax.tree.map(
        lambda new, old: jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new,
        restored_state, state,
    )
    run.truncate_metrics(step)
    say(f"resumed from step {step} (epoch {metadata['epoch']}, batch {metadata['batch_index']})")
    return state, (metadata["epoch"], metadata["batch_index"]), metadata.get("best")


def _continue_best(config: TrainerConfig, best: CheckpointDirectory, record: dict | None) -> dict | None:
    """The best epoch this run continues from: the restored checkpoint's `record`, or None (a new run, or one
    chosen on another metric or mode, which chooses afresh). Best epochs saved after that checkpoint are deleted:
    they are trained and scored again, and saved again if they win."""
    if record is not None and (record.get("metric"), record.get("mode")) != (config.best_metric, config.best_mode):
        record = None
    if is_writer():
        best.delete_after(record["step"] if record else -1)
    return record


@contextlib.contextmanager
def _progress_bar(config: TrainerConfig, initial: int, steps_per_epoch: int | None):
    """A tqdm bar over all epochs' steps (None when quiet), closed whatever happens."""
    if config.quiet:
        yield None
        return
    from tqdm import tqdm

    total = None if steps_per_epoch is None else steps_per_epoch * config.num_epochs
    progress = tqdm(desc="train", unit="step", initial=initial, total=total, dynamic_ncols=True)
    try:
        yield progress
    finally:
        progress.close()


class _Epochs:
    """The mutable side of a run: the state, the on-device metric sums of the current log interval, the host's
    step count (mirrors `state.step` without a device sync), and the last logged metrics."""

    def __init__(self, config, run, manager, train_step, full_config, tokens_per_batch, state):
        self.config, self.run, self.manager = config, run, manager
        self.full_config, self.tokens_per_batch = full_config, tokens_per_batch
        self.train_step = train_step
        self.state = state
        self.host_step = int(state.step)
        self.progress = None
        self.metric_names = None
        self.sums = None
        self.interval_start, self.interval_steps = time.perf_counter(), 0
        self.best_directory, self.best = None, None  # run_dir/best and the best epoch so far (best_metric)
        # A resumed run starts from what its metrics file last recorded (all of it, if it had already finished).
        self.last_logged, self.last_valid = run.last_records()

        def step_and_accumulate(state, sums, batch):
            state, metrics = train_step(state, batch)
            return state, accumulate_metrics(sums, metrics)

        self.compiled = jax.jit(step_and_accumulate, donate_argnums=(0, 1))

    def train_epoch(self, epoch: int, batches: Iterable, first_batch: int, place_batch) -> None:
        """One epoch of steps from batch `first_batch` on, logging and checkpointing as configured."""
        for batch_index, batch in enumerate(batches):
            if batch_index < first_batch:
                continue  # consumed before the interruption
            if place_batch is not None:
                batch = place_batch(batch)
            if self.sums is None:
                _check_batch(batch)
                self.metric_names = jax.eval_shape(self.train_step, self.state, batch)[1].keys()
                self.sums = distinct_buffers(zeros_like_metrics(self.metric_names))
            self.state, self.sums = self.compiled(self.state, self.sums, batch)
            self.host_step += 1
            self.interval_steps += 1
            if self.progress is not None:
                self.progress.update(1)
            if self.interval_steps == self.config.log_every:
                self.log(epoch)
            if self.host_step % self.config.checkpoint_every == 0:
                self.save(epoch, batch_index + 1)
        if self.interval_steps:
            self.log(epoch)

    def log(self, epoch: int) -> None:
        self.last_logged = _log(self.run, self.sums, self.host_step, epoch, self.interval_start,
                                self.interval_steps, self.tokens_per_batch, self.progress, self.config.perplexity)
        self.sums = distinct_buffers(zeros_like_metrics(self.metric_names))
        self.interval_start, self.interval_steps = time.perf_counter(), 0
        self.stop_if_too_many_bad_steps()

    def evaluate(self, epoch: int, evaluate: Callable[[Any], dict]) -> str:
        """Runs `evaluate(params)`, logs it as the epoch's "valid" record; returns the console line."""
        self.last_valid = {name: float(value) for name, value in evaluate(self.state.params).items()}
        self.run.append_metrics({"split": "valid", "step": self.host_step, "epoch": epoch, **self.last_valid})
        line = f"epoch {epoch}: " + "  ".join(f"{k} {v:.4g}" for k, v in self.last_valid.items())
        if self.config.best_metric is not None and self.keep_if_best(epoch):
            line += "  (best)"
        return line

    def keep_if_best(self, epoch: int) -> bool:
        """Whether this epoch's `best_metric` beats every earlier epoch's; if so its params go to run_dir/best."""
        name = self.config.best_metric
        if name not in self.last_valid:
            raise ValueError(f"best_metric {name!r} is not among the metrics evaluate returned: "
                             f"{sorted(self.last_valid)}")
        value = self.last_valid[name]
        if not math.isfinite(value):
            return False
        if self.best is not None and not (value < self.best["value"] if self.config.best_mode == "min"
                                          else value > self.best["value"]):
            return False
        self.best = {"epoch": epoch, "step": self.host_step, "metric": name, "mode": self.config.best_mode,
                     "value": value}
        if is_writer():
            self.best_directory.save(self.host_step, _local_copy(self.state.params), self.best)
        return True

    def save(self, epoch: int, batch_index: int) -> None:
        if not is_writer():  # multi-host: one writer; the state is replicated, so its copy is complete
            return
        self.manager.save(self.host_step, _local_copy(self.state),
                          {"epoch": epoch, "batch_index": batch_index, "config": self.full_config, "best": self.best})

    def stop_if_too_many_bad_steps(self) -> None:
        # Read at log intervals only (a per-step read would sync the host every step); skipped steps change
        # nothing, so stopping up to log_every steps late loses nothing.
        bad = int(self.state.bad_steps)
        if bad >= self.config.max_bad_steps:
            raise NonFiniteError(
                f"{bad} consecutive steps had a non-finite loss or gradient (limit max_bad_steps="
                f"{self.config.max_bad_steps}) at step {self.host_step}; the last checkpoint in "
                f"{self.manager.directory} holds the last good parameters"
            )


def _log(run: RunFiles, sums, step, epoch, interval_start, interval_steps, tokens_per_batch, progress,
         perplexity) -> dict:
    """Fetches the interval's sums (the one host sync), writes a metrics line, updates the progress bar."""
    means = summarize_metrics(sums)
    seconds = max(time.perf_counter() - interval_start, 1e-9)
    record = {"split": "train", "step": step, "epoch": epoch, **means, "steps_per_second": interval_steps / seconds}
    if tokens_per_batch:
        record["tokens_per_second"] = tokens_per_batch * interval_steps / seconds
    # A loss scaled for the optimizer (Zaremba's sum over steps) reports its per-token mean as "token_loss".
    token_loss = means.get("token_loss", means.get("loss"))
    if perplexity and token_loss is not None and math.isfinite(token_loss):
        record["perplexity"] = math.exp(min(token_loss, 700.0))
        record["bits_per_token"] = token_loss / math.log(2)
    run.append_metrics(record)
    if progress is not None:
        postfix = {"loss": f"{means.get('loss', float('nan')):.4f}"}
        if tokens_per_batch:
            postfix["tok/s"] = f"{record['tokens_per_second']:.0f}"
        progress.set_postfix(postfix, refresh=False)
    return record


def load_best(run_dir: str | os.PathLike, target: Any = None) -> tuple[Any, dict]:
    """`(params, record)` of the best epoch `fit` kept in `run_dir/best` (`TrainerConfig.best_metric`): the params
    in `target`'s structure (see `load_checkpoint`), and `{"epoch", "step", "metric", "mode", "value"}` (the
    `best_metric`, its `best_mode` and its value). Raises `CheckpointError` when the directory holds no best
    epoch."""
    restored = CheckpointDirectory(pathlib.Path(run_dir) / BEST_DIRECTORY, keep=None).restore_latest(target)
    if restored is None:
        raise CheckpointError(f"no best epoch in {pathlib.Path(run_dir) / BEST_DIRECTORY} (fit keeps one when "
                              f"TrainerConfig.best_metric is set and an epoch's metric is finite)")
    params, record, _ = restored
    return params, record
