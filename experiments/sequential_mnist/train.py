"""Sequential MNIST: an image read as a sequence, one recurrent cell, its last state classified.

    python -m experiments.sequential_mnist --data-dir ../shared/data                    # row by row, LSTM
    python -m experiments.sequential_mnist --preset row --cells lstm,gru,irnn,mingru --data-dir ../shared/data
    python -m experiments.sequential_mnist --preset pixel --cells lstm --data-dir ../shared/data    # T = 784
    python -m experiments.sequential_mnist --preset permuted --cells lstm --data-dir ../shared/data

Tasks (`--task`): "row" (T = 28 steps of the 28 pixels of a row), "pixel" (T = 784 steps of one pixel, row-major:
Le et al. 2015's sequential MNIST) and "permuted" (the 784 pixels in one fixed random order,
`np.random.default_rng(permutation_seed).permutation(784)`, recorded in the run config: pMNIST). Pixels are scaled
to [0, 1]. Cells (`--cells`, comma-separated, one run each): "lstm" (forget bias `forget_bias`), "gru", "irnn"
(a ReLU `SimpleRNN` whose recurrent matrix is set to the identity and its biases to zero after init: Le et al.
2015) and "mingru" (Feng et al. 2024's MinGRU on the parallel associative scan, `FrameClassifier(parallel_scan=
True)`). Model: `rnnjax.models.FrameClassifier`, unidirectional, "last" pooling (the final state), dense to 10.

Protocol: `validation_size` (5,000) training images are held out (a fixed random subset, `split_seed`); after every
"epoch" (a pass over the rest, or `steps_per_epoch` steps when set: the evaluation interval of long runs) the
validation accuracy is measured; the test set is scored once, with the best-validation parameters. Adam with a
global-norm clip, cosine decay to 0 over the run. After training, ‖∂L/∂h_t‖ is measured for t = 1..T on a
validation batch at initialisation and for the trained cell (`experiments.gradient_flow.hidden_states`: a zero
perturbation added to h after every step; L = the cross-entropy of the last-step readout).

The run directory holds one subdirectory per cell (`config.json`, `metrics.jsonl`, `plots/`, `checkpoints/`,
`result.json`), `summary.json`, `accuracy.png` (validation accuracy per cell against step) and
`gradient_norms.png`. Every run prints its full config, takes a seed and is bit-for-bit repeatable on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from experiments import cli, mnist
from experiments.cli import parse_config_flags
from experiments.gradient_flow import hidden_states
from rnnjax import _checks
from rnnjax.train.run_files import write_json_atomic

TASKS = ("row", "pixel", "permuted")
CELLS = {"lstm": "lstm", "gru": "gru", "irnn": "rnn_relu", "mingru": "mingru"}  # name -> rnnjax mode
PIXELS = mnist.ROWS * mnist.COLUMNS


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "row"  # "row" (T=28, a row per step) | "pixel" (T=784, a pixel per step) | "permuted" (pMNIST)
    cells: str = "lstm"  # comma-separated, one run each: "lstm" | "gru" | "irnn" | "mingru" (parallel scan)
    hidden_size: int = 128  # units of the cell
    num_layers: int = 1  # stacked levels (the gradient-norm plot needs 1)
    dropout_rate: float = 0.0  # on the final state, before the dense layer
    permutation_seed: int = 0  # permuted: pixel order np.random.default_rng(permutation_seed).permutation(784)
    validation_size: int = 5000  # training images held out for model selection
    split_seed: int = 0  # which training images are held out
    batch_size: int = 128  # images per step
    epochs: int = 10  # evaluation intervals (passes over the training images unless steps_per_epoch is set)
    steps_per_epoch: int = 0  # steps between validations (0: one pass over the training images, last partial dropped)
    learning_rate: float = 1e-3  # Adam peak rate
    schedule: str = "cosine"  # "cosine" (to 0 over the run, no warmup) | "constant"
    max_grad_norm: float = 1.0  # global-norm clip
    forget_bias: float = 1.0  # lstm: forget-gate bias at init (Jozefowicz et al. 2015)
    max_train_examples: int = 0  # use only the first N training images after the hold-out (0: all; smoke runs)
    max_eval_examples: int = 0  # score only the first N validation and test images (0: all; smoke runs)
    eval_batch_size: int = 1000  # images per evaluation call (the last batch is padded with masked rows)
    gradient_batch: int = 64  # validation images averaged in the ‖∂L/∂h_t‖ measurement (0: skip it)
    data_dir: str = ""  # the MNIST .gz files (or ../shared/data); empty: download-and-verify into the cache
    seed: int = 0  # PRNG seed: init, dropout, batch order
    run_dir: str = "runs/sequential_mnist"  # output directory
    log_every: int = 50  # steps between train metric lines
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        _checks.check_choice("task", self.task, TASKS)
        for cell in self.cell_names:
            _checks.check_choice("cells", cell, tuple(CELLS))
        for name in ("hidden_size", "num_layers", "validation_size", "batch_size", "epochs", "eval_batch_size",
                     "log_every"):
            _checks.check_positive_int(name, getattr(self, name))
        for name in ("steps_per_epoch", "max_train_examples", "max_eval_examples", "gradient_batch",
                     "permutation_seed", "split_seed", "seed"):
            _checks.check_nonnegative_int(name, getattr(self, name))
        _checks.check_choice("schedule", self.schedule, ("cosine", "constant"))
        _checks.check_positive_float("learning_rate", self.learning_rate)
        _checks.check_positive_float("max_grad_norm", self.max_grad_norm)
        _checks.check_finite_float("forget_bias", self.forget_bias)
        _checks.check_rate("dropout_rate", self.dropout_rate)

    @property
    def cell_names(self) -> tuple[str, ...]:
        names = tuple(name.strip() for name in self.cells.split(",") if name.strip())
        if not names or len(set(names)) != len(names):
            raise ValueError(f"cells must be a comma-separated list of distinct names from {tuple(CELLS)}, got "
                             f"{self.cells!r}")
        return names

    @property
    def time_steps(self) -> int:
        return mnist.ROWS if self.task == "row" else PIXELS

    @property
    def input_size(self) -> int:
        return mnist.COLUMNS if self.task == "row" else 1


# The full budgets for the long tasks (100 epochs: long training, as the papers use; 9-13 h per gated cell on this
# CPU) and the row-by-row setting measured in experiments/README.md (98.35% test with the LSTM, below the 99% target).
PRESETS = {
    "row": dict(task="row", hidden_size=128, batch_size=128, epochs=10, learning_rate=1e-3),
    "pixel": dict(task="pixel", hidden_size=128, batch_size=100, epochs=100, learning_rate=1e-3),
    "permuted": dict(task="permuted", hidden_size=128, batch_size=100, epochs=100, learning_rate=1e-3),
}
QUICK = dict(task="row", cells="irnn,mingru", hidden_size=8, batch_size=8, epochs=2, steps_per_epoch=2,
             validation_size=16, max_train_examples=32, max_eval_examples=16, eval_batch_size=16, gradient_batch=4,
             log_every=1, quiet=True, run_dir="runs/sequential_mnist_quick")


# -- data --------------------------------------------------------------------------------------------------------------
def pixel_permutation(seed: int) -> np.ndarray:
    """The fixed pixel order of permuted MNIST: `np.random.default_rng(seed).permutation(784)`."""
    return np.random.default_rng(seed).permutation(PIXELS)


def to_sequences(images: np.ndarray, task: str, permutation: np.ndarray | None = None) -> np.ndarray:
    """uint8 images `[n, 28, 28]` -> float32 sequences in [0, 1]: `[n, 28, 28]` (row), `[n, 784, 1]` (pixel,
    row-major), `[n, 784, 1]` in `permutation`'s order (permuted)."""
    _checks.check_choice("task", task, TASKS)
    scaled = images.astype(np.float32) / 255.0
    if task == "row":
        return scaled
    flat = scaled.reshape(len(images), PIXELS)
    if task == "permuted":
        if permutation is None:
            raise ValueError("the permuted task needs its pixel permutation")
        flat = flat[:, permutation]
    return flat[:, :, None]


