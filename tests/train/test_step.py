"""The train state and steps: the non-finite guard, truncated-BPTT carry, donation, a manual loop, metric sums."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import toy_training
from helpers import assert_trees_close, assert_trees_equal
from rnnjax.train.step import (
    accumulate_metrics,
    create_train_state,
    make_train_step,
    summarize_metrics,
    train_step_fn,
    zeros_like_metrics,
)


def toy_setup():
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    state = toy_training.make_state(0, optimizer)
    batches = list(toy_training.batches(0, 0))
    return optimizer, state, batches


def test_a_finite_step_updates_params_carry_and_counters():
    optimizer, state, batches = toy_setup()
    new, metrics = train_step_fn(toy_training.loss_fn, optimizer)(state, batches[0])
    assert int(new.step) == 1 and int(new.bad_steps) == 0 and int(new.skipped_steps) == 0
    assert not np.array_equal(new.params["dense"], state.params["dense"])
    assert not np.array_equal(new.carry.h, state.carry.h)  # the carry moved on to the next window
    assert float(metrics["finite"]) == 1.0 and float(metrics["grad_norm"]) > 0
    assert not np.array_equal(new.key, state.key)


def test_a_non_finite_step_changes_nothing_but_the_counters():
    optimizer, state, batches = toy_setup()
    poisoned = dict(batches[0], poison=np.ones_like(batches[0]["poison"]))
    step = train_step_fn(toy_training.loss_fn, optimizer)
    bad, metrics = step(state, poisoned)
    assert float(metrics["finite"]) == 0.0
    assert_trees_equal(bad.params, state.params)
    assert_trees_equal(bad.opt_state, state.opt_state)
    assert_trees_equal(bad.carry, state.carry)
    assert (int(bad.step), int(bad.bad_steps), int(bad.skipped_steps)) == (1, 1, 1)
    worse, _ = step(bad, poisoned)
    assert (int(worse.bad_steps), int(worse.skipped_steps)) == (2, 2)
    recovered, _ = step(worse, batches[1])
    assert (int(recovered.bad_steps), int(recovered.skipped_steps)) == (0, 2)  # consecutive count resets


def test_jitted_step_donates_and_equals_the_pure_step():
    optimizer, state, batches = toy_setup()
    expected, _ = train_step_fn(toy_training.loss_fn, optimizer)(state, batches[0])
    fresh = toy_training.make_state(0, optimizer)  # straight from create_train_state: no copy needed to donate it
    got, _ = make_train_step(toy_training.loss_fn, optimizer)(fresh, batches[0])
    assert_trees_close(got.params, expected.params)  # jit fuses differently from eager: an ulp apart at most
    assert fresh.params["dense"].is_deleted()  # donated: the input buffers were handed to the output


def test_a_fresh_state_has_no_shared_buffers_and_a_manual_loop_runs():
    optimizer, _, batches = toy_setup()
    params = toy_training.init_params(jax.random.key(0))
    state = create_train_state(params, optimizer, jax.random.key(1), carry=toy_training.MODEL.initial_carry(
        toy_training.BATCH))
    buffers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state) if isinstance(leaf, jax.Array)
               and not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)]
    assert len(buffers) == len(set(buffers))
    step = make_train_step(toy_training.loss_fn, optimizer)
    for batch in batches[:3]:  # the README's manual loop: the step donates, so `state` is rebound every time
        state, metrics = step(state, batch)
    assert int(state.step) == 3 and bool(jnp.isfinite(metrics["loss"]))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(params))  # copied, never donated


def test_metric_sums_skip_non_finite_steps():
    sums = zeros_like_metrics(["loss", "grad_norm", "finite"])
    assert set(sums) == {"loss", "grad_norm", "count", "steps"}
    sums = accumulate_metrics(sums, {"loss": 2.0, "grad_norm": 1.0, "finite": 1.0})
    sums = accumulate_metrics(sums, {"loss": jnp.nan, "grad_norm": jnp.inf, "finite": 0.0})
    sums = accumulate_metrics(sums, {"loss": 4.0, "grad_norm": 3.0, "finite": 1.0})
    assert summarize_metrics(sums) == {"loss": 3.0, "grad_norm": 2.0, "skipped": 1}


def test_create_train_state_starts_at_zero(key):
    optimizer = optax.sgd(0.1)
    state = create_train_state({"w": jnp.ones(2)}, optimizer, key)
    assert (int(state.step), int(state.bad_steps), int(state.skipped_steps)) == (0, 0, 0)
    assert state.carry is None


def test_the_jitted_step_traces_once_for_a_whole_run():
    optimizer, state, batches = toy_setup()
    loss_fn = chex.assert_max_traces(toy_training.loss_fn, n=1)  # a second trace (a recompile) raises
    step = make_train_step(loss_fn, optimizer)
    for batch in batches * 2:
        state, _ = step(state, batch)
    assert int(state.step) == 2 * len(batches)
