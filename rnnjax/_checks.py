"""Argument checks shared by the modules: each raises a `TypeError`/`ValueError` that names what was expected
and what came, at trace time, so bad input never reaches XLA as a cryptic shape error.

Values (integer ids, labels, lengths) can only be checked when they are known. `check_index_range` and
`check_value_range` raise a `ValueError` at once for concrete arrays (eager calls, NumPy inputs); on a tracer
(inside `jit`, `vmap`, `scan`) they add a `jax.experimental.checkify.debug_check`, which costs nothing unless the
computation is run under `checkify.checkify` (the train steps of `rnnjax.train` are) and then reports the first
offending value and its position. `raise_if_failed(error)` turns a checkify `Error` computed inside a jitted
function into an exception raised by that function (through a host callback, taken only when a check failed).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Returns `value` if it is one of `choices`, else raises a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):  # `True` is not a size or a count
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` if it is an int >= 1 (bools are rejected)."""
    return _check_int(name, value, 1)


def check_nonnegative_int(name: str, value: Any) -> int:
    """Returns `value` if it is an int >= 0 (bools are rejected)."""
    return _check_int(name, value, 0)


def check_rate(name: str, value: Any) -> float:
    """Returns `value` if it is a probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def check_finite_float(name: str, value: Any) -> float:
    """Returns `value` as a float if it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_positive_float(name: str, value: Any) -> float:
    """Returns `value` as a float if it is finite and > 0."""
    value = check_finite_float(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_floating_array(name: str, value: Any) -> jax.Array:
    """Returns `value` as an array if its dtype is floating, else raises a TypeError naming the dtype."""
    if not hasattr(value, "dtype") or not hasattr(value, "shape"):
        raise TypeError(f"{name} must be an array, got {type(value).__name__}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype (float32, bfloat16, ...), got {value.dtype}")
    return jnp.asarray(value)


def is_concrete(value: Any) -> bool:
    """True when `value` holds known numbers (not a tracer inside `jit`/`vmap`/`grad`), so it can be checked."""
    return not isinstance(value, jax.core.Tracer)


# -- values, eagerly when concrete and through checkify under tracing ------------------------------------------------
def _out_of_range(values, low: int, high: int):
    """Boolean array (NumPy or jax, like `values`): entries outside [low, high]. Bounds an integer dtype cannot
    represent are skipped instead of compared, so a uint8 array checked against 300 classes neither overflows nor
    fails."""
    xp = jnp if isinstance(values, jax.Array) else np
    info = np.iinfo(values.dtype)
    bad = xp.zeros(values.shape, bool)
    if low > info.min:
        bad = bad | (values < low)
    if high < info.max:
        bad = bad | (values > high)
    return bad


def _check_range(name: str, values: Any, low: int, high: int, bounds: str, valid: Any, excluded: int | None = None
                 ) -> Any:
    if not hasattr(values, "dtype") or not jnp.issubdtype(values.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got {getattr(values, 'dtype', type(values).__name__)}")
    if is_concrete(values) and (valid is None or is_concrete(valid)):
        array = np.asarray(values)
        bad = _out_of_range(array, low, high)
        if excluded is not None:
            bad |= array == excluded
        if valid is not None:
            bad &= np.asarray(valid, bool)
        count = int(bad.sum())
        if count:
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            checked = array if valid is None else array[np.asarray(valid, bool)]
            where = (f" at index {index} ({count} of {checked.size} out of range; min {checked.min()}, max "
                     f"{checked.max()})") if array.ndim else ""
            raise ValueError(f"{name} must lie in {bounds}, got {array[index]}{where}")
        return values
    bad = _out_of_range(values, low, high)
    if excluded is not None:
        bad = bad | (values == excluded)
    if valid is not None:
        bad = bad & valid
    flat = jnp.ravel(bad)
    first = jnp.argmax(flat)  # the first offending entry (0 when there is none, and then the check passes)
    checkify.debug_check(~jnp.any(flat), f"{name} must lie in {bounds}, got {{value}} at flat index {{index}} of "
                         f"shape {tuple(values.shape)}", value=jnp.ravel(values)[first], index=first)
    return values


def check_value_range(name: str, values: Any, low: int, high: int, *, valid: Any = None, what: str = "") -> Any:
    """Returns the integer array `values` after checking that every entry lies in the closed range [low, high]
    (only the entries where the boolean `valid`, of the same shape, is True, when it is given).

    Concrete values raise a ValueError naming the first offending value, its index, how many entries are out of
    range and the checked entries' min and max; traced values get a `checkify.debug_check` with the first
    offending value and its flat index (see the module docstring). `what` says where the bounds come from (e.g.
    "the time axis"), in parentheses."""
    return _check_range(name, values, low, high, f"[{low}, {high}]" + (f" ({what})" if what else ""), valid)


def check_index_range(name: str, values: Any, size: int, *, valid: Any = None, what: str = "") -> Any:
    """`check_value_range` for indices into an axis of `size` entries (a vocabulary, the classes), reported as
    the half-open range [0, size): e.g. "token ids must lie in [0, 65) (vocab_size 65), got 70 at index (0, 3)"."""
    return _check_range(name, values, 0, size - 1, f"[0, {size})" + (f" ({what})" if what else ""), valid)


def check_label_range(name: str, values: Any, size: int, blank: int, *, valid: Any = None) -> Any:
    """`check_index_range` for CTC labels: class ids in [0, size) other than `blank`, which no labelling may
    contain (e.g. "labels must lie in [1, 11) (class 0 is the blank), got 0 at index (1, 2)")."""
    if blank == 0:
        bounds = f"[1, {size}) (class 0 is the blank)"
    elif blank == size - 1:
        bounds = f"[0, {size - 1}) (class {blank} is the blank)"
    else:
        bounds = f"[0, {size}) without the blank {blank}"
    return _check_range(name, values, 0, size - 1, bounds, valid, excluded=blank)


class InvalidInputError(ValueError):
    """A value check (`check_index_range`, `check_value_range`, or any `checkify.check`) failed inside a jitted
    computation run with `raise_if_failed`, e.g. a train step of `rnnjax.train`."""


def _raise_failed_check(error: checkify.Error) -> None:
    message = error.get()
    if message is not None:
        raise InvalidInputError(message)


def raise_if_failed(error: checkify.Error) -> None:
    """Inside a traced function: raises `InvalidInputError` with checkify's message from the running computation
    when `error` (from `checkify.checkify`) records a failed check; it surfaces as a `jax.errors.JaxRuntimeError`
    whose message ends with that line. Outside tracing: `error.throw()`.

    The host callback sits in a `lax.cond`, so a passing check costs one predicate and no host round trip, under
    `vmap` too (one predicate for the whole batch, `_raise_if`'s batching rule). The predicate is the OR of the
    error's boolean leaves: checkify keeps one boolean flag per kind of check, and a boolean in a check's message
    arguments can only make the callback run, never hide a failure (the callback then finds no error)."""
    if all(is_concrete(leaf) for leaf in jax.tree.leaves(error)):
        error.throw()
        return
    flags = [jnp.any(leaf) for leaf in jax.tree.leaves(error) if jnp.asarray(leaf).dtype == jnp.bool_]
    if flags:
        _raise_if(jnp.any(jnp.stack(flags)), error)


@jax.custom_batching.custom_vmap
def _raise_if(failed, error):
    jax.lax.cond(failed, lambda: jax.debug.callback(_raise_failed_check, error), lambda: None)
    return failed  # an output, as custom_vmap needs one; the callback's effect keeps the call alive


@_raise_if.def_vmap
def _raise_if_batched(axis_size, in_batched, failed, error):
    # vmap would turn the cond into a select that runs the callback every call; instead reduce the predicate over
    # the batch and pass the batched error whole (every leaf given the batch axis), so the host is called only when
    # an example failed and checkify's message names it ("at mapped index i: ...").
    failed_batched, error_batched = in_batched
    error = jax.tree.map(lambda leaf, batched: leaf if batched else jnp.broadcast_to(leaf, (axis_size,) + leaf.shape),
                         error, error_batched)
    return _raise_if(jnp.any(failed) if failed_batched else failed, error), False
