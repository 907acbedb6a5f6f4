"""Parity of rnnjax's GPU paths against PyTorch's `nn.LSTM` / `nn.GRU` (cuDNN on a GPU) with the same weights:
outputs, final states, and gradients for the weights, the inputs and the initial state, on a padded batch (lengths
through `pack_padded_sequence` on the torch side). The first stage of `benchmarks/gpu_check.sh`.

    python -m benchmarks.gpu_check --out DIR                  # on the GPU machine (what gpu_check.sh runs)
    python -m benchmarks.gpu_check --out DIR --tiny --emulate-gpu   # CPU smoke test: the same code, tiny shapes,
                                                              # cuDNN replaced by lstm_ref, Pallas in interpret mode

Checked variants, each with the path `rnnjax.unroll_path` reports: LSTM float32 on its dispatched path ("cudnn")
and forced onto the Pallas kernel; GRU float32 ("pallas"); LSTM and GRU with bfloat16 GEMM operands ("pallas",
against torch in float32, so with a bfloat16 tolerance); and rnnjax's own XLA scan (`backward="autodiff"`) as the
control. Both frameworks run at full float32 precision here (`jax_default_matmul_precision="highest"`, TF32 off in
torch), so float32 differences are rounding. Writes `parity.json` and `parity.md` to `--out`; exits 1 if a
variant is outside its tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import _gpu
from rnnjax import _pallas

SHAPE = (8, 24, 16, 40)  # B, T, D, H: H not a multiple of 8, a padded batch block
TINY_SHAPE = (3, 4, 3, 5)
TOLERANCE = {"float32": 2e-4, "bfloat16": 3e-2}  # max |diff| / (max |reference| + 1)
# (name, cell mode, matmul dtype, how rnnjax runs it): "auto" is what unroll picks, "pallas" forces the kernel,
# "autodiff" is rnnjax's XLA scan (autodiff of lax.scan) as the control.
VARIANTS = [
    ("lstm", "lstm", None, "auto"),
    ("lstm[pallas]", "lstm", None, "pallas"),
    ("lstm[xla]", "lstm", None, "autodiff"),
    ("gru", "gru", None, "auto"),
    ("gru[xla]", "gru", None, "autodiff"),
    ("lstm bf16", "lstm", "bfloat16", "auto"),
    ("gru bf16", "gru", "bfloat16", "auto"),
]


def lengths_for(batch: int, time: int) -> np.ndarray:
    """A padded batch: full, short, a single step, and everything between."""
    return np.asarray([time if b == 0 else 1 if b == 1 else 1 + (5 * b) % time for b in range(batch)], np.int32)


def data(mode: str, shape: tuple, seed: int = 0) -> dict:
    batch, time, features, hidden = shape
    rng = np.random.default_rng(seed)
    cell = rnnjax.make_cell(mode, hidden)
    params = jax.tree.map(lambda leaf: rng.uniform(-0.3, 0.3, leaf.shape).astype(np.float32),
                          cell.init(jax.random.key(0), features))
    carry = jax.tree.map(lambda leaf: (0.5 * rng.standard_normal(leaf.shape)).astype(np.float32),
                         cell.initial_carry((batch,)))
    xs = rng.standard_normal((batch, time, features)).astype(np.float32)
    weights = np.sin(np.arange(batch * time * hidden, dtype=np.float32)).reshape(batch, time, hidden)
    return {"params": params, "carry": carry, "xs": xs, "lengths": lengths_for(batch, time), "weights": weights}


def rnnjax_run(mode: str, matmul_dtype, how: str, d: dict) -> tuple[dict, str]:
    """Outputs, final states and gradients (loss: sum(ys * weights) + sum(cos(final states))) and the path."""
    cell = rnnjax.make_cell(mode, d["params"].weight_hh.shape[1], matmul_dtype=matmul_dtype)
    lengths = jnp.asarray(d["lengths"])
    backward = "autodiff" if how == "autodiff" else "auto"

    def forward(params, xs, carry):
        if how == "pallas":
            final, ys = _pallas.pallas_unroll(cell, params, jnp.swapaxes(xs, 0, 1), carry, lengths, False)
            return jnp.swapaxes(ys, 0, 1), final
        return rnnjax.unroll(cell, params, xs, carry=carry, lengths=lengths, backward=backward)

    def loss(params, xs, carry):
        ys, final = forward(params, xs, carry)
        return jnp.sum(ys * d["weights"]) + sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final)), (ys, final)

    path = "pallas" if how == "pallas" else rnnjax.unroll_path(cell, d["params"], d["xs"], backward=backward)
    (_, (ys, final)), (dparams, dxs, dcarry) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        d["params"], d["xs"], d["carry"])
    finals = {"h": final.h, "c": final.c} if mode == "lstm" else {"h": final}
    dcarries = {"h": dcarry.h, "c": dcarry.c} if mode == "lstm" else {"h": dcarry}
    out = {"ys": ys, **{f"final_{k}": v for k, v in finals.items()}, "d_weight_ih": dparams.weight_ih,
           "d_weight_hh": dparams.weight_hh, "d_bias_ih": dparams.bias_ih, "d_bias_hh": dparams.bias_hh,
           "d_xs": dxs, **{f"d_initial_{k}": v for k, v in dcarries.items()}}
    return {k: np.asarray(v, np.float32) for k, v in out.items()}, path


def torch_run(mode: str, d: dict) -> tuple[dict, str]:
    """The same with torch's `nn.LSTM` / `nn.GRU` (cuDNN when CUDA is available) on the same weights."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    _, time, features = d["xs"].shape
    hidden = d["params"].weight_hh.shape[1]
    module = getattr(torch.nn, mode.upper())(features, hidden, batch_first=True).to(device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(module, f"{name}_l0").copy_(torch.from_numpy(np.asarray(getattr(d["params"], name))))
    xs = torch.from_numpy(d["xs"]).to(device).requires_grad_()
    h0 = torch.from_numpy(np.asarray(d["carry"].h if mode == "lstm" else d["carry"]))[None].to(device)
    h0.requires_grad_()
    state = h0
    if mode == "lstm":
        c0 = torch.from_numpy(np.asarray(d["carry"].c))[None].to(device).requires_grad_()
        state = (h0, c0)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xs, torch.from_numpy(d["lengths"]).long(), batch_first=True,
                                                     enforce_sorted=False)
    out, final = module(packed, state)
    ys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=time)
    finals = {"h": final[0][0], "c": final[1][0]} if mode == "lstm" else {"h": final[0]}
    loss = (ys * torch.from_numpy(d["weights"]).to(device)).sum() + sum(torch.cos(v).sum() for v in finals.values())
    loss.backward()
    result = {"ys": ys, **{f"final_{k}": v for k, v in finals.items()}, "d_xs": xs.grad,
              "d_initial_h": h0.grad[0], **({"d_initial_c": c0.grad[0]} if mode == "lstm" else {})}
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        result[f"d_{name}"] = getattr(module, f"{name}_l0").grad
    kind = "cuDNN" if device == "cuda" and torch.backends.cudnn.is_available() else device
    return {k: v.detach().float().cpu().numpy() for k, v in result.items()}, f"torch.nn.{mode.upper()} ({kind})"


