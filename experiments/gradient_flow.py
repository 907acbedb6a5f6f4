"""Gradient flow: the vanishing/exploding-gradient story, measured, and the classic long-range tasks.

Three measurements, one script, one run directory:

1. **‖∂L/∂h_t‖ against t** for every cell, at initialisation and after training, on the same adding-problem batch
   (T = `grad_time`), with a loss that depends on the last step only. A zero perturbation ε_t is added to the
   hidden state `h` of the carry after every step, so it feeds the rest of the recurrence, and
   ∂L/∂ε_t = ∂L/∂h_t is the total derivative through every later step (for the LSTM: through `h`; the cell state
   `c` has its own path, which is the point of the LSTM).
2. **Exploding gradients**: a relu `SimpleRNN` whose orthogonal recurrent kernel is scaled up
   (`explode_init_scale`), trained with plain SGD with and without `clip_by_global_norm`, the pre-clip global
   gradient norm recorded at every step.
3. **Success rates on the adding problem and the copy task** per cell at T = 50, 100, 200, 400, several seeds
   trained at once (`jax.vmap` over the parameter and optimizer-state pytrees inside one jitted step):
   - adding (Hochreiter & Schmidhuber 1997; Le et al. 2015; generator shared with `experiments/quickstart.py`):
     success = test MSE < 0.1 × the trivial baseline's (always predicting 1: MSE 1/6 ≈ 0.167);
   - copy (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): `copy_length` symbols from `copy_categories`
     categories, T - 1 blanks, a delimiter, `copy_length` blanks; the target is blanks, then the symbols. Success =
     per-symbol accuracy on the copied positions >= `copy_success_accuracy` (0.9); the trivial baseline (blanks,
     then a random symbol) scores 1 / copy_categories = 0.125 there.

    python -m experiments.gradient_flow                    # the full sweep (see experiments/README.md for times)
    python -m experiments.gradient_flow --quick            # tiny T and steps: a smoke test, seconds
    python -m experiments.gradient_flow --cells lstm,gru --tasks copy --times 50,100 --steps 2000 --seed 1

Cells: `rnn_tanh`, `rnn_relu`, `lstm`, `gru` (the classic cells, all with `initializer`, the LSTM with
`forget_bias`) and `mingru`/`minlstm` (`rnnjax.MinGRU`/`MinLSTM`, Feng et al. 2024); the default set is the
classic four plus `mingru`. Every run takes a seed, prints its full config first and is bit-for-bit
repeatable on CPU. The run directory holds `config.json`, `results.json`, `results.md` (the tables) and PNG plots.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments import cli
from experiments.cli import parse_config_flags
from experiments.quickstart import TRIVIAL_MSE, adding_problem
from rnnjax import _checks
from rnnjax.cells import SimpleRNN
from rnnjax.minimal_cells import MinGRU, MinLSTM
from rnnjax.train.run_files import write_json_atomic, write_text_atomic

CLASSIC_CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
MINIMAL_CELLS = ("mingru", "minlstm")
TASKS = ("adding", "copy")
SECTIONS = ("sweep", "gradient_flow", "exploding")
ADDING_SUCCESS_FRACTION = 0.1  # adding: solved when test MSE < this × TRIVIAL_MSE


def minimal_cell_types() -> dict[str, type]:
    """`{"mingru": MinGRU, "minlstm": MinLSTM}`."""
    return {"mingru": MinGRU, "minlstm": MinLSTM}


def default_cells() -> str:
    """The classic four plus `mingru`."""
    return ",".join(CLASSIC_CELLS + ("mingru",))


def _split_list(text: str, name: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in str(text).split(",") if item.strip())
    if not items:
        raise ValueError(f"{name} must be a non-empty comma-separated list, got {text!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"{name} lists an entry twice: {text!r}")
    return items


@dataclasses.dataclass(frozen=True)
class Config:
    cells: str = ""  # comma-separated cells; "" = rnn_tanh,rnn_relu,lstm,gru,mingru
    tasks: str = "adding,copy"  # comma-separated: "adding" | "copy"
    times: str = "50,100,200,400"  # sequence lengths T of the success sweep (copy: T blanks between symbols and recall)
    num_seeds: int = 3  # seeds per (cell, task, T), trained together under one jax.vmap
    hidden_size: int = 64  # units of every cell
    initializer: str = "orthogonal"  # every classic cell: "orthogonal" (Saxe et al. 2014) | "pytorch" (U(±1/sqrt(H)))
    forget_bias: float = 1.0  # LSTM forget-gate bias (Jozefowicz et al. 2015)
    batch_size: int = 32  # fresh sequences per step and seed
    steps: int = 1500  # Adam steps per run: the fixed training budget, the same for every cell and T
    learning_rate: float = 3e-3  # Adam step size (the quickstart's)
    max_grad_norm: float = 1.0  # clip_by_global_norm threshold of the sweep (always applied, as make_optimizer does)
    test_size: int = 512  # held-out sequences for the final metric (the same set for every cell and seed)
    copy_length: int = 10  # copy task: symbols to remember (Arjovsky et al. 2016: 10)
    copy_categories: int = 8  # copy task: symbol categories (Arjovsky et al. 2016: 8)
    copy_success_accuracy: float = 0.9  # copy task: per-symbol accuracy on the copied positions that counts as solved
    grad_time: int = 100  # T of the ‖∂L/∂h_t‖ measurement (adding problem; trained params come from the sweep's run)
    grad_batch: int = 128  # sequences averaged in the ‖∂L/∂h_t‖ measurement
    explode_time: int = 100  # T of the exploding-gradient demo (adding problem)
    explode_steps: int = 300  # SGD steps of the exploding-gradient demo, per arm (with and without clipping)
    explode_init_scale: float = 1.5  # relu SimpleRNN recurrent kernel = orthogonal × this (> 1: expanding)
    explode_learning_rate: float = 0.01  # SGD step size of the demo (Pascanu et al. 2013 used plain SGD)
    explode_max_grad_norm: float = 1.0  # clip threshold of the demo's clipped arm
    log_every: int = 100  # steps per jitted chunk (one loss/grad-norm record and one host sync per chunk)
    sections: str = "sweep,gradient_flow,exploding"  # which measurements to run (comma-separated)
    fast_compile: bool = False  # XLA backend optimization level 0: ~4x faster compiles, ~4x slower steps (smoke tests)
    seed: int = 0  # PRNG seed: same seed, same numbers, bit for bit on CPU
    run_dir: str = "runs/gradient_flow"  # config.json, results.json, results.md, *.png
    plots: bool = True  # write the PNG plots (matplotlib)

    def __post_init__(self):
        available = minimal_cell_types()
        known = CLASSIC_CELLS + MINIMAL_CELLS
        for cell in self.cell_names:
            if cell not in known:
                raise ValueError(f"unknown cell {cell!r} in cells; choose from {known}")
            if cell in MINIMAL_CELLS and cell not in available:
                raise ValueError(f"cell {cell!r} needs rnnjax.minimal_cells, which does not import here")
        for section in _split_list(self.sections, "sections"):
            if section not in SECTIONS:
                raise ValueError(f"unknown section {section!r} in sections; choose from {SECTIONS}")
        for task in self.task_names:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r} in tasks; choose from {TASKS}")
        try:
            times = tuple(int(t) for t in _split_list(self.times, "times"))
        except ValueError as error:
            raise ValueError(f"times must be comma-separated ints >= 1, got {self.times!r} ({error})") from None
        minimum = 2 if "adding" in self.task_names else 1  # the adding problem marks one step in each half
        for t in times + (self.grad_time, self.explode_time):
            if t < minimum:
                raise ValueError(f"every T (times, grad_time, explode_time) must be >= {minimum} "
                                 f"({'the adding problem marks one step in each half' if minimum == 2 else 'T >= 1'}), "
                                 f"got {t}")
        for name in ("num_seeds", "hidden_size", "batch_size", "steps", "test_size", "copy_length",
                     "grad_batch", "explode_steps", "log_every"):
            _checks.check_positive_int(name, getattr(self, name))
        if _checks.check_positive_int("copy_categories", self.copy_categories) < 2:
            raise ValueError(f"copy_categories must be >= 2, got {self.copy_categories}")
        _checks.check_choice("initializer", self.initializer, rnnjax.INITIALIZERS)
        for name in ("learning_rate", "max_grad_norm", "explode_init_scale", "explode_learning_rate",
                     "explode_max_grad_norm"):
            _checks.check_positive_float(name, getattr(self, name))
        _checks.check_finite_float("forget_bias", self.forget_bias)
        if not 0.0 < self.copy_success_accuracy <= 1.0:
            raise ValueError(f"copy_success_accuracy must be in (0, 1], got {self.copy_success_accuracy}")
        if not (0 <= self.seed < 2**31):
            raise ValueError(f"seed must be in [0, 2**31), got {self.seed}")

    @property
    def cell_names(self) -> tuple[str, ...]:
        return _split_list(self.cells or default_cells(), "cells")

    @property
    def task_names(self) -> tuple[str, ...]:
        return _split_list(self.tasks, "tasks")

    @property
    def section_names(self) -> tuple[str, ...]:
        return _split_list(self.sections, "sections")

    @property
    def compiler_options(self) -> dict:
        # Code generation only: the same program, compiled with less optimisation.
        return {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False} if self.fast_compile else {}

    @property
    def time_values(self) -> tuple[int, ...]:
        return tuple(int(t) for t in _split_list(self.times, "times"))


# The smoke-test preset: every code path, tiny sizes. Any flag given with --quick overrides it.
QUICK = dict(times="4,6", num_seeds=2, hidden_size=8, batch_size=4, steps=6, test_size=8, copy_length=3,
             copy_categories=4, grad_time=6, grad_batch=4, explode_time=6, explode_steps=6, log_every=3,
             fast_compile=True, run_dir="runs/gradient_flow_quick")


# -- tasks -------------------------------------------------------------------------------------------------------------
def copy_task(key: jax.Array, batch_size: int, time: int, length: int = 10, categories: int = 8):
    """The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016's formulation) with memory length `time`.

    Alphabet: 0 = blank, 1..categories = symbols, categories + 1 = delimiter. A sequence has `time + 2 * length`
    steps: `length` random symbols, `time - 1` blanks, the delimiter, `length` blanks. The target is blank
    everywhere except the last `length` steps, which repeat the symbols in order.

    Returns one-hot inputs `[batch, time + 2 * length, categories + 2]` (float32) and int32 targets
    `[batch, time + 2 * length]`.
    """
    _checks.check_positive_int("time", time)
    symbols = jax.random.randint(key, (batch_size, length), 1, categories + 1)
    blanks = jnp.zeros((batch_size, time - 1), jnp.int32)
    delimiter = jnp.full((batch_size, 1), categories + 1, jnp.int32)
    tail = jnp.zeros((batch_size, length), jnp.int32)
    inputs = jnp.concatenate([symbols, blanks, delimiter, tail], axis=1)
    targets = jnp.concatenate([jnp.zeros((batch_size, time + length), jnp.int32), symbols], axis=1)
    return jax.nn.one_hot(inputs, categories + 2, dtype=jnp.float32), targets


@dataclasses.dataclass(frozen=True)
class Task:
    """One task at one T: its batches, readout size and loss. `loss(outputs, targets)` -> (loss, metric), with
    `outputs` the readout at every step `[time, batch, out]` (time-major); metric is MSE (adding) or copied-position
    accuracy (copy)."""

    name: str
    time: int
    copy_length: int = 10
    copy_categories: int = 8

    @property
    def input_size(self) -> int:
        return 2 if self.name == "adding" else self.copy_categories + 2

    @property
    def output_size(self) -> int:
        return 1 if self.name == "adding" else self.copy_categories + 2

    def batch(self, key: jax.Array, batch_size: int):
        if self.name == "adding":
            return adding_problem(key, batch_size, self.time)
        return copy_task(key, batch_size, self.time, self.copy_length, self.copy_categories)

    def loss(self, outputs: jax.Array, targets: jax.Array):
        if self.name == "adding":
            mse = rnnjax.mean_squared_error(outputs[-1, :, 0], targets)  # many-to-one: the last step only
            return mse, mse
        targets = jnp.swapaxes(targets, 0, 1)  # [time, batch]
        loss = rnnjax.cross_entropy(outputs, targets)  # every step, blanks included (the standard formulation)
        copied = rnnjax.accuracy(outputs[-self.copy_length:], targets[-self.copy_length:])
        return loss, copied

    def solved(self, metric: float, config: Config) -> bool:
        if self.name == "adding":
            return bool(metric < ADDING_SUCCESS_FRACTION * TRIVIAL_MSE)
        return bool(metric >= config.copy_success_accuracy)


def make_task(config: Config, name: str, time: int) -> Task:
    return Task(name, time, config.copy_length, config.copy_categories)


# -- cells and the perturbable time loop -------------------------------------------------------------------------------
def config_cell(name: str, config: Config):
    """`rnnjax.make_cell(name, ...)` with the config's size; the classic cells take the config's initializer and
    the LSTM its forget bias, the minimal cells keep their own default initialisation (nn.Linear's)."""
    if name in MINIMAL_CELLS:
        return rnnjax.make_cell(name, config.hidden_size)
    cell = rnnjax.make_cell(name, config.hidden_size, config.initializer)
    return dataclasses.replace(cell, forget_bias=config.forget_bias) if name == "lstm" else cell


def _hidden(carry):
    """The hidden state `h` of a carry: `carry.h` for (h, c)-style carries, the carry itself otherwise."""
    return carry.h if hasattr(carry, "h") else carry


def _add_to_hidden(carry, delta):
    return carry._replace(h=carry.h + delta) if hasattr(carry, "h") else carry + delta


def hidden_states(cell, params, xs: jax.Array, perturbation: jax.Array | None = None, unroll: int = 1) -> jax.Array:
    """The hidden states `h_1..h_T` `[time, batch, hidden]` of `cell` over `xs` `[batch, time, features]`.

    With `perturbation` `[time, batch, hidden]`, ε_t is added to the carry's `h` right after step t, *before* step
    t + 1 reads it, so a loss on these states has ∂L/∂ε_t = ∂L/∂h_t through the whole rest of the recurrence. With
    a zero perturbation (or None) the states equal `rnnjax.unroll`'s outputs. Cells with `project_inputs` /
    `recurrent_step` get one GEMM for all input projections (as `unroll` does); others run `cell.step`.
    """
    xs_time_major = jnp.swapaxes(xs, 0, 1)
    carry = cell.initial_carry((xs.shape[0],), jnp.float32)
    split = hasattr(cell, "project_inputs") and hasattr(cell, "recurrent_step")
    inputs = cell.project_inputs(params, xs_time_major) if split else xs_time_major
    advance = cell.recurrent_step if split else cell.step

    def body(carry, step_inputs):
        x, epsilon = step_inputs
        carry, _ = advance(params, carry, x)
        if epsilon is not None:
            carry = _add_to_hidden(carry, epsilon)
        return carry, _hidden(carry)

    _, hs = jax.lax.scan(body, carry, (inputs, perturbation), unroll=unroll)
    return hs


def init_model(cell, task: Task, key: jax.Array) -> dict:
    """`{"cell": cell params, "readout": {"weight": [out, H], "bias": [out]}}`; the adding readout's bias starts at
    the mean target 1, so training starts at the trivial baseline (as in the quickstart)."""
    cell_key, readout_key = jax.random.split(key)
    bound = 1.0 / math.sqrt(cell.hidden_size)
    weight = jax.random.uniform(readout_key, (task.output_size, cell.hidden_size), minval=-bound, maxval=bound)
    bias = jnp.ones((1,)) if task.name == "adding" else jnp.zeros((task.output_size,))
    return {"cell": cell.init(cell_key, task.input_size), "readout": {"weight": weight, "bias": bias}}


def apply_model(cell, params: dict, xs: jax.Array, perturbation=None) -> jax.Array:
    """Readout at every step, time-major `[time, batch, out]`."""
    hs = hidden_states(cell, params["cell"], xs, perturbation)
    readout = params["readout"]
    return jnp.einsum("tbh,oh->tbo", hs, readout["weight"]) + readout["bias"][None, None, :]


def hidden_gradient_norms(cell, params: dict, task: Task, xs: jax.Array, targets: jax.Array) -> jax.Array:
    """‖∂L_i/∂h_t‖ averaged over the batch's sequences i, for t = 1..T: `[time]`. `L_i` is sequence i's loss on
    the last step (`task` must be the adding problem), so the gradient at h_t measures how much of the last step's
    error signal reaches step t."""
    if task.name != "adding":
        raise ValueError("hidden_gradient_norms needs a loss on the last step only: the adding task")

    def total_loss(perturbation):
        outputs = apply_model(cell, params, xs, perturbation)
        return jnp.sum(jnp.square(outputs[-1, :, 0] - targets))  # a sum: each sequence's gradient stays its own

    perturbation = jnp.zeros((xs.shape[1], xs.shape[0], cell.hidden_size), jnp.float32)
    grads = jax.grad(total_loss)(perturbation)  # [time, batch, hidden]
    return jnp.mean(jnp.linalg.norm(grads, axis=-1), axis=1)


# -- training several seeds at once ------------------------------------------------------------------------------------
def _run_keys(config: Config, num_seeds: int):
    """Per seed index s: (init key, data key, train-state key), all from (config.seed, s): the same for every cell."""
    base = jax.random.key(config.seed)
    runs = [jax.random.fold_in(base, s) for s in range(num_seeds)]
    return tuple(jnp.stack([jax.random.fold_in(k, purpose) for k in runs]) for purpose in (0, 1, 2))


def _test_key(config: Config) -> jax.Array:
    return jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)