@dataclasses.dataclass(frozen=True)
class Splits:
    train_images: np.ndarray
    train_labels: np.ndarray
    valid_images: np.ndarray
    valid_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def make_splits(config: Config, data: mnist.MNIST) -> Splits:
    train_index, valid_index = mnist.split_validation(len(data.train_labels), config.validation_size,
                                                      config.split_seed)
    if config.max_train_examples:
        train_index = train_index[:config.max_train_examples]
    cap = slice(None, config.max_eval_examples or None)
    return Splits(data.train_images[train_index], data.train_labels[train_index],
                  data.train_images[valid_index][cap], data.train_labels[valid_index][cap],
                  data.test_images[cap], data.test_labels[cap])


def batches_per_pass(config: Config, count: int) -> int:
    if count < config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {count} training images")
    return count // config.batch_size


def train_batches_fn(config: Config, splits: Splits, permutation):
    """`epoch -> batches`: a stream of shuffled passes (`np.random.default_rng([seed, pass])`), cut into epochs of
    `steps_per_epoch` steps (or one pass each)."""
    count = len(splits.train_labels)
    per_pass = batches_per_pass(config, count)
    steps = config.steps_per_epoch or per_pass

    @functools.lru_cache(maxsize=2)
    def order(pass_index):
        return np.random.default_rng([config.seed, pass_index]).permutation(count)

    def batches(epoch):
        for step in range(epoch * steps, (epoch + 1) * steps):
            pass_index, position = divmod(step, per_pass)
            index = order(pass_index)[position * config.batch_size:(position + 1) * config.batch_size]
            yield {"features": to_sequences(splits.train_images[index], config.task, permutation),
                   "lengths": np.full((config.batch_size,), config.time_steps, np.int32),
                   "labels": splits.train_labels[index].astype(np.int32),
                   "mask": np.ones((config.batch_size,), bool)}

    return batches, steps


