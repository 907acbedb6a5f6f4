"""Quickstart experiment: a many-to-one recurrent regressor trained on the adding problem, no download needed.

The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015): each input step is a pair
(value ~ U(0, 1), marker); exactly two steps are marked, one in each half of the sequence, and the target is the
sum of the two marked values. Always predicting 1 scores MSE 1/6 ≈ 0.167; a model that has learned to carry the
marked values across the sequence scores far below it.

    python -m experiments.quickstart                       # LSTM, T = 50, about a minute on 2 CPU cores
    python -m experiments.quickstart --mode gru --time 100 --steps 1500 --seed 1

Prints its full config, the loss every `log_every` steps and a final test MSE; bit-for-bit repeatable per seed on
CPU. Training: optax Adam behind `clip_by_global_norm`, the whole train step under `jit`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import optax

import rnnjax

TRIVIAL_MSE = 1.0 / 6.0  # variance of U(0,1) + U(0,1): the error of always predicting the mean, 1


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
    """Trains and evaluates; returns the summary (also printed)."""
    init, predict = make_model(config)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate))
    init_key, data_key, test_key = jax.random.split(jax.random.key(config.seed), 3)
    params = init(init_key)
    opt_state = optimizer.init(params)

    def mse(params, xs, targets):
        return jnp.mean((predict(params, xs) - targets) ** 2)

    @jax.jit
    def train_step(params, opt_state, key):
        xs, targets = adding_problem(key, config.batch_size, config.time)
        loss, grads = jax.value_and_grad(mse)(params, xs, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    start = time.perf_counter()
    for step, key in enumerate(jax.random.split(data_key, config.steps), start=1):
        params, opt_state, loss, grad_norm = train_step(params, opt_state, key)
        if step % config.log_every == 0 or step == config.steps:
            print_fn(f"step {step:5d}  loss {float(loss):.5f}  grad_norm {float(grad_norm):.3f}  "
                     f"({time.perf_counter() - start:.1f}s)")
    test_mse = float(jax.jit(mse)(params, *adding_problem(test_key, config.test_size, config.time)))
    summary = {
        "test_mse": test_mse,
        "trivial_mse": TRIVIAL_MSE,
        "solved": test_mse < 0.1 * TRIVIAL_MSE,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print_fn(json.dumps(summary))
    return summary


def parse_config(argv=None) -> Config:
    """A `Config` from `--field value` flags; unknown flags are rejected."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    for field in dataclasses.fields(Config):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    config = Config(**vars(parser.parse_args(argv)))
    rnnjax.RNN(config.mode, 2, config.hidden_size, config.num_layers)  # validates mode and sizes with clear errors
    return config


def main(argv=None) -> dict:
    config = parse_config(argv)
    print(json.dumps({"config": dataclasses.asdict(config), "jax": jax.__version__,
                      "devices": [str(device) for device in jax.devices()]}))
    return run(config)


if __name__ == "__main__":
    main()
