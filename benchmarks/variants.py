"""The variants a benchmark times, each a ready-to-call step: rnnjax (`make_cell` + `unroll`, one per scan mode,
backward pass and scan space asked for), Flax `nn.RNN` over its LSTM/GRU/Simple cells, PyTorch
`nn.LSTM`/`nn.GRU`/`nn.RNN`.

Training step = forward over the whole sequence, loss = mean(y²) (in float32), gradient w.r.t. the parameters only,
`optax.chain(clip_by_global_norm(1.0), adam(1e-3))` update; JAX: one `jit` with params and optimizer state donated;
PyTorch: zero_grad, forward, `loss.backward()`, `clip_grad_norm_(1.0)`, Adam step. Inference step = forward only
(JAX: jitted; PyTorch: under `torch.inference_mode()`). Every variant of a cell sees the same inputs `[B, T, D]`
(float32; bfloat16 is a compute dtype: rnnjax's `matmul_dtype`, Flax cells' `dtype` with float32 params, PyTorch's
`autocast`), and every JAX variant's parameters are drawn from PyTorch's U(±1/sqrt(H)) (`random_params`; PyTorch's
modules keep their own default init, the same distribution). A one-layer `rnnjax.RNN(mode, D, H)` is
`Recurrent(make_cell(mode, H))`, i.e. exactly `unroll` over the cell, which is what the rnnjax variant runs so that
it can pick the scan (`unroll(scan=...)`), the backward pass (`unroll(backward=...)`) and, for the minimal cells,
the parallel scan's space (`MinGRU/MinLSTM(scan_space=...)`). Which path ran is what `rnnjax.unroll_path` reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from benchmarks import measure

# rnnjax mode -> the Flax cells (class names in flax.linen) that compute the same recurrence
FLAX_CELLS = {
    "lstm": ("OptimizedLSTMCell", "LSTMCell"),
    "gru": ("GRUCell",),
    "rnn_tanh": ("SimpleCell",),
    "rnn_relu": ("SimpleCell",),  # with activation_fn=relu
}
# rnnjax mode -> (torch.nn module, extra constructor arguments)
TORCH_MODULES = {
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
}
PEERS = ("flax", "torch")
PEER_MODULES = {"flax": "flax.linen", "torch": "torch"}


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to time: cell mode, "train" or "infer", shape (B, T, D, H), compute dtype, `lax.scan` unroll factor."""

    cell: str
    step: str
    batch: int
    time: int
    input_size: int
    hidden_size: int
    dtype: str = "float32"
    unroll: int = 1

    @property
    def shape(self) -> str:
        return f"{self.batch},{self.time},{self.input_size},{self.hidden_size}"


@dataclasses.dataclass
class Variant:
    """A built variant: `run()` performs (and waits for) one step."""

    name: str
    framework: str
    run: Callable[[], None]
    compile_s: float | None = None
    memory: dict | None = None
    info: dict = dataclasses.field(default_factory=dict)


class Skip(Exception):
    """A variant that cannot run here (peer not installed, no counterpart, path unavailable); recorded, not fatal."""


def available(peer: str) -> bool:
    try:
        importlib.import_module(PEER_MODULES[peer])
        return True
    except ImportError:
        return False


def has_matmul_dtype() -> bool:
    """Whether this rnnjax takes `make_cell(..., matmul_dtype=...)` (bfloat16 GEMM operands, float32 accumulation)."""
    return "matmul_dtype" in inspect.signature(rnnjax.make_cell).parameters


def has_scan_space(cell: str) -> bool:
    """Whether the cell mode has a parallel scan with a choice of space (`scan_space`: the minimal cells)."""
    return hasattr(rnnjax.make_cell(cell, 1), "scan_space")


def inputs(spec: Spec) -> jax.Array:
    """Standard normal `[B, T, D]` float32 inputs, the same for every variant (numpy: nothing to compile)."""
    rng = np.random.default_rng(1)
    return jnp.asarray(rng.standard_normal((spec.batch, spec.time, spec.input_size), dtype=np.float32))