def _chunk_lengths(steps: int, chunk: int) -> list[int]:
    return [chunk] * (steps // chunk) + ([steps % chunk] if steps % chunk else [])


def train_seeds(cell, task: Task, optimizer: optax.GradientTransformation, params, config: Config, steps: int,
                batch_size: int, data_keys: jax.Array, state_keys: jax.Array, record_steps: bool = False):
    """Trains the stacked `params` (leading axis: seed) with `rnnjax.train.train_step_fn` vmapped over seeds,
    `log_every` steps per jitted `lax.scan` chunk; batches are drawn inside the step from `fold_in(data_key, step)`.

    Returns `(params, history)`: history holds per chunk the mean loss and max pre-clip gradient norm per seed
    (`[chunks, seeds]`), and with `record_steps` also every step's `grad_norm`, `loss`, `finite` (`[steps, seeds]`).
    """

    def loss_fn(model_params, carry, batch, key):
        del key  # no dropout
        xs, targets = batch
        loss, metric = task.loss(apply_model(cell, model_params, xs), targets)
        return loss, (carry, {"metric": metric})

    train_step = rnnjax.train.train_step_fn(loss_fn, optimizer)
    states = jax.vmap(lambda p, k: rnnjax.train.create_train_state(p, optimizer, k))(params, state_keys)

    @functools.partial(jax.jit, static_argnums=2, compiler_options=config.compiler_options)
    def run_chunk(states, data_keys, length):
        def one_seed(state, data_key):
            def body(state, _):
                batch = task.batch(jax.random.fold_in(data_key, state.step), batch_size)
                state, metrics = train_step(state, batch)
                return state, (metrics["loss"], metrics["grad_norm"], metrics["finite"])

            return jax.lax.scan(body, state, None, length=length)

        return jax.vmap(one_seed)(states, data_keys)

    history: dict[str, list] = {"step": [], "loss": [], "max_grad_norm": [], "skipped": []}
    per_step: dict[str, list] = {"grad_norm": [], "loss": [], "finite": []}
    done = 0
    for length in _chunk_lengths(steps, config.log_every):
        states, (losses, norms, finite) = run_chunk(states, data_keys, length)
        losses, norms, finite = (np.asarray(a) for a in (losses, norms, finite))  # [seeds, length]
        done += length
        history["step"].append(done)
        kept = finite > 0  # a chunk whose steps were all non-finite has no mean loss: NaN
        history["loss"].append([float(np.mean(loss[k])) if k.any() else float("nan") for loss, k in zip(losses, kept)])
        history["max_grad_norm"].append(np.max(norms, axis=1).tolist())
        history["skipped"].append((length - finite.sum(axis=1)).astype(int).tolist())
        if record_steps:
            per_step["grad_norm"].append(norms.T)
            per_step["loss"].append(losses.T)
            per_step["finite"].append(finite.T)
    if record_steps:
        history.update({name: np.concatenate(parts).tolist() for name, parts in per_step.items()})
    history["bad_steps_at_end"] = np.asarray(states.bad_steps).tolist()
    history["skipped_steps"] = np.asarray(states.skipped_steps).tolist()
    return states.params, history


def evaluate_seeds(cell, task: Task, params, xs, targets, config: Config) -> np.ndarray:
    """The task metric (adding: MSE; copy: copied-position accuracy) of each seed's params: `[seeds]`."""
    metric = jax.jit(jax.vmap(lambda p: task.loss(apply_model(cell, p, xs), targets)[1]),
                     compiler_options=config.compiler_options)(params)
    return np.asarray(metric)


def _optimizer(config: Config) -> optax.GradientTransformation:
    return rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(
        optimizer="adam", learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm))


