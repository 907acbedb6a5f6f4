"""The train state and the jitted train/eval steps, for any model function over pytrees.

The model enters as one function, the loss function:

    loss_fn(params, carry, batch, key) -> (loss, (new_carry, metrics))

`carry` is the recurrent state carried between windows for truncated BPTT (None for models without one);
`key` is a PRNG key for dropout, None in evaluation; `metrics` is a dict of scalar arrays (e.g. accuracy, a token
count) that the engine averages over each log interval. The step then:

1. takes gradients of the loss, and their pre-clip global norm (the vanishing/exploding-gradient signal);
2. applies the optimizer (`optim.make_optimizer`: `clip_by_global_norm` always first in its chain);
3. **skips** the update when the loss or the gradient norm is NaN/inf: params, optimizer state and carry stay as
   they were, `bad_steps` (consecutive) and `skipped_steps` (total) count it, and the trainer stops the run after a
   configured number in a row;
4. feeds `stop_gradient(new_carry)` to the next window: gradients are truncated at window boundaries, the state is
   not.

Input checks. The loss and its gradient run under `jax.experimental.checkify.checkify` (user checks only), so the
value checks the library cannot make at trace time — token ids and labels in range, `lengths` within the time
axis, and any `checkify.check` of the loss function's own — are made on the device every step, and a failed one
raises from the step (`rnnjax._checks.raise_if_failed`: a `jax.errors.JaxRuntimeError` whose message ends with
`InvalidInputError: tokens must lie in [0, 65) (vocab_size 65), got 70 at flat index 3 ...`) instead of training
on a silently wrong loss. `check_inputs=False` leaves the checks out (README, "Bad input": the measured cost).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.experimental import checkify

from rnnjax import _checks
from rnnjax.train.optimizer import global_norm

LossFn = Callable[..., tuple]


class TrainState(NamedTuple):
    """Everything a run needs to continue, as one pytree (checkpointed whole).

    `step` counts attempted steps (skipped ones included: the data moved on); `key` is split once per step;
    `carry` is the truncated-BPTT state (None when the model has none); `bad_steps` counts consecutive
    non-finite steps, `skipped_steps` all of them.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    carry: Any
    bad_steps: jax.Array
    skipped_steps: jax.Array


def distinct_buffers(tree):
    """A copy of `tree` in which no two leaves share a buffer, nor any leaf a buffer of the caller's: a donating
    step (`make_train_step`, `fit`) rejects a buffer passed twice, and one zeros array reused for several leaves
    (the step counters, `LSTMState(h=zeros, c=zeros)`) would be."""
    return jax.tree.map(lambda leaf: jnp.array(leaf, copy=True) if isinstance(leaf, jax.Array) else leaf, tree)


def create_train_state(params, optimizer: optax.GradientTransformation, key: jax.Array, carry=None) -> TrainState:
    """A fresh state at step 0, every leaf in its own buffer (so it can be donated to a jitted step)."""
    zero = jnp.zeros((), jnp.int32)
    return distinct_buffers(TrainState(params, optimizer.init(params), zero, key, carry, zero, zero))


def _select(condition: jax.Array, new, old):
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


def train_step_fn(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                  check_inputs: bool = True) -> Callable:
    """The pure (un-jitted) train step `(state, batch) -> (state, metrics)`; see the module docstring.

    `metrics` holds the loss function's metrics plus `loss`, `grad_norm` (before clipping) and `finite` (1.0 or
    0.0), all scalars on device. `check_inputs` (default True): run the loss under `checkify`, raising from the
    step when a value check fails (module docstring); False skips them.
    """
    if not isinstance(check_inputs, bool):
        raise TypeError(f"check_inputs must be a bool, got {type(check_inputs).__name__} {check_inputs!r}")
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    if check_inputs:
        checked = checkify.checkify(value_and_grad, errors=checkify.user_checks)

        def value_and_grad(*args):
            error, outputs = checked(*args)
            _checks.raise_if_failed(error)
            return outputs

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        key, step_key = jax.random.split(state.key)
        (loss, (new_carry, metrics)), grads = value_and_grad(state.params, state.carry, batch, step_key)
        grad_norm = global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_carry = jax.lax.stop_gradient(new_carry)
        state = TrainState(
            params=_select(finite, params, state.params),
            opt_state=_select(finite, opt_state, state.opt_state),
            step=state.step + 1,
            key=key,
            carry=_select(finite, new_carry, state.carry),
            bad_steps=jnp.where(finite, 0, state.bad_steps + 1),
            skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
        return state, metrics

    return train_step


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                    check_inputs: bool = True) -> Callable:
    """`train_step_fn` under `jit`, with the state's buffers donated (updated in place where the backend can)."""
    return jax.jit(train_step_fn(loss_fn, optimizer, check_inputs=check_inputs), donate_argnums=0)


def zeros_like_metrics(metric_names) -> dict:
    """Zeroed on-device accumulators for the named metrics, plus `count` (finite steps) and `steps` (all)."""
    sums = {name: jnp.zeros((), jnp.float32) for name in metric_names if name != "finite"}
    sums.update(count=jnp.zeros((), jnp.float32), steps=jnp.zeros((), jnp.float32))
    return sums


def accumulate_metrics(sums: dict, metrics: dict) -> dict:
    """Adds one step's metrics to the running sums on device (fetched once per log interval). A skipped
    (non-finite) step adds nothing but its count, so one NaN does not turn the interval's mean into NaN."""
    finite = jnp.asarray(metrics.get("finite", 1.0)) > 0
    new = {
        name: sums[name] + jnp.where(finite, jnp.asarray(value, jnp.float32), 0.0)
        for name, value in metrics.items()
        if name != "finite"
    }
    new["count"] = sums["count"] + finite.astype(jnp.float32)
    new["steps"] = sums["steps"] + 1.0
    return new


def summarize_metrics(sums: dict) -> dict:
    """Host-side means of accumulated sums, with `skipped` (non-finite steps in the interval)."""
    values = {name: float(value) for name, value in jax.device_get(sums).items()}
    count, steps = values.pop("count"), values.pop("steps")
    means = {name: (value / count if count else float("nan")) for name, value in values.items()}
    means["skipped"] = int(steps - count)
    return means