# -- model -------------------------------------------------------------------------------------------------------------
def make_model(config: Config, cell: str) -> rnnjax.models.FrameClassifier:
    return rnnjax.models.FrameClassifier(
        input_size=config.input_size, num_classes=10, hidden_size=config.hidden_size, num_layers=config.num_layers,
        mode=CELLS[cell], bidirectional=False, pooling="last", dropout_rate=config.dropout_rate,
        forget_bias=config.forget_bias if cell == "lstm" else None, parallel_scan=cell == "mingru")


def irnn_params(params: dict) -> dict:
    """Le et al. 2015's IRNN: every level's recurrent matrix set to the identity and its biases to zero."""
    def identity(layer):
        return layer._replace(weight_hh=jnp.eye(layer.weight_hh.shape[0], dtype=layer.weight_hh.dtype),
                              bias_ih=jnp.zeros_like(layer.bias_ih), bias_hh=jnp.zeros_like(layer.bias_hh))

    return {**params, "rnn": tuple(identity(layer) for layer in params["rnn"])}


def init_params(config: Config, cell: str, model, key: jax.Array) -> dict:
    params = model.init(key)
    return irnn_params(params) if cell == "irnn" else params


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, features, lengths):
    return model.apply(params, features, lengths)


def evaluate(config: Config, model, params, images, labels, permutation) -> float:
    """Accuracy over `images`, in batches of `eval_batch_size` (the last padded with masked rows: one shape)."""
    size = min(config.eval_batch_size, len(labels))
    correct = 0
    for start in range(0, len(labels), size):
        chunk = to_sequences(images[start:start + size], config.task, permutation)
        rows = len(chunk)
        if rows < size:
            chunk = np.concatenate([chunk, np.zeros((size - rows,) + chunk.shape[1:], np.float32)])
        logits = _logits(model, params, jnp.asarray(chunk), jnp.full((size,), config.time_steps, jnp.int32))
        correct += int(np.sum(np.asarray(jnp.argmax(logits, -1))[:rows] == labels[start:start + rows]))
    return correct / len(labels)


