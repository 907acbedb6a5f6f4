"""Arithmetic the cells, the fused path and the models share: the compute dtype, PyTorch-layout dense products
(`x @ W^T`, accumulated in at least float32, operands optionally rounded to `matmul_dtype`) and bias broadcasting
that never relies on rank promotion (the library runs under `jax_numpy_rank_promotion="raise"`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnjax import _checks

Array = jax.Array


def compute_dtype(*dtypes) -> jnp.dtype:
    """The dtype arithmetic and carries use: at least float32 (float64 when x64 inputs ask for it)."""
    return jnp.result_type(jnp.float32, *dtypes)


def add_bias(y: Array, bias: Array) -> Array:
    # Explicit broadcast: the library runs under jax_numpy_rank_promotion="raise".
    return y + bias.reshape((1,) * (y.ndim - 1) + bias.shape).astype(y.dtype)


MATMUL_DTYPES = ("bfloat16", "float16")  # opt-in GEMM operand dtypes (None: the compute dtype)


def dense(x: Array, weight: Array, matmul_dtype: str | None = None) -> Array:
    """`x @ weight^T` in PyTorch's [out, in] weight layout, accumulated in at least float32; operands rounded to
    `matmul_dtype` first when one is given."""
    dtype = compute_dtype(x.dtype, weight.dtype)
    if matmul_dtype is not None:
        x, weight = x.astype(matmul_dtype), weight.astype(matmul_dtype)
    return jnp.matmul(x, weight.T, preferred_element_type=dtype).astype(dtype)


def check_matmul_dtype(matmul_dtype) -> None:
    """Raises unless `matmul_dtype` is None or one of MATMUL_DTYPES (a string, so cells stay hashable)."""
    if matmul_dtype is not None:
        _checks.check_choice("matmul_dtype", matmul_dtype, MATMUL_DTYPES)