def compare(actual: dict, expected: dict, tolerance: float) -> dict:
    errors = {}
    for key, value in expected.items():
        errors[key] = float(np.max(np.abs(actual[key] - value)) / (np.max(np.abs(value)) + 1.0))
    worst = max(errors, key=errors.get)
    return {"errors": errors, "worst": worst, "max_error": errors[worst], "tolerance": tolerance,
            "ok": errors[worst] <= tolerance}


@contextlib.contextmanager
def full_precision():
    """float32 products at full precision in both frameworks (TF32 off): parity is judged on the math."""
    try:
        import torch
        flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    except ImportError:
        torch = None
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        if torch is not None:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def markdown(results: dict) -> str:
    lines = ["# GPU path parity against PyTorch", "",
             f"device: {results['device']}; torch: {results['torch']}; B,T,D,H = {results['shape']}; lengths "
             f"{results['lengths']}; error = max |rnnjax - torch| / (max |torch| + 1) per quantity"
             + ("; EMULATED (cuDNN replaced by lstm_ref, Pallas in interpret mode: a smoke test, not a GPU check)"
                if results["emulated"] else ""), "",
             "| variant | rnnjax path | torch | worst quantity | error | tolerance | ok |",
             "|---|---|---|---|---:|---:|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['variant']} | {row['path']} | {row['torch']} | {row['worst']} | {row['max_error']:.2e} "
                     f"| {row['tolerance']:.0e} | {'yes' if row['ok'] else '**NO**'} |")
    return "\n".join(lines) + "\n"


def run_variants(args, shape: tuple, inputs: dict) -> list[dict]:
    rows = []
    with full_precision():
        for name, mode, matmul_dtype, how in VARIANTS:
            if args.variants and name not in args.variants:
                continue
            if mode not in inputs:
                d = inputs[mode] = data(mode, shape)
                inputs[mode + "_torch"] = torch_run(mode, d)
            expected, torch_kind = inputs[mode + "_torch"]
            actual, path = rnnjax_run(mode, matmul_dtype, how, inputs[mode])
            result = compare(actual, expected, TOLERANCE[matmul_dtype or "float32"])
            rows.append({"variant": name, "cell": mode, "matmul_dtype": matmul_dtype, "path": path,
                         "torch": torch_kind, **result})
            print(f"{name:14s} {path:10s} worst {result['worst']:14s} {result['max_error']:.2e} "
                  f"{'ok' if result['ok'] else 'FAILED'}", flush=True)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory (parity.json, parity.md)")
    parser.add_argument("--tiny", action="store_true", help="B,T,D,H = 3,4,3,5 (for CPU smoke tests)")
    parser.add_argument("--emulate-gpu", action="store_true",
                        help="on a CPU: take the GPU paths anyway, with lstm_ref for cuDNN and Pallas interpreted")
    parser.add_argument("--variants", nargs="+", choices=[v[0] for v in VARIANTS], metavar="NAME",
                        help=f"a subset of {[v[0] for v in VARIANTS]} (default: all)")
    args = parser.parse_args(argv)
    shape = TINY_SHAPE if args.tiny else SHAPE
    inputs = {}
    backend = _gpu.backend
    if args.emulate_gpu:
        _gpu.backend = lambda: "cuda"  # unroll's dispatch sees a GPU; the kernels see the real (CPU) backend
    try:
        rows = run_variants(args, shape, inputs)
    finally:
        _gpu.backend = backend
    import torch

    results = {"device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
               "emulated": bool(args.emulate_gpu), "torch": torch.__version__, "shape": ",".join(map(str, shape)),
               "lengths": lengths_for(*shape[:2]).tolist(), "rows": rows, "ok": all(r["ok"] for r in rows)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "parity.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "parity.md"), "w") as f:
        f.write(markdown(results))
    return results


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