def run_sweep(config: Config, print_fn: Callable = print) -> tuple[list[dict], dict]:
    """Every (task, cell, T): `num_seeds` seeds trained for `steps`, evaluated on one test set. Returns the rows and
    the seed-0 trained parameters of the adding runs at `grad_time` (reused by the gradient-flow measurement)."""
    rows, kept = [], {}
    init_keys, data_keys, state_keys = _run_keys(config, config.num_seeds)
    optimizer = _optimizer(config)
    for task_name in config.task_names:
        for time_steps in config.time_values:
            task = make_task(config, task_name, time_steps)
            test_xs, test_targets = task.batch(_test_key(config), config.test_size)
            for cell_name in config.cell_names:
                cell = config_cell(cell_name, config)
                started = time.perf_counter()
                params = jax.jit(jax.vmap(lambda k: init_model(cell, task, k)),
                                 compiler_options=config.compiler_options)(init_keys)
                params, history = train_seeds(cell, task, optimizer, params, config, config.steps,
                                              config.batch_size, data_keys, state_keys)
                metrics = evaluate_seeds(cell, task, params, test_xs, test_targets, config)
                solved = [task.solved(float(m), config) for m in metrics]
                row = {"task": task_name, "cell": cell_name, "time": time_steps, "metric": metrics.tolist(),
                       "solved": solved, "success_rate": sum(solved) / len(solved),
                       "seconds": round(time.perf_counter() - started, 1), "history": history}
                rows.append(row)
                print_fn(f"{task_name:6s} T={time_steps:<4d} {cell_name:8s} "
                         f"{'mse' if task_name == 'adding' else 'acc'} "
                         + " ".join(f"{m:.4f}" for m in metrics)
                         + f"  solved {sum(solved)}/{len(solved)}  ({row['seconds']} s)")
                if task_name == "adding" and time_steps == config.grad_time:
                    kept[cell_name] = jax.tree.map(lambda leaf: leaf[0], params)
    return rows, kept


