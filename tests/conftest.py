"""Strict test configuration, in the Equinox way: implicit rank promotion raises (a silent broadcast is a bug
waiting to happen) and float32 matmuls run at full precision, so parity with PyTorch is judged on the math, not on
a backend's reduced-precision default."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def key():
    """A fixed PRNG key: every test is reproducible."""
    return jax.random.key(0)
