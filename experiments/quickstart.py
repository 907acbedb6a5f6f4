"""Quickstart experiment: a many-to-one recurrent regressor trained on the adding problem, no download needed.

The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015): each input step is a pair
(value ~ U(0, 1), marker); exactly two steps are marked, one in each half of the sequence, and the target is the
sum of the two marked values. Always predicting 1 scores MSE 1/6 ≈ 0.167; a model that has learned to carry the
marked values across the sequence scores far below it.

    python -m experiments.quickstart                       # LSTM, T = 50, about a minute on 2 CPU cores
    python -m experiments.quickstart --mode gru --time 100 --steps 1500 --seed 1

Prints its full config, the loss every `log_every` steps and a final test MSE; bit-for-bit repeatable per seed on
CPU. Training goes through rnnjax's engine (`rnnjax.train.fit`): Adam behind `clip_by_global_norm`, the whole train step
under `jit`, a run directory with metrics, plots and a final checkpoint.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

import rnnjax
from experiments import cli
from rnnjax import _checks

TRIVIAL_MSE = 1.0 / 6.0  # variance of U(0,1) + U(0,1): the error of always predicting the mean, 1
QUICK = dict(steps=20, time=10, hidden_size=8, batch_size=8, test_size=64, log_every=5,
             run_dir="runs/quickstart_quick")  # seconds: the smoke run


@dataclasses.dataclass(frozen=True)
class Config:
    mode: str = "lstm"  # "lstm" | "gru" | "rnn_tanh" | "rnn_relu"
    hidden_size: int = 64  # units per layer
    num_layers: int = 1  # stacked recurrent layers
    time: int = 50  # sequence length T (harder as it grows)
    batch_size: int = 64  # sequences per step, drawn fresh every step
    steps: int = 1000  # optimizer steps
    learning_rate: float = 3e-3  # Adam step size
    max_grad_norm: float = 1.0  # clip_by_global_norm threshold
    test_size: int = 1024  # held-out sequences for the final MSE
    log_every: int = 100  # steps between printed losses
    seed: int = 0  # PRNG seed: same seed, same numbers
    run_dir: str = "runs/quickstart"  # config.json, metrics.jsonl, summary.json, plots/, checkpoints/
    resume: bool = False  # continue the run in run_dir from its newest checkpoint instead of starting over
    quiet: bool = False  # no progress bar, no plots


def adding_problem(key: jax.Array, batch_size: int, time: int) -> tuple[jax.Array, jax.Array]:
    """Inputs `[batch, time, 2]` (value, marker) and targets `[batch]`: the sum of the two marked values."""
    value_key, first_key, second_key = jax.random.split(key, 3)
    values = jax.random.uniform(value_key, (batch_size, time))
    half = time // 2
    first = jax.random.randint(first_key, (batch_size,), 0, half)
    second = jax.random.randint(second_key, (batch_size,), half, time)
    steps = jnp.arange(time)[None, :]
    markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(jnp.float32)
    return jnp.stack([values, markers], axis=-1), jnp.sum(values * markers, axis=1)


def make_model(config: Config):
    """The recurrent stack and a dense read-out of its last output: a many-to-one regressor."""
    model = rnnjax.RNN(config.mode, input_size=2, hidden_size=config.hidden_size, num_layers=config.num_layers)

    def init(key):
        rnn_key, dense_key = jax.random.split(key)
        bound = 1.0 / config.hidden_size**0.5
        return {
            "rnn": model.init(rnn_key),
            "dense": jax.random.uniform(dense_key, (config.hidden_size,), minval=-bound, maxval=bound),
            "bias": jnp.ones(()),  # start at the mean target, so the baseline is where training begins
        }

    def predict(params, xs):
        ys, _ = model.apply(params["rnn"], xs)
        return ys[:, -1] @ params["dense"] + params["bias"]

    return init, predict


def run(config: Config, print_fn=print) -> dict:
    """Trains through the engine (`rnnjax.train.fit`) and evaluates; returns the summary (also printed)."""
    init, predict = make_model(config)
    optimizer = rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(
        optimizer="adam", learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm))
    init_key, data_key, test_key, state_key = jax.random.split(jax.random.key(config.seed), 4)
    state = rnnjax.train.create_train_state(init(init_key), optimizer, state_key)

    def loss_fn(params, carry, batch, key):
        del key  # no dropout
        predictions = predict(params, batch["xs"])
        return rnnjax.mean_squared_error(predictions, batch["targets"]), (carry, {})

    make_batch = jax.jit(lambda index: dict(zip(("xs", "targets"), adding_problem(
        jax.random.fold_in(data_key, index), config.batch_size, config.time))))

    def train_batches(epoch):  # one epoch of `steps` fresh batches, a pure function of (seed, step)
        return (make_batch(epoch * config.steps + index) for index in range(config.steps))

    test_xs, test_targets = adding_problem(test_key, config.test_size, config.time)

    def evaluate(params):
        return {"test_mse": jax.jit(lambda p: rnnjax.mean_squared_error(predict(p, test_xs), test_targets))(params)}

    trainer = rnnjax.train.TrainerConfig(run_dir=config.run_dir, num_epochs=1, log_every=config.log_every,
                                   checkpoint_every=config.steps, quiet=config.quiet, plots=not config.quiet)
    start = time.perf_counter()
    state, run_summary = cli.fit(trainer, state, rnnjax.train.train_step_fn(loss_fn, optimizer),
                                          train_batches, evaluate=evaluate, run_config=dataclasses.asdict(config),
                                          tokens_per_batch=config.batch_size * config.time, resume=config.resume,
                                          steps_per_epoch=config.steps)
    test_mse = run_summary["valid"]["test_mse"]  # held-out sequences, logged as the epoch's evaluation
    summary = {
        "test_mse": test_mse,
        "trivial_mse": TRIVIAL_MSE,
        "solved": test_mse < 0.1 * TRIVIAL_MSE,
        "steps": run_summary["steps"],
        "seconds": round(time.perf_counter() - start, 1),
        "run_dir": config.run_dir,
    }
    cli.print_table(summary, title="result", print_fn=print_fn)
    return summary


def validate(config: Config) -> None:
    """Raises a ValueError naming the first invalid field of `config`; run before anything is computed or written
    (the command line shows the field as its flag)."""
    rnnjax.RNN(config.mode, 2, config.hidden_size, config.num_layers)  # mode and sizes
    if _checks.check_positive_int("time", config.time) < 2:
        raise ValueError(f"time must be >= 2 (the adding problem marks one step in each half), got {config.time}")
    for name in ("batch_size", "steps", "test_size", "log_every"):
        _checks.check_positive_int(name, getattr(config, name))
    _checks.check_nonnegative_int("seed", config.seed)
    rnnjax.train.OptimizerConfig(optimizer="adam", learning_rate=config.learning_rate,
                                 max_grad_norm=config.max_grad_norm)
    cli.check_run_dir(config.run_dir)


def parse_config(argv=None) -> Config:
    """A `Config` from `--field value` flags, validated (`validate`); an unknown flag or a bad value exits with
    status 2 and one line naming the flag."""
    return cli.parse_config_flags(Config, argv, __doc__.split("\n\n")[0], quick=QUICK, validate=validate,
                                  exit_on_error=True, choices={"mode": rnnjax.MODES}, run_flags=True)


def main(argv=None) -> dict:
    return cli.run_main(argv, parse_config, run)


if __name__ == "__main__":
    main()