# -- gradient flow -----------------------------------------------------------------------------------------------------
def run_gradient_flow(config: Config, trained: dict, print_fn: Callable = print) -> dict:
    """‖∂L/∂h_t‖ per cell at initialisation and after training (seed index 0), on one fixed adding batch."""
    task = make_task(config, "adding", config.grad_time)
    xs, targets = task.batch(jax.random.fold_in(_test_key(config), 1), config.grad_batch)
    init_keys, data_keys, state_keys = _run_keys(config, 1)
    results = {}
    for cell_name in config.cell_names:
        cell = config_cell(cell_name, config)
        initial = init_model(cell, task, init_keys[0])
        if cell_name not in trained:  # the sweep did not train (adding, grad_time): train seed 0 here, same budget
            stacked, _ = train_seeds(cell, task, _optimizer(config), jax.tree.map(lambda a: a[None], initial),
                                     config, config.steps, config.batch_size, data_keys, state_keys)
            trained[cell_name] = jax.tree.map(lambda leaf: leaf[0], stacked)
        norms = jax.jit(lambda p, cell=cell: hidden_gradient_norms(cell, p, task, xs, targets),
                        compiler_options=config.compiler_options)
        at_init, after = np.asarray(norms(initial)), np.asarray(norms(trained[cell_name]))
        results[cell_name] = {"init": at_init.tolist(), "trained": after.tolist()}
        ratio = lambda g: float(g[0] / g[-1]) if g[-1] else float("nan")  # noqa: E731
        print_fn(f"grad-flow {cell_name:8s} ‖∂L/∂h_1‖/‖∂L/∂h_T‖: init {ratio(at_init):.3g}, trained "
                 f"{ratio(after):.3g}")
    return results


