"""A tiny training run through the whole engine, used by tests/test_trainer.py in-process and as a subprocess
(the kill-and-resume test SIGKILLs it mid-run).

Task: a stream of random 2-feature windows; the target of each window is the mean of its inputs over time, read
out from an LSTM's last output. The LSTM's carry flows from window to window (truncated BPTT) and is reset every
epoch. Batches are a pure function of (seed, epoch, batch index), as `fit` requires.

    python tests/toy_training.py RUN_DIR [--epochs 3] [--checkpoint-every 4] [--sleep 0.0] [--poison-from -1]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax.train.optimizer import OptimizerConfig, make_optimizer
from rnnjax.train.loop import TrainerConfig, fit
from rnnjax.train.step import create_train_state, train_step_fn

BATCH, TIME, FEATURES, HIDDEN, BATCHES_PER_EPOCH = 8, 5, 2, 8, 6
MODEL = rnnjax.RNN("lstm", FEATURES, HIDDEN)


def batches(seed: int, epoch: int, poison_from: int = -1, sleep: float = 0.0):
    """The epoch's batches; from global batch index `poison_from` on, each batch asks for a NaN loss."""
    rng = np.random.default_rng([seed, epoch])
    for index in range(BATCHES_PER_EPOCH):
        xs = rng.standard_normal((BATCH, TIME, FEATURES)).astype(np.float32)
        global_index = epoch * BATCHES_PER_EPOCH + index
        poison = np.full((BATCH,), float(0 <= poison_from <= global_index), np.float32)
        if sleep:
            time.sleep(sleep)  # slows the run down so a test can kill it mid-way
        yield {"xs": xs, "targets": xs.mean(axis=(1, 2)), "poison": poison}


def init_params(key):
    rnn_key, dense_key = jax.random.split(key)
    return {"rnn": MODEL.init(rnn_key), "dense": 0.1 * jax.random.normal(dense_key, (HIDDEN,))}


def loss_fn(params, carry, batch, key):
    del key  # no dropout in the toy
    ys, carry = MODEL.apply(params["rnn"], batch["xs"], carry=carry)
    predictions = ys[:, -1] @ params["dense"]
    loss = rnnjax.mean_squared_error(predictions, batch["targets"])
    loss = loss + jnp.where(jnp.any(batch["poison"] > 0), jnp.nan, 0.0)
    return loss, (carry, {"mae": rnnjax.mean_absolute_error(predictions, batch["targets"])})


def make_state(seed: int, optimizer):
    return create_train_state(init_params(jax.random.key(seed)), optimizer, jax.random.key(seed + 1),
                              carry=MODEL.initial_carry(BATCH))


def checkpoint_params(directory, step: int, template):
    """The params stored in one checkpoint of a run."""
    from rnnjax.train.checkpoint import checkpoint_path, load_checkpoint

    return load_checkpoint(checkpoint_path(directory, step), template)[0].params


def validation_loss(params):
    """The loss on a fixed batch, from a fresh carry: an `evaluate` for `fit`."""
    batch = next(batches(seed=99, epoch=0))
    return {"valid_loss": loss_fn(params, MODEL.initial_carry(BATCH), batch, None)[0]}


def run(run_dir, *, seed=0, epochs=3, checkpoint_every=4, log_every=2, sleep=0.0, poison_from=-1, max_bad_steps=3,
        resume=True, overwrite=False, place_batch=None, state_transform=None, evaluate=None, best_metric=None,
        best_mode="min"):
    optimizer = make_optimizer(OptimizerConfig(optimizer="adam", learning_rate=1e-2, max_grad_norm=1.0))
    state = make_state(seed, optimizer)
    if state_transform is not None:
        state = state_transform(state)
    config = TrainerConfig(run_dir=str(run_dir), num_epochs=epochs, log_every=log_every,
                           checkpoint_every=checkpoint_every, keep_checkpoints=2, max_bad_steps=max_bad_steps,
                           quiet=True, plots=False, best_metric=best_metric, best_mode=best_mode)
    return fit(config, state, train_step_fn(loss_fn, optimizer),
               lambda epoch: batches(seed, epoch, poison_from, sleep),
               initial_carry=lambda: MODEL.initial_carry(BATCH), run_config={"seed": seed, "toy": True},
               tokens_per_batch=BATCH * TIME, resume=resume, overwrite=overwrite,
               place_batch=place_batch, evaluate=evaluate)


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("run_dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    state, summary = run(args.run_dir, seed=args.seed, epochs=args.epochs, checkpoint_every=args.checkpoint_every,
                         sleep=args.sleep)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
