"""Argument checks shared by the modules: each raises a `TypeError`/`ValueError` that names what was expected
and what came, at trace time, so bad input never reaches XLA as a cryptic shape error."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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