# -- exploding gradients -----------------------------------------------------------------------------------------------
def run_exploding(config: Config, print_fn: Callable = print) -> dict:
    """A relu SimpleRNN with recurrent kernel `orthogonal × explode_init_scale`, plain SGD with and without
    `clip_by_global_norm`; every step's pre-clip global gradient norm."""
    task = make_task(config, "adding", config.explode_time)
    cell = SimpleRNN(config.hidden_size, "orthogonal", activation="relu")
    init_keys, data_keys, state_keys = _run_keys(config, 1)
    params = init_model(cell, task, init_keys[0])
    params["cell"] = params["cell"]._replace(weight_hh=params["cell"].weight_hh * config.explode_init_scale)
    params = jax.tree.map(lambda a: a[None], params)
    arms = {
        "clipped": rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(
            optimizer="sgd", learning_rate=config.explode_learning_rate, max_grad_norm=config.explode_max_grad_norm)),
        "unclipped": optax.sgd(config.explode_learning_rate),  # the same update without the clip link
    }
    test_xs, test_targets = task.batch(_test_key(config), config.test_size)
    results = {}
    for arm, optimizer in arms.items():
        trained, history = train_seeds(cell, task, optimizer, params, config, config.explode_steps,
                                       config.batch_size, data_keys, state_keys, record_steps=True)
        norms = np.asarray(history["grad_norm"])[:, 0]
        finite = np.asarray(history["finite"])[:, 0] > 0
        test_mse = float(evaluate_seeds(cell, task, trained, test_xs, test_targets, config)[0])
        first_bad = int(np.argmin(finite)) + 1 if not finite.all() else None  # 1-based, as the plot
        results[arm] = {
            "grad_norm": norms.tolist(), "loss": np.asarray(history["loss"])[:, 0].tolist(),
            "finite": finite.astype(int).tolist(), "skipped_steps": int((~finite).sum()),
            "first_non_finite_step": first_bad, "consecutive_bad_at_end": history["bad_steps_at_end"][0],
            # the trainer (rnnjax.train.fit) raises NonFiniteError after max_bad_steps=10 consecutive non-finite steps
            "trainer_would_raise": history["bad_steps_at_end"][0] >= 10 or _max_run(~finite) >= 10,
            "max_finite_grad_norm": float(np.max(norms[finite])) if finite.any() else None,
            "median_grad_norm": float(np.median(norms[finite])) if finite.any() else None,
            "test_mse": test_mse,
        }
        print_fn(f"exploding {arm:9s}: pre-clip norm at step 1 {norms[0]:.3g}, max finite "
                 f"{results[arm]['max_finite_grad_norm']}, non-finite steps {results[arm]['skipped_steps']}"
                 f"/{len(norms)} (first: {first_bad}), test MSE {test_mse:.4g}")
    return results


