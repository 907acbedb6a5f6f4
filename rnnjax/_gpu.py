"""Which accelerator kernel `unroll` runs on a GPU, and the call into it: "cudnn" (`rnnjax._cudnn`) or "pallas"
(`rnnjax._pallas`), else None (the XLA paths: "fused", "sequential", "parallel").

`gpu_path` is a pure function of the backend name, the cell's kernel capability and matmul dtype, the dtypes, the
lengths and the flags, so it is tested on CPU with `backend="cuda"` passed in:

- "cudnn": an NVIDIA GPU, a cell declaring the "lstm" kernel without `matmul_dtype`, float32 params and carry
  (inputs of any float dtype up to float32 are cast), `lengths` None or integers (rnnjax's lengths are always
  right-padded, which is what cuDNN takes), `remat` off and `backward` not "autodiff".
- "pallas": the same, for an "lstm" or "gru" cell with `matmul_dtype` None or "bfloat16" that cuDNN does not take
  (the GRU, which cuDNN through JAX lacks, and bfloat16 GEMM operands).
- None otherwise: float64, float16 operands, SimpleRNN and the minimal cells, `remat=True`, `backward="autodiff"`
  (the way to ask for the plain `lax.scan` on a GPU), an empty time axis or batch, and every CPU or TPU backend.

Both kernels are a `jax.custom_vjp`, like the "fused" path: forward-mode differentiation needs
`backward="autodiff"`. No GPU has run either yet: `benchmarks/gpu_check.sh` is the check that has to.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

PATHS = ("cudnn", "pallas")
NVIDIA_BACKENDS = ("cuda", "gpu")  # "gpu" is what `jax.default_backend()` calls an NVIDIA device
INPUT_DTYPES = ("float32", "bfloat16", "float16")


@functools.cache
def backend() -> str:
    """The default backend's name, with a GPU told apart as "cuda" or "rocm" (ROCm gets neither kernel)."""
    name = jax.default_backend()
    if name == "gpu":
        version = getattr(jax.devices()[0].client, "platform_version", "")
        return "rocm" if "rocm" in str(version).lower() else "cuda"
    return name


def gpu_path(backend_name: str, cell, params, xs_dtype, carry, *, time: int, batch_size: int, lengths=None,
             remat: bool = False, backward: str = "auto") -> str | None:
    """"cudnn", "pallas" or None for this call (module docstring). `params`, `carry` and `lengths` may be arrays
    or `jax.ShapeDtypeStruct`s: only dtypes are read."""
    if backend_name not in NVIDIA_BACKENDS or remat or backward == "autodiff" or time < 1 or batch_size < 1:
        return None
    kernel = getattr(type(cell), "fused_recurrence", None)
    if kernel not in ("lstm", "gru"):
        return None
    if lengths is not None and not jnp.issubdtype(lengths.dtype, jnp.integer):
        return None
    if jnp.dtype(xs_dtype).name not in INPUT_DTYPES:
        return None
    if any(leaf.dtype != jnp.float32 for leaf in jax.tree.leaves(params) + jax.tree.leaves(carry)):
        return None
    matmul_dtype = getattr(cell, "matmul_dtype", None)
    if kernel == "lstm" and matmul_dtype is None:
        return "cudnn"
    if matmul_dtype in (None, "bfloat16"):
        return "pallas"
    return None


def gpu_unroll(path: str, cell, params, xs, carry, lengths, reverse: bool):
    """`(final_carry, ys)` of `cell` over time-major `xs` on the kernel `path` ("cudnn" or "pallas")."""
    if path == "cudnn":
        from rnnjax._cudnn import cudnn_unroll

        return cudnn_unroll(params, xs, carry, lengths, reverse)
    if path == "pallas":
        from rnnjax._pallas import pallas_unroll

        return pallas_unroll(cell, params, xs, carry, lengths, reverse)
    raise ValueError(f"path must be one of {PATHS}, got {path!r}")