def random_params(shapes, hidden_size: int, seed: int = 0):
    """Every leaf of `shapes` (`jax.ShapeDtypeStruct`s) drawn from U(±1/sqrt(H)), PyTorch's default for its RNNs,
    so every variant starts from the same distribution. Drawn with numpy: the values do not change the work of a
    step, and running each framework's own initializer would compile it (seconds per variant on CPU)."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    return jax.tree.map(
        lambda leaf: jnp.asarray(rng.uniform(-bound, bound, leaf.shape).astype(np.float32), dtype=leaf.dtype), shapes)


def peer_names(cell: str, peer: str) -> list[str]:
    """The variant names `peer` has for `cell` (empty when it has no counterpart)."""
    if peer == "flax":
        return [f"flax[{name}]" for name in FLAX_CELLS.get(cell, ())]
    return ["torch"] if cell in TORCH_MODULES else []


# -- JAX steps ----------------------------------------------------------------------------------------------------
def _loss(ys):
    return jnp.mean(jnp.square(ys.astype(jnp.float32)))


def jax_variant(name: str, framework: str, spec: Spec, init: Callable, apply: Callable, xs, info: dict) -> Variant:
    """Compiles the train or infer step of `apply(params, xs) -> ys`, with params shaped like `init()`'s (traced,
    never run: `random_params`), and returns it as a `Variant`."""
    params = random_params(jax.eval_shape(init), spec.hidden_size)
    if spec.step == "infer":
        compiled, seconds = measure.compile_timed(jax.jit(apply), params, xs)

        def run():
            jax.block_until_ready(compiled(params, xs))

        return Variant(name, framework, run, seconds, measure.compiled_memory(compiled), info)

    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))

    def train_step(params, opt_state, xs):
        loss, grads = jax.value_and_grad(lambda p: _loss(apply(p, xs)))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = [params, optimizer.init(params)]
    compiled, seconds = measure.compile_timed(jax.jit(train_step, donate_argnums=(0, 1)), *state, xs)

    def run():
        outputs = compiled(state[0], state[1], xs)
        jax.block_until_ready(outputs)
        state[:] = outputs[:2]

    return Variant(name, framework, run, seconds, measure.compiled_memory(compiled), info)


def make_rnnjax_cell(cell: str, hidden_size: int, dtype: str, scan_space: str | None = None):
    """`rnnjax.make_cell(cell, hidden_size)`, with bfloat16 GEMM operands for `dtype="bfloat16"` and, for the
    minimal cells (the only ones with a parallel scan), `scan_space` ("log" or "linear"; None keeps the default)."""
    if dtype == "float32":
        made = rnnjax.make_cell(cell, hidden_size)
    elif not has_matmul_dtype():
        raise RuntimeError(f"--dtype {dtype} needs rnnjax.make_cell(..., matmul_dtype=...), which this rnnjax "
                           "does not have yet")
    else:
        made = rnnjax.make_cell(cell, hidden_size, matmul_dtype=dtype)
    if scan_space is not None and hasattr(made, "scan_space"):
        made = dataclasses.replace(made, scan_space=scan_space)
    return made


def rnnjax_paths(cell, params, xs, scan_mode: str, backward: str = "auto") -> dict:
    """Which path `unroll(cell, params, xs, scan=scan_mode, backward=backward)` runs, as the library reports it
    (`rnnjax.unroll_path`: "parallel", "native" = the C++ loop of `rnnjax.native`, "fused" = the sequential scan
    with the hand-written backward pass, or "sequential" = autodiff of the plain `lax.scan`), and `custom_backward`
    = whether that path differentiates itself."""
    path = rnnjax.unroll_path(cell, params, xs, scan=scan_mode, backward=backward)
    return {"path": path, "custom_backward": path in ("native", "fused", "cudnn", "pallas")}  # each its own VJP


def rnnjax_variant(spec: Spec, scan_mode: str, name: str = "rnnjax", backward: str = "auto",
                   scan_space: str | None = None) -> Variant:
    cell = make_rnnjax_cell(spec.cell, spec.hidden_size, spec.dtype, scan_space)
    xs = inputs(spec)
    init = lambda: cell.init(jax.random.key(0), spec.input_size)  # noqa: E731
    try:
        paths = rnnjax_paths(cell, jax.eval_shape(init), xs, scan_mode, backward)
    except ValueError as error:
        # e.g. scan="parallel" on a cell that reads its carry or over the memory guard, backward="custom" on a
        # cell without a fused kernel
        raise Skip(str(error)) from error

    def apply(params, xs):
        return rnnjax.unroll(cell, params, xs, scan=scan_mode, backward=backward, unroll=spec.unroll)[0]

    info = dict(paths, scan_mode=scan_mode, backward=backward, scan_space=getattr(cell, "scan_space", None),
                unroll=spec.unroll, matmul_dtype=None if spec.dtype == "float32" else spec.dtype)
    if spec.step == "infer":
        info["custom_backward"] = None  # no backward pass in an inference step
    return jax_variant(name, "rnnjax", spec, init, apply, xs, info)


def flax_variant(spec: Spec, cell_name: str) -> Variant:
    from flax import linen as nn

    kwargs = {"features": spec.hidden_size}
    if spec.dtype != "float32":
        kwargs.update(dtype=measure.DTYPES[spec.dtype], param_dtype=jnp.float32)
    if spec.cell == "rnn_relu":
        kwargs["activation_fn"] = nn.relu
    module = nn.RNN(getattr(nn, cell_name)(**kwargs), unroll=spec.unroll)
    xs = inputs(spec)
    carry = None
    if cell_name == "SimpleCell" and spec.dtype != "float32":
        # SimpleCell returns its carry in the compute dtype; nn.RNN's default carry is float32, and a scan carry
        # must keep its dtype, so start from a carry in the compute dtype.
        carry = jnp.zeros((spec.batch, spec.hidden_size), measure.DTYPES[spec.dtype])
    info = {"unroll": spec.unroll, "compute_dtype": spec.dtype, "param_dtype": "float32"}
    return jax_variant(f"flax[{cell_name}]", "flax", spec,
                       lambda: module.init(jax.random.key(0), xs, initial_carry=carry),
                       lambda params, xs: module.apply(params, xs, initial_carry=carry), xs, info)


# -- PyTorch ------------------------------------------------------------------------------------------------------
def configure_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def torch_variant(spec: Spec) -> Variant:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module_name, kwargs = TORCH_MODULES[spec.cell]
    torch.manual_seed(0)
    module = getattr(torch.nn, module_name)(spec.input_size, spec.hidden_size, batch_first=True, **kwargs).to(device)
    xs = torch.tensor(np.asarray(inputs(spec))).to(device)  # the JAX variants' inputs, copied
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def autocast():
        if spec.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device, dtype=getattr(torch, spec.dtype))

    output_dtype = "float32"
    if spec.dtype != "float32":
        # One probe forward: autocast may fail (torch 2.13's CPU nn.LSTM on an AVX2-only CPU: "could not create a
        # primitive descriptor for the LSTM forward propagation primitive"; it runs on AVX512-BF16/AMX CPUs) or
        # leave a module in float32 (nn.GRU is not on autocast's list); both are recorded rather than hidden.
        try:
            with torch.no_grad(), autocast():
                output_dtype = str(module(xs)[0].dtype).removeprefix("torch.")
        except RuntimeError as error:
            raise Skip(f"torch.autocast({device!r}, {spec.dtype}) torch.nn.{module_name} failed: "
                       f"{str(error).splitlines()[0]}") from error

    if spec.step == "infer":
        def run():
            with torch.inference_mode(), autocast():
                module(xs)
            sync()
    else:
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

        def run():
            optimizer.zero_grad()
            with autocast():
                loss = module(xs)[0].float().pow(2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            sync()

    info = {"module": f"torch.nn.{module_name}", "device": device, "threads": torch.get_num_threads(),
            "autocast": None if spec.dtype == "float32" else spec.dtype, "output_dtype": output_dtype}
    return Variant("torch", "torch", run, None, None, info)


def peer_variant(spec: Spec, name: str) -> Variant:
    """Builds the peer variant called `name` ("torch" or "flax[CellName]")."""
    if name == "torch":
        return torch_variant(spec)
    return flax_variant(spec, name.removeprefix("flax[").removesuffix("]"))


# -- numerics -----------------------------------------------------------------------------------------------------
def bf16_drift(spec: Spec, scan_mode: str, backward: str = "auto", scan_space: str | None = None) -> dict:
    """How far rnnjax's forward outputs move with bfloat16 GEMM operands: max |y_bf16 - y_f32| over the same params
    and inputs, absolute and relative to max |y_f32|."""
    xs = inputs(spec)
    reference = make_rnnjax_cell(spec.cell, spec.hidden_size, "float32", scan_space)
    low = make_rnnjax_cell(spec.cell, spec.hidden_size, spec.dtype, scan_space)
    params = reference.init(jax.random.key(0), spec.input_size)

    def forward(cell):
        return jax.jit(lambda p, xs: rnnjax.unroll(cell, p, xs, scan=scan_mode, backward=backward)[0])(params, xs)

    y32, ylow = forward(reference), forward(low)
    max_abs = float(jnp.max(jnp.abs(ylow.astype(jnp.float32) - y32)))
    scale = float(jnp.max(jnp.abs(y32)))
    return {"max_abs_diff": max_abs, "max_abs_y": scale, "relative": max_abs / scale if scale else None,
            "dtype": spec.dtype, "scan_mode": scan_mode}