def _max_run(flags: np.ndarray) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


# -- reporting ---------------------------------------------------------------------------------------------------------
def success_tables(rows: list[dict], config: Config) -> str:
    """Markdown: one table per task, cells × T, each entry `solved/seeds (mean metric)`."""
    lines = []
    for task_name in config.task_names:
        metric = "test MSE" if task_name == "adding" else "copied-symbol accuracy"
        rule = (f"MSE < {ADDING_SUCCESS_FRACTION * TRIVIAL_MSE:.4f}" if task_name == "adding"
                else f"accuracy >= {config.copy_success_accuracy}")
        lines += [f"**{task_name}** — seeds solved ({rule}) and mean {metric}", "",
                  "| cell | " + " | ".join(f"T={t}" for t in config.time_values) + " |",
                  "|---|" + "---|" * len(config.time_values)]
        for cell_name in config.cell_names:
            entries = []
            for t in config.time_values:
                row = next(r for r in rows if (r["task"], r["cell"], r["time"]) == (task_name, cell_name, t))
                entries.append(f"{sum(row['solved'])}/{len(row['solved'])} ({np.mean(row['metric']):.3g})")
            lines.append(f"| {cell_name} | " + " | ".join(entries) + " |")
        lines.append("")
    return "\n".join(lines)


