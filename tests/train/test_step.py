"""The train state and steps: the non-finite guard, truncated-BPTT carry, donation, a manual loop, metric sums, and
the value checks the step runs under checkify (out-of-range ids and labels raise from the jitted step)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import rnnjax
import toy_training
from helpers import FAST_COMPILE, assert_trees_close, assert_trees_equal
from rnnjax.train.step import (
    accumulate_metrics,
    create_train_state,
    distinct_buffers,
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


# -- value checks the step makes on the device (checkify) --------------------------------------------------------------
def lm_setup():
    from rnnjax.models import LanguageModel

    model = LanguageModel(vocab_size=5, embedding_size=4, hidden_size=4, num_layers=1, mode="rnn_tanh")
    optimizer = optax.sgd(0.1)  # small programs: these tests are about the checks, not the model

    def loss_fn(params, carry, batch, key):
        logits, carry = model.apply(params, batch["inputs"], carry)
        return rnnjax.cross_entropy(logits, batch["targets"]), (carry, {})

    state = create_train_state(model.init(jax.random.key(0)), optimizer, jax.random.key(1),
                               carry=model.initial_carry(2))
    batch = {"inputs": jnp.array([[1, 2, 3], [4, 0, 1]]), "targets": jnp.array([[2, 3, 4], [0, 1, 2]])}
    return loss_fn, optimizer, state, batch


def test_the_jitted_step_raises_on_out_of_range_ids_and_labels():
    loss_fn, optimizer, state, batch = lm_setup()
    step = make_train_step(loss_fn, optimizer)
    state, metrics = step(state, batch)  # in range: trains
    assert float(metrics["finite"]) == 1.0
    for name, position, value, message in (
            ("inputs", (1, 2), 5, r"tokens must lie in \[0, 5\) \(vocab_size 5\), got 5 at flat index 5 of shape "
                                  r"\(2, 3\)"),
            ("targets", (0, 0), -1, r"labels must lie in \[0, 5\) \(num_classes 5, the last axis of logits\), got -1 "
                                    r"at flat index 0 of shape \(2, 3\)")):
        bad = dict(batch, **{name: batch[name].at[position].set(value)})
        with pytest.raises(jax.errors.JaxRuntimeError, match="InvalidInputError: " + message):
            jax.block_until_ready(step(distinct_buffers(state), bad))


def test_the_pure_step_checks_inside_a_users_jit_scan_and_vmap():
    loss_fn, optimizer, state, batch = lm_setup()
    step = train_step_fn(loss_fn, optimizer)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def two_seeds(states, batch):  # gradient_flow's pattern: vmap over seeds of a scan over steps
        return jax.vmap(lambda s: jax.lax.scan(lambda s, _: (step(s, batch)[0], None), s, length=2)[0])(states)

    states = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), state)
    assert int(two_seeds(states, batch).step[0]) == 2
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"tokens must lie in \[0, 5\).*got 9"):
        jax.block_until_ready(two_seeds(states, dict(batch, inputs=batch["inputs"].at[0, 0].set(9))))


def test_check_inputs_false_leaves_the_checks_out():
    loss_fn, optimizer, state, batch = lm_setup()
    bad = dict(batch, targets=batch["targets"].at[0, 0].set(7))
    new, metrics = jax.jit(train_step_fn(loss_fn, optimizer, check_inputs=False), compiler_options=FAST_COMPILE)(
        state, bad)
    # the silent failure the checks exist for: a NaN loss, the step skipped as non-finite
    assert float(metrics["finite"]) == 0.0 and int(new.skipped_steps) == 1
    with pytest.raises(TypeError, match="check_inputs must be a bool"):
        train_step_fn(loss_fn, optimizer, check_inputs=1)


def test_a_loss_functions_own_checkify_checks_raise_too():
    def loss_fn(params, carry, batch, key):
        checkify.check(jnp.all(batch["x"] > 0), "x must be positive, got min {}", jnp.min(batch["x"]))
        return jnp.sum(params["w"] * batch["x"]), (carry, {})

    optimizer = optax.sgd(0.1)
    state = create_train_state({"w": jnp.ones(2)}, optimizer, jax.random.key(0))
    step = make_train_step(loss_fn, optimizer)
    state, _ = step(state, {"x": jnp.ones(2)})
    with pytest.raises(jax.errors.JaxRuntimeError, match="x must be positive, got min -1.0"):
        jax.block_until_ready(step(state, {"x": -jnp.ones(2)}))