@functools.partial(jax.jit, static_argnums=0)
def hidden_gradient_norms(model, params, features, labels):
    """‖∂L_i/∂h_t‖ averaged over the batch, t = 1..T `[time]`: L_i the cross-entropy of sequence i's last-step
    readout, the gradient taken through a zero perturbation of h after every step (see the module docstring)."""
    cell = model.cell
    batch, time = features.shape[:2]

    def total_loss(perturbation):
        hs = hidden_states(cell, params["rnn"][0], features, perturbation)  # [time, batch, hidden]
        logits = hs[-1] @ params["output"]["weight"].T + params["output"]["bias"][None, :]
        return rnnjax.cross_entropy(logits, labels) * batch  # a sum: each sequence's gradient stays its own

    grads = jax.grad(total_loss)(jnp.zeros((time, batch, model.hidden_size), jnp.float32))
    return jnp.mean(jnp.linalg.norm(grads, axis=-1), axis=1)


def gradient_reach(norms: np.ndarray, fraction: float = 1e-6) -> int:
    """How many of the last time steps get ‖∂L/∂h_t‖ >= `fraction` x the last step's: how far back the error
    signal reaches (float32 underflows to exactly 0 further back, which a log plot leaves out)."""
    return int(np.sum(norms >= fraction * norms[-1]))


# -- one cell ----------------------------------------------------------------------------------------------------------
def run_cell(config: Config, cell: str, splits: Splits, permutation, run_dir: pathlib.Path, record: dict) -> dict:
    model = make_model(config, cell)
    init_key, state_key = jax.random.split(jax.random.key(config.seed))
    params = init_params(config, cell, model, init_key)
    batches, steps_per_epoch = train_batches_fn(config, splits, permutation)
    total_steps = steps_per_epoch * config.epochs
    schedule = {"schedule": "cosine", "total_steps": total_steps} if config.schedule == "cosine" else {}
    optimizer = rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(
        optimizer="adam", learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm, **schedule))
    state = rnnjax.train.create_train_state(params, optimizer, state_key)
    best = {"valid_accuracy": -1.0, "epoch": -1, "params": None}
    epoch_counter = [0]

    def validate(params):
        accuracy = evaluate(config, model, params, splits.valid_images, splits.valid_labels, permutation)
        if accuracy > best["valid_accuracy"]:  # ties keep the earlier epoch
            best.update(valid_accuracy=accuracy, epoch=epoch_counter[0], params=jax.device_get(params))
        epoch_counter[0] += 1
        return {"valid_accuracy": accuracy}

    gradient_batch = min(config.gradient_batch, len(splits.valid_labels))
    probe = None
    if gradient_batch and config.num_layers == 1:
        probe = (jnp.asarray(to_sequences(splits.valid_images[:gradient_batch], config.task, permutation)),
                 jnp.asarray(splits.valid_labels[:gradient_batch].astype(np.int32)))
        at_init = np.asarray(hidden_gradient_norms(model, params, *probe))
    run_config = {"config": dataclasses.asdict(config), "cell": cell, "mode": CELLS[cell], "data": record,
                  "permutation_seed": config.permutation_seed if config.task == "permuted" else None,
                  "steps_per_epoch": steps_per_epoch, "train_examples": len(splits.train_labels),
                  "path": rnnjax.unroll_path(model.cell, jax.eval_shape(lambda: params["rnn"][0]),
                                             jax.ShapeDtypeStruct((config.batch_size, config.time_steps,
                                                                   config.input_size), jnp.float32))}
    trainer = rnnjax.train.TrainerConfig(run_dir=str(run_dir), num_epochs=config.epochs, log_every=config.log_every,
                                         checkpoint_every=total_steps + 1, keep_checkpoints=1, quiet=config.quiet)
    started = time.perf_counter()
    train_step = rnnjax.train.train_step_fn(rnnjax.models.frame_classification_loss_fn(model), optimizer)
    state, summary = cli.fit(trainer, state, train_step, batches, evaluate=validate, run_config=run_config,
                                      resume=False, steps_per_epoch=steps_per_epoch)
    seconds = time.perf_counter() - started
    test_accuracy = evaluate(config, model, best["params"], splits.test_images, splits.test_labels, permutation)
    result = {"cell": cell, "task": config.task, "test_accuracy": test_accuracy,
              "valid_accuracy": best["valid_accuracy"], "best_epoch": best["epoch"], "epochs": config.epochs,
              "steps": summary["steps"], "skipped_steps": summary["skipped_steps"], "train_seconds": round(seconds, 1),
              "seconds_per_step": round(seconds / max(summary["steps"], 1), 4), "path": run_config["path"]}
    if probe is not None:
        trained = np.asarray(hidden_gradient_norms(model, best["params"], *probe))
        result["gradient_norms"] = {"init": at_init.tolist(), "trained": trained.tolist(),
                                    "first_over_last_init": float(at_init[0] / at_init[-1]),
                                    "first_over_last_trained": float(trained[0] / trained[-1]),
                                    "reach_init": gradient_reach(at_init), "reach_trained": gradient_reach(trained)}
    write_json_atomic(run_dir / "result.json", result)
    cli.print_table({k: v for k, v in result.items() if k != "gradient_norms"}, title=f"result: {cell}")
    return result