def write_plots(run_dir: pathlib.Path, config: Config, rows, gradients, exploding) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only
    from matplotlib import pyplot

    written = []

    def save(figure, name):
        path = run_dir / name
        figure.savefig(path, dpi=100, bbox_inches="tight")
        pyplot.close(figure)
        written.append(path.name)

    for cell_name, curves in gradients.items():  # one plot per cell, log scale
        figure, axes = pyplot.subplots(figsize=(6, 4))
        steps = np.arange(1, len(curves["init"]) + 1)
        for label, values in (("at initialisation", curves["init"]), ("after training", curves["trained"])):
            axes.plot(steps, np.maximum(values, 1e-30), label=label)
        axes.set_yscale("log")
        axes.set_xlabel("t")
        axes.set_ylabel("mean ‖∂L/∂h_t‖")
        axes.set_title(f"{cell_name}: adding problem, T={config.grad_time}, loss on the last step")
        axes.legend()
        axes.grid(alpha=0.3)
        save(figure, f"grad_flow_{cell_name}.png")

    if gradients:  # every cell on one pair of axes, for comparison
        figure, panels = pyplot.subplots(1, 2, figsize=(12, 4), sharey=True)
        for panel, when in zip(panels, ("init", "trained")):
            for cell_name, curves in gradients.items():
                panel.plot(np.arange(1, config.grad_time + 1), np.maximum(curves[when], 1e-30), label=cell_name)
            panel.set_yscale("log")
            panel.set_xlabel("t")
            panel.set_title("at initialisation" if when == "init" else "after training")
            panel.grid(alpha=0.3)
        panels[0].set_ylabel("mean ‖∂L/∂h_t‖")
        panels[1].legend()
        save(figure, "grad_flow_all.png")

    if rows:
        figure, panels = pyplot.subplots(1, len(config.task_names), figsize=(6 * len(config.task_names), 4),
                                         squeeze=False)
        for panel, task_name in zip(panels[0], config.task_names):
            for cell_name in config.cell_names:
                rates = [next(r["success_rate"] for r in rows if (r["task"], r["cell"], r["time"]) ==
                              (task_name, cell_name, t)) for t in config.time_values]
                panel.plot(config.time_values, rates, marker="o", label=cell_name)
            panel.set_xscale("log")
            panel.set_xticks(config.time_values, [str(t) for t in config.time_values])
            panel.set_ylim(-0.05, 1.05)
            panel.set_xlabel("T")
            panel.set_ylabel(f"success rate ({config.num_seeds} seeds)")
            panel.set_title(f"{task_name}: {config.steps} steps × batch {config.batch_size}, H={config.hidden_size}")
            panel.grid(alpha=0.3)
            panel.legend()
        save(figure, "success.png")

    if exploding:
        figure, axes = pyplot.subplots(figsize=(7, 4))
        for arm, result in exploding.items():
            norms = np.asarray(result["grad_norm"], dtype=float)
            shown = np.where(np.isfinite(norms), norms, np.nan)
            line, = axes.plot(np.arange(1, len(norms) + 1), shown, label=f"SGD {arm}")
            bad = np.flatnonzero(~np.isfinite(norms))
            if bad.size:
                top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
                axes.plot(bad + 1, np.full(bad.size, top), "x", color=line.get_color(),
                          label=f"{arm}: non-finite ({bad.size} steps)")
        axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel("pre-clip global gradient norm")
        axes.set_title(f"relu RNN, recurrent init orthogonal × {config.explode_init_scale}, adding T="
                       f"{config.explode_time}")
        axes.legend()
        axes.grid(alpha=0.3)
        save(figure, "exploding.png")
    return written


