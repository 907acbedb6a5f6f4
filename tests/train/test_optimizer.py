"""Optimizers: the three schedules at their boundaries (eager and under jit), clipping as the chain's first link
(invariants, not golden numbers), each optimizer on a quadratic, decoupled weight decay, the logged global norm,
and every invalid configuration."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnjax.train.optimizer import OptimizerConfig, global_norm, make_optimizer, make_schedule

ZAREMBA_SMALL = OptimizerConfig(
    optimizer="sgd",
    learning_rate=1.0,
    schedule="step_decay",
    steps_per_epoch=10,
    decay_start_epoch=4,
    decay_factor=0.5,
)
COSINE = OptimizerConfig(
    learning_rate=0.5, schedule="cosine", warmup_steps=10, total_steps=110, final_learning_rate=0.05
)


def tree(w, b, head):
    """A small nested pytree (dicts and a tuple) with the given float32 leaves."""
    a, b, c = (jnp.asarray(v, jnp.float32) for v in (w, b, head))
    return {"layer": {"w": a, "b": b}, "head": (c,)}


def leaves_norm(pytree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(pytree))))


# -- schedules -------------------------------------------------------------------------------------------------------
def expected_zaremba(step: int) -> float:
    return 1.0 if step < 40 else 0.5 ** (step // 10 - 3)


def test_step_decay_exact_at_epoch_boundaries():
    schedule = make_schedule(ZAREMBA_SMALL)
    steps = np.arange(70)
    values = np.asarray(schedule(jnp.asarray(steps)))
    np.testing.assert_array_equal(values[:40], 1.0)
    np.testing.assert_array_equal(values[40:50], 0.5)
    np.testing.assert_array_equal(values[50:60], 0.25)
    np.testing.assert_array_equal(values[60:70], 0.125)
    for step in (0, 39, 40, 49, 50, 59):  # Python ints, one at a time
        assert float(schedule(step)) == expected_zaremba(step), step


def test_step_decay_under_jit_with_traced_step():
    schedule = jax.jit(make_schedule(ZAREMBA_SMALL))
    for step in (0, 39, 40, 49, 50, 59):
        value = schedule(jnp.int32(step))
        assert value.shape == () and jnp.issubdtype(value.dtype, jnp.floating)
        assert float(value) == expected_zaremba(step), step


def test_step_decay_default_keeps_rate_for_one_epoch():
    # decay_start_epoch=1: exponent max(epoch + 1 - 1, 0) = epoch, so only the first epoch runs at the full rate.
    schedule = make_schedule(dataclasses.replace(ZAREMBA_SMALL, decay_start_epoch=1, decay_factor=0.8))
    np.testing.assert_allclose(np.asarray(schedule(jnp.array([0, 9, 10, 25]))), [1.0, 1.0, 0.8, 0.64], rtol=1e-6)


def test_cosine_with_warmup():
    lr, final, warmup, total = 0.5, 0.05, 10, 110
    # Every step from 0 to past total_steps in one traced call (a jitted int32 array, as the optimizer's count).
    values = np.asarray(jax.jit(make_schedule(COSINE))(jnp.arange(2 * total, dtype=jnp.int32)), np.float64)
    assert values[0] == 0.0
    np.testing.assert_allclose(values[warmup // 2], lr / 2, rtol=1e-6)  # linear warmup
    np.testing.assert_allclose(values[warmup], lr, rtol=1e-6)
    np.testing.assert_allclose(values[total:], final, rtol=1e-5)  # reached at total_steps, then held
    for step in (35, 60, 85):  # the cosine formula; its span is total - warmup (optax counts warmup in decay_steps)
        fraction = (step - warmup) / (total - warmup)
        expected = final + (lr - final) * 0.5 * (1 + math.cos(math.pi * fraction))
        np.testing.assert_allclose(values[step], expected, rtol=1e-5)
    np.testing.assert_allclose(values[60], (lr + final) / 2, rtol=1e-5)  # midpoint of the decay
    assert np.all(np.diff(values[: warmup + 1]) > 0), "warmup not increasing"
    assert np.all(np.diff(values[warmup:]) <= 0), "not monotone after warmup"
    assert float(make_schedule(COSINE)(warmup)) == pytest.approx(lr, rel=1e-6)  # eager, on a Python int


def test_cosine_without_warmup_starts_at_peak():
    schedule = make_schedule(dataclasses.replace(COSINE, warmup_steps=0))
    np.testing.assert_allclose(float(schedule(0)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(55)), (0.5 + 0.05) / 2, rtol=1e-5)


def test_constant_schedule():
    schedule = make_schedule(OptimizerConfig(learning_rate=3e-4))
    for step in (0, 1, 1000, 10**7):
        np.testing.assert_allclose(float(schedule(step)), 3e-4, rtol=1e-7)
    np.testing.assert_allclose(float(jax.jit(schedule)(jnp.int32(12345))), 3e-4, rtol=1e-7)


# -- clipping --------------------------------------------------------------------------------------------------------
SGD_LR1 = OptimizerConfig(optimizer="sgd", learning_rate=1.0, max_grad_norm=2.0)


def one_update(config, grads, params=None):
    optimizer = make_optimizer(config)
    params = jax.tree.map(jnp.zeros_like, grads) if params is None else params
    # One compiled update instead of eager op-by-op dispatch: the same numbers, a fraction of the test time.
    return jax.jit(optimizer.update)(grads, optimizer.init(params), params)


def test_clipping_huge_gradient_to_max_grad_norm():
    grads = tree([[300.0, -400.0], [0.0, 120.0]], [50.0, 0.0], [-1000.0])
    norm = leaves_norm(grads)
    assert norm > 1000
    updates, _ = one_update(SGD_LR1, grads)
    np.testing.assert_allclose(leaves_norm(updates), SGD_LR1.max_grad_norm, rtol=1e-6)
    # Only rescaled, never rotated: u = -g * max_grad_norm / ||g||.
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_allclose(u, -np.asarray(g) * SGD_LR1.max_grad_norm / norm, rtol=1e-5, atol=1e-7)


def test_small_gradient_passes_unclipped():
    grads = tree([[0.3, -0.4], [0.0, 0.2]], [0.5, 0.1], [-0.7])
    assert leaves_norm(grads) < SGD_LR1.max_grad_norm
    updates, _ = one_update(SGD_LR1, grads)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(u, -np.asarray(g))


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 1e4])
def test_clipping_invariant_and_idempotent(scale):
    grads = jax.tree.map(lambda x: x * scale, tree([[1.0, -2.0], [3.0, 0.5]], [1.5, -0.5], [2.0]))
    clipped = jax.tree.map(jnp.negative, one_update(SGD_LR1, grads)[0])
    np.testing.assert_allclose(leaves_norm(clipped), min(leaves_norm(grads), SGD_LR1.max_grad_norm), rtol=1e-6)
    twice = jax.tree.map(jnp.negative, one_update(SGD_LR1, clipped)[0])
    for a, b in zip(jax.tree.leaves(twice), jax.tree.leaves(clipped)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_moments_see_clipped_gradient(optimizer):
    # Adam's first update is ~sign(g), blind to scale; its first moment (1 - b1) g shows clipping came first.
    config = OptimizerConfig(optimizer=optimizer, max_grad_norm=1.0, b1=0.9)
    grads = tree([[30.0, 40.0], [0.0, 0.0]], [0.0, 0.0], [0.0])
    _, state = one_update(config, grads)
    mu = optax.tree.get(state, "mu")
    np.testing.assert_allclose(mu["layer"]["w"], [[0.1 * 0.6, 0.1 * 0.8], [0.0, 0.0]], rtol=1e-5)


def test_sgd_momentum_trace_sees_clipped_gradient():
    config = OptimizerConfig(optimizer="sgd", learning_rate=1.0, momentum=0.9, max_grad_norm=1.0)
    grads = tree([[30.0, 40.0], [0.0, 0.0]], [0.0, 0.0], [0.0])
    _, state = one_update(config, grads)
    np.testing.assert_allclose(optax.tree.get(state, "trace")["layer"]["w"], [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


# -- optimizers ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        OptimizerConfig(optimizer="sgd", learning_rate=0.05),
        OptimizerConfig(optimizer="sgd", learning_rate=0.02, momentum=0.9),
        OptimizerConfig(optimizer="sgd", learning_rate=0.02, momentum=0.9, nesterov=True),
        OptimizerConfig(optimizer="adam", learning_rate=0.1),
        OptimizerConfig(optimizer="adamw", learning_rate=0.1, weight_decay=1e-3),
        OptimizerConfig(optimizer="adam", learning_rate=0.2, schedule="cosine", warmup_steps=5, total_steps=50),
        OptimizerConfig(optimizer="sgd", learning_rate=0.1, schedule="step_decay", steps_per_epoch=10),
    ],
    ids=["sgd", "sgd_momentum", "sgd_nesterov", "adam", "adamw", "adam_cosine", "sgd_step_decay"],
)
def test_optimizer_reduces_quadratic(config):
    target = tree([[1.0, -2.0], [0.5, 3.0]], [-1.0, 2.0], [1.5])
    params = jax.tree.map(jnp.zeros_like, target)

    def loss(p):
        return sum(jnp.sum(jnp.square(a - t)) for a, t in zip(jax.tree.leaves(p), jax.tree.leaves(target)))

    optimizer = make_optimizer(config)

    @jax.jit
    def train(params):
        def body(_, carry):
            params, state = carry
            updates, state = optimizer.update(jax.grad(loss)(params), state, params)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, 50, body, (params, optimizer.init(params)))[0]

    initial = float(loss(params))
    trained = train(params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(trained))
    assert float(loss(trained)) < 0.05 * initial, (float(loss(trained)), initial)


def test_adamw_decays_params_under_zero_gradient_and_adam_does_not():
    params = tree([[1.0, -2.0], [0.5, 3.0]], [-1.0, 2.0], [1.5])
    zeros = jax.tree.map(jnp.zeros_like, params)
    lr, decay = 0.1, 0.5
    adamw_updates, _ = one_update(
        OptimizerConfig(optimizer="adamw", learning_rate=lr, weight_decay=decay), zeros, params
    )
    adam_updates, _ = one_update(OptimizerConfig(optimizer="adam", learning_rate=lr), zeros, params)
    for p, u in zip(jax.tree.leaves(params), jax.tree.leaves(adamw_updates)):
        np.testing.assert_allclose(p + u, np.asarray(p) * (1 - lr * decay), rtol=1e-6)  # p <- p (1 - lr wd)
    assert leaves_norm(optax.apply_updates(params, adamw_updates)) < leaves_norm(params)
    for u in jax.tree.leaves(adam_updates):
        np.testing.assert_array_equal(u, 0.0)


def test_global_norm_matches_numpy():
    rng = np.random.default_rng(0)
    pytree = {"a": rng.normal(size=(3, 4)), "b": [rng.normal(size=5), (rng.normal(size=(2, 1, 2)),)], "c": 2.0}
    expected = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(pytree)))
    as_jax = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), pytree)
    np.testing.assert_allclose(float(global_norm(as_jax)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(global_norm)(as_jax)), expected, rtol=1e-6)


def test_config_is_hashable_and_normalised():
    config = OptimizerConfig(optimizer="sgd", learning_rate=1, max_grad_norm=np.float32(5.0))
    assert isinstance(config.learning_rate, float) and isinstance(config.max_grad_norm, float)
    assert hash(config) == hash(OptimizerConfig(optimizer="sgd", learning_rate=1.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.learning_rate = 2.0


# -- bad configuration -----------------------------------------------------------------------------------------------
BAD_CONFIGS = {
    "unknown_optimizer": ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of .*got 'rmsprop'"),
    "unknown_schedule": ({"schedule": "linear"}, ValueError, "schedule must be one of .*got 'linear'"),
    "lr_zero": ({"learning_rate": 0.0}, ValueError, "learning_rate must be > 0, got 0.0"),
    "lr_negative": ({"learning_rate": -1e-3}, ValueError, "learning_rate must be > 0"),
    "lr_nan": ({"learning_rate": float("nan")}, ValueError, "learning_rate must be finite"),
    "lr_inf": ({"learning_rate": float("inf")}, ValueError, "learning_rate must be finite"),
    "lr_string": ({"learning_rate": "0.1"}, TypeError, "learning_rate must be a float, got str"),
    "momentum_negative": ({"optimizer": "sgd", "momentum": -0.1}, ValueError, r"momentum must be in \[0, 1\)"),
    "momentum_one": ({"optimizer": "sgd", "momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\), got 1.0"),
    "momentum_for_adam": ({"momentum": 0.9}, ValueError, "momentum applies only to optimizer='sgd'.*'adam'"),
    "momentum_for_adamw": ({"optimizer": "adamw", "momentum": 0.9}, ValueError, "momentum applies only to"),
    "nesterov_no_momentum": ({"optimizer": "sgd", "nesterov": True}, ValueError, "nesterov=True needs"),
    "nesterov_for_adam": ({"nesterov": True}, ValueError, "nesterov=True needs optimizer='sgd'"),
    "nesterov_not_bool": (
        {"optimizer": "sgd", "momentum": 0.9, "nesterov": "yes"},
        TypeError,
        "nesterov must be a bool",
    ),
    "weight_decay_for_adam": ({"weight_decay": 1e-4}, ValueError, "weight_decay applies only to optimizer='adamw'"),
    "weight_decay_for_sgd": ({"optimizer": "sgd", "weight_decay": 1e-4}, ValueError, "weight_decay applies only"),
    "weight_decay_negative": ({"optimizer": "adamw", "weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
    "max_grad_norm_zero": ({"max_grad_norm": 0.0}, ValueError, "max_grad_norm must be > 0, got 0.0"),
    "max_grad_norm_negative": ({"max_grad_norm": -5.0}, ValueError, "max_grad_norm must be > 0"),
    "max_grad_norm_inf": ({"max_grad_norm": float("inf")}, ValueError, "max_grad_norm must be finite"),
    "max_grad_norm_none": ({"max_grad_norm": None}, TypeError, "max_grad_norm must be a float, got NoneType"),
    "b1_one": ({"b1": 1.0}, ValueError, r"b1 must be in \[0, 1\), got 1.0"),
    "b1_negative": ({"b1": -0.1}, ValueError, r"b1 must be in \[0, 1\)"),
    "b2_above_one": ({"b2": 1.5}, ValueError, r"b2 must be in \[0, 1\), got 1.5"),
    "eps_zero": ({"eps": 0.0}, ValueError, "eps must be > 0"),
    "step_decay_no_steps": ({"schedule": "step_decay"}, ValueError, "'step_decay' needs steps_per_epoch"),
    "steps_per_epoch_zero": (
        {"schedule": "step_decay", "steps_per_epoch": 0},
        ValueError,
        "steps_per_epoch must be >= 1",
    ),
    "steps_per_epoch_float": (
        {"schedule": "step_decay", "steps_per_epoch": 2.5},
        TypeError,
        "steps_per_epoch must be an int, got float",
    ),
    "decay_factor_zero": ({"decay_factor": 0.0}, ValueError, r"decay_factor must be in \(0, 1\], got 0.0"),
    "decay_factor_above_one": ({"decay_factor": 1.15}, ValueError, r"decay_factor must be in \(0, 1\], got 1.15"),
    "decay_start_epoch_zero": ({"decay_start_epoch": 0}, ValueError, "decay_start_epoch must be >= 1, got 0"),
    "decay_start_epoch_bool": ({"decay_start_epoch": True}, TypeError, "decay_start_epoch must be an int, got bool"),
    "cosine_no_total": ({"schedule": "cosine"}, ValueError, "'cosine' needs total_steps"),
    "cosine_total_equals_warmup": (
        {"schedule": "cosine", "warmup_steps": 10, "total_steps": 10},
        ValueError,
        "total_steps > warmup_steps=10, got total_steps=10",
    ),
    "cosine_total_below_warmup": (
        {"schedule": "cosine", "warmup_steps": 10, "total_steps": 5},
        ValueError,
        "total_steps > warmup_steps",
    ),
    "total_steps_zero": ({"schedule": "cosine", "total_steps": 0}, ValueError, "total_steps must be >= 1"),
    "warmup_negative": (
        {"schedule": "cosine", "warmup_steps": -1, "total_steps": 10},
        ValueError,
        "warmup_steps must be >= 0, got -1",
    ),
    "warmup_float": (
        {"schedule": "cosine", "warmup_steps": 1.5, "total_steps": 10},
        TypeError,
        "warmup_steps must be an int",
    ),
    "warmup_without_cosine": ({"warmup_steps": 100}, ValueError, "warmup_steps applies only to schedule='cosine'"),
    "final_lr_without_cosine": (
        {"final_learning_rate": 1e-5},
        ValueError,
        "final_learning_rate applies only to schedule='cosine'",
    ),
    "final_lr_negative": (
        {"schedule": "cosine", "total_steps": 10, "final_learning_rate": -1e-4},
        ValueError,
        r"final_learning_rate must be in \[0, learning_rate",
    ),
    "final_lr_above_peak": (
        {"schedule": "cosine", "total_steps": 10, "final_learning_rate": 1.0},
        ValueError,
        r"final_learning_rate must be in \[0, learning_rate=0.001\], got 1.0",
    ),
}


@pytest.mark.parametrize("kwargs, error, match", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_invalid_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        OptimizerConfig(**kwargs)


@pytest.mark.parametrize("make", [make_schedule, make_optimizer])
def test_factories_reject_non_config(make):
    with pytest.raises(TypeError, match="expects an OptimizerConfig, got dict"):
        make({"optimizer": "adam"})