# -- plots -------------------------------------------------------------------------------------------------------------
def write_plots(config: Config, run_dir: pathlib.Path, results: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    written = []
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for result in results:
        lines = (run_dir / result["cell"] / "metrics.jsonl").read_text().splitlines()
        points = [(r["step"], r["valid_accuracy"]) for r in map(json.loads, lines) if r.get("split") == "valid"]
        axes.plot(*zip(*points), marker=".", label=f"{result['cell']} (test {result['test_accuracy']:.4f})")
    axes.set_xlabel("step")
    axes.set_ylabel("validation accuracy")
    axes.set_title(f"{config.task} MNIST, T = {config.time_steps}", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(run_dir / "accuracy.png", dpi=100, bbox_inches="tight")
    pyplot.close(figure)
    written.append("accuracy.png")
    with_norms = [r for r in results if "gradient_norms" in r]
    if with_norms:
        figure, axes = pyplot.subplots(figsize=(7, 4))
        for index, result in enumerate(with_norms):
            color = f"C{index}"
            steps = np.arange(1, config.time_steps + 1)
            axes.plot(steps, result["gradient_norms"]["init"], color=color, linestyle=":", alpha=0.7)
            axes.plot(steps, result["gradient_norms"]["trained"], color=color,
                      label=f"{result['cell']} (reach {result['gradient_norms']['reach_trained']} steps)")
        axes.set_yscale("log")
        axes.set_xlabel("time step t")
        axes.set_ylabel("‖∂L/∂h_t‖ (batch mean)")
        axes.set_title(f"{config.task} MNIST: trained (solid), at initialisation (dotted); exact zeros (float32 "
                       "underflow) are not drawn", fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.savefig(run_dir / "gradient_norms.png", dpi=100, bbox_inches="tight")
        pyplot.close(figure)
        written.append("gradient_norms.png")
    return written


def train(config: Config) -> dict:
    data = mnist.load_mnist(config.data_dir or None)
    splits = make_splits(config, data)
    permutation = pixel_permutation(config.permutation_seed) if config.task == "permuted" else None
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = [run_cell(config, cell, splits, permutation, run_dir / cell, data.record) for cell in config.cell_names]
    summary = {"config": dataclasses.asdict(config), "data": data.record, "wall_seconds":
               round(time.perf_counter() - started, 1),
               "results": [{k: v for k, v in r.items() if k != "gradient_norms"} for r in results]}
    if config.task == "permuted":
        summary["permutation_seed"] = config.permutation_seed
        summary["permutation_head"] = pixel_permutation(config.permutation_seed)[:8].tolist()
    summary["plots"] = write_plots(config, run_dir, results)
    write_json_atomic(run_dir / "summary.json", summary)
    print(f"run directory: {run_dir} (summary.json, {', '.join(summary['plots'])}, one subdirectory per cell)")
    return summary


def validate(config: Config) -> None:
    """Raises a ValueError naming the first invalid field; run before any data loads or any file is written."""
    cli.check_directory("data_dir", config.data_dir)
    cli.check_run_dir(config.run_dir)
    for cell in config.cell_names:
        make_model(config, cell)  # sizes and rates


def parse_config(argv=None) -> Config:
    return parse_config_flags(Config, argv, __doc__.split("\n\n")[0], presets=PRESETS, quick=QUICK,
                              validate=validate, exit_on_error=True, run_flags=True,
                              choices={"task": TASKS, "cells": tuple(CELLS), "schedule": ("cosine", "constant")})


def main(argv=None):
    return cli.run_main(argv, parse_config, train)


if __name__ == "__main__":
    main()
