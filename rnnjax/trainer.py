"""The training loop: epochs of jitted steps, metrics fetched once per log interval, checkpoints that survive a
kill, resume, a progress bar, and a run directory people can read.

Run directory layout:

    run_dir/config.json        the run's full config (the caller's plus the trainer's)
    run_dir/metrics.jsonl      one JSON line per log interval ("split": "train") and per evaluation ("valid")
    run_dir/summary.json       final metrics, steps, skipped steps, wall time
    run_dir/plots/*.png        loss (and each other metric) and gradient-norm curves, drawn at the end
    run_dir/checkpoints/       the last `keep_checkpoints` checkpoints (rnnjax.checkpoint)

The data enters as `train_batches(epoch) -> iterable of batches`, which must give the same batches for the same
epoch (shuffle with a seed derived from the epoch): resume skips the batches already consumed in the interrupted
epoch, and the checkpoint records the position (epoch, batch index). The RNG key, optimizer state and
truncated-BPTT carry live in the `TrainState`, so a resumed run reproduces the uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.checkpoint import CheckpointManager, checkpoint_path
from rnnjax.training import TrainState, accumulate_metrics, summarize_metrics, zeros_like_metrics


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
    plots: bool = True  # draw PNG curves at the end (matplotlib)
    perplexity: bool = False  # also log exp(token loss) and token loss / ln 2 (bits per token): cross-entropy losses

    def __post_init__(self):
        if not isinstance(self.run_dir, (str, pathlib.Path)) or not str(self.run_dir):
            raise ValueError(f"run_dir must be a non-empty path, got {self.run_dir!r}")
        for name in ("num_epochs", "log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps"):
            _checks.check_positive_int(name, getattr(self, name))


def _distinct_buffers(tree):
    """A copy of `tree` in which no two leaves share a buffer: donation rejects a buffer passed twice, and
    `zeros` reused for several leaves (LSTMState(h=zeros, c=zeros), step counters) would be."""
    return jax.tree.map(lambda leaf: jnp.array(leaf, copy=True) if isinstance(leaf, jax.Array) else leaf, tree)


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


def _is_writer() -> bool:
    """Only process 0 writes the run directory (multi-host runs would otherwise race on the same files)."""
    return jax.process_index() == 0


def _json_line(path: pathlib.Path, record: dict) -> None:
    if not _is_writer():
        return
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
    """On resume, forget lines logged after the checkpoint: they will be logged again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def _plot(run_dir: pathlib.Path) -> list[pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    numeric = {k for r in records for k, v in r.items() if isinstance(v, (int, float))}
    names = sorted(numeric - {"step", "epoch", "skipped", "steps_per_second", "perplexity", "bits_per_token"})
    written = []
    (run_dir / "plots").mkdir(exist_ok=True)
    for name in names:
        figure, axes = pyplot.subplots(figsize=(6, 4))
        for split in ("train", "valid"):
            points = [(r["step"], r[name]) for r in records if r.get("split") == split and name in r]
            if points:
                axes.plot(*zip(*points), marker="." if split == "valid" else None, label=split)
        axes.set_xlabel("step")
        axes.set_ylabel(name)
        if name == "grad_norm":
            axes.set_yscale("log")  # vanishing and exploding gradients span orders of magnitude
        axes.legend()
        axes.grid(alpha=0.3)
        path = run_dir / "plots" / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        pyplot.close(figure)
        written.append(path)
    return written


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
    place_batch: Callable[[Any], Any] | None = None,
    steps_per_epoch: int | None = None,
) -> tuple[TrainState, dict]:
    """Trains `state` for `config.num_epochs` epochs; returns the final state and the summary.

    Args:
      train_step: the pure step `(state, batch) -> (state, metrics)` (`training.train_step_fn`); jitted here
        together with the metric accumulation, state and sums donated.
      train_batches: `epoch -> iterable of batches`, deterministic per epoch.
      evaluate: `params -> dict of metrics`, run after every epoch (logged with `"split": "valid"`).
      initial_carry: `() -> carry`; the truncated-BPTT carry is reset to it at the start of every epoch.
      run_config: the experiment's own config, written to config.json and stored in every checkpoint.
      tokens_per_batch: for the tokens/s figure (default: not reported).
      resume: continue from the newest valid checkpoint in `run_dir/checkpoints` if there is one; False starts
        over, replacing the directory's previous metrics and checkpoints.
      place_batch: e.g. `lambda b: parallel.shard_batch(b, mesh)` for data parallelism.
      steps_per_epoch: batches per epoch, if known: gives the progress bar a total and an ETA.
    """
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    full_config = {"run": run_config or {}, "trainer": {k: str(v) if isinstance(v, pathlib.Path) else v
                                                        for k, v in dataclasses.asdict(config).items()}}
    if _is_writer():
        (run_dir / "config.json").write_text(json.dumps(full_config, indent=2, default=str))
    metrics_path = run_dir / "metrics.jsonl"
    manager = CheckpointManager(run_dir / "checkpoints", keep=config.keep_checkpoints)
    say = (lambda text: None) if config.quiet else print

    start_epoch, start_batch = 0, 0
    restored = manager.restore_latest(state) if resume else None
    if restored is not None:
        restored_state, metadata, step = restored
        # back onto the devices (and shardings, e.g. replicated on a data mesh) the caller's state was placed on
        state = jax.tree.map(
            lambda new, old: jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new,
            restored_state, state,
        )
        start_epoch, start_batch = metadata["epoch"], metadata["batch_index"]
        if _is_writer():
            _truncate_metrics(metrics_path, step)
        say(f"resumed from step {step} (epoch {start_epoch}, batch {start_batch})")
    elif _is_writer():
        # A fresh run replaces the run directory's previous run: its metrics, and its checkpoints, which would
        # otherwise outrank this run's by step number and be what a later resume picks up.
        metrics_path.unlink(missing_ok=True)
        for old_step in manager.steps():
            checkpoint_path(manager.directory, old_step).unlink(missing_ok=True)

    def step_and_accumulate(state, sums, batch):
        state, metrics = train_step(state, batch)
        return state, accumulate_metrics(sums, metrics)

    compiled = jax.jit(step_and_accumulate, donate_argnums=(0, 1))
    metric_names = None
    sums = None
    started = time.perf_counter()
    interval_start, interval_steps = time.perf_counter(), 0
    last_logged: dict = {}
    last_valid: dict = {}

    def save(epoch: int, batch_index: int) -> None:
        if not _is_writer():  # multi-host: one writer; the state is replicated, so its copy is complete
            return
        manager.save(host_step, _local_copy(state), {"epoch": epoch, "batch_index": batch_index,
                                                     "config": full_config})

    def stop_if_too_many_bad_steps() -> None:
        # Read at log intervals only (a per-step read would sync the host every step); skipped steps change
        # nothing, so stopping up to log_every steps late loses nothing.
        bad = int(state.bad_steps)
        if bad >= config.max_bad_steps:
            raise NonFiniteError(
                f"{bad} consecutive steps had a non-finite loss or gradient (limit max_bad_steps="
                f"{config.max_bad_steps}) at step {host_step}; the last checkpoint in "
                f"{run_dir / 'checkpoints'} holds the last good parameters"
            )

    state = _distinct_buffers(state)
    host_step = int(state.step)
    progress = None
    if not config.quiet:
        from tqdm import tqdm

        total = None if steps_per_epoch is None else steps_per_epoch * config.num_epochs
        progress = tqdm(desc="train", unit="step", initial=host_step, total=total, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.num_epochs):
            first_batch = start_batch if epoch == start_epoch else 0
            if first_batch == 0 and initial_carry is not None:
                state = state._replace(carry=_distinct_buffers(initial_carry()))
            for batch_index, batch in enumerate(train_batches(epoch)):
                if batch_index < first_batch:
                    continue  # consumed before the interruption
                if place_batch is not None:
                    batch = place_batch(batch)
                if sums is None:
                    _check_batch(batch)
                    metric_names = jax.eval_shape(train_step, state, batch)[1].keys()
                    sums = _distinct_buffers(zeros_like_metrics(metric_names))
                state, sums = compiled(state, sums, batch)
                host_step += 1  # mirrors state.step without a device sync
                interval_steps += 1
                if progress is not None:
                    progress.update(1)
                if interval_steps == config.log_every:
                    last_logged = _log(metrics_path, sums, host_step, epoch, interval_start, interval_steps,
                                       tokens_per_batch, progress, config.perplexity)
                    sums = _distinct_buffers(zeros_like_metrics(metric_names))
                    interval_start, interval_steps = time.perf_counter(), 0
                    stop_if_too_many_bad_steps()
                if host_step % config.checkpoint_every == 0:
                    save(epoch, batch_index + 1)
            if interval_steps:
                last_logged = _log(metrics_path, sums, host_step, epoch, interval_start, interval_steps,
                                   tokens_per_batch, progress, config.perplexity)
                sums = _distinct_buffers(zeros_like_metrics(metric_names))
                interval_start, interval_steps = time.perf_counter(), 0
                stop_if_too_many_bad_steps()
            if evaluate is not None:
                last_valid = {name: float(value) for name, value in evaluate(state.params).items()}
                _json_line(metrics_path, {"split": "valid", "step": host_step, "epoch": epoch, **last_valid})
                say(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4g}" for k, v in last_valid.items()))
            save(epoch + 1, 0)
    finally:
        if progress is not None:
            progress.close()

    summary = {
        "steps": int(state.step),
        "skipped_steps": int(state.skipped_steps),
        "seconds": round(time.perf_counter() - started, 2),
        "train": last_logged,
        "valid": last_valid,
    }
    if _is_writer():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if config.plots and _is_writer() and metrics_path.exists():
        _plot(run_dir)
    return state, summary


def _log(path, sums, step, epoch, interval_start, interval_steps, tokens_per_batch, progress, perplexity) -> dict:
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
    _json_line(path, record)
    if progress is not None:
        postfix = {"loss": f"{means.get('loss', float('nan')):.4f}"}
        if tokens_per_batch:
            postfix["tok/s"] = f"{record['tokens_per_second']:.0f}"
        progress.set_postfix(postfix, refresh=False)
    return record