def run(config: Config, print_fn: Callable = print) -> dict:
    """The whole experiment; writes the run directory and returns the results (also in results.json)."""
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": dataclasses.asdict(config), "cells": list(config.cell_names), "jax": jax.__version__,
              "devices": [str(d) for d in jax.devices()]}
    write_json_atomic(run_dir / "config.json", record)
    started = time.perf_counter()
    sections = config.section_names
    rows, trained = run_sweep(config, print_fn) if "sweep" in sections else ([], {})
    sweep_seconds = time.perf_counter() - started
    gradients = run_gradient_flow(config, trained, print_fn) if "gradient_flow" in sections else {}
    exploding = run_exploding(config, print_fn) if "exploding" in sections else {}
    tables = success_tables(rows, config) if rows else ""
    results = {"config": record["config"], "cells": list(config.cell_names), "sweep": rows,
               "gradient_flow": gradients, "exploding": exploding, "sweep_seconds": round(sweep_seconds, 1),
               "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(run_dir / "results.json", results, indent=None, default=float)
    write_text_atomic(run_dir / "results.md", tables)
    results["plots"] = write_plots(run_dir, config, rows, gradients, exploding) if config.plots else []
    print_fn(tables)
    print_fn(f"{results['seconds']} s in all ({results['sweep_seconds']} s sweep); run directory: {run_dir}")
    return results


def validate(config: Config) -> None:
    """What `Config.__post_init__` cannot check without touching the disk: that `run_dir` can be written."""
    cli.check_run_dir(config.run_dir)


def parse_config(argv=None) -> Config:
    """A `Config` from `--field value` flags over the optional `--quick` preset, validated (`Config.__post_init__`,
    `validate`); an unknown flag or a bad value exits with status 2 and one line naming the flag."""
    return parse_config_flags(Config, argv, __doc__.split("\n\n")[0], quick=QUICK, validate=validate,
                              exit_on_error=True, run_flags=("overwrite",))


def main(argv=None) -> dict:
    return cli.run_main(argv, parse_config, run, trains=False)  # a sweep of its own, not through fit


if __name__ == "__main__":
    main()
