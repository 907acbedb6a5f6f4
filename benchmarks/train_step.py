"""Training-step time of rnnjax's LSTM/GRU against Flax `nn.RNN` and PyTorch `nn.LSTM/nn.GRU`, same process.

One training step = forward over the whole sequence, loss = mean(y²), backward, `clip_by_global_norm(1.0)` + Adam
(the protocol of ../shared/PERFORMANCE-NOTES.md). Variants run in interleaved rounds and every round reports its
ratio to PyTorch, because absolute times on a shared machine drift by tens of percent between passes.

    python -m benchmarks.train_step --cells lstm gru --shapes 32,100,128,256 16,400,64,128 --rounds 3

Peers are skipped when not installed. This is the first, narrow measurement; the full harness (issue 7) extends it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import rnnjax


def time_call(fn, repeats: int) -> list[float]:
    """Seconds per call for `repeats` calls after one warm-up call (compile excluded)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def jax_step(init_params, apply, batch, time_steps, input_size):
    """A jitted, donated training step over a JAX model given `init_params()` and `apply(params, xs) -> ys`."""
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    params = init_params()
    state = {"params": params, "opt": optimizer.init(params)}
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, input_size))

    @jax.jit
    def step(params, opt_state, xs):
        grads = jax.grad(lambda p: jnp.mean(apply(p, xs) ** 2))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def run():
        state["params"], state["opt"] = step(state["params"], state["opt"], xs)
        jax.block_until_ready(state["params"])

    return run


def rnnjax_variant(mode, batch, time_steps, input_size, hidden_size):
    model = rnnjax.RNN(mode, input_size, hidden_size)
    return jax_step(lambda: model.init(jax.random.key(0)), lambda p, xs: model.apply(p, xs)[0],
                    batch, time_steps, input_size)


def rnnjax_autodiff_variant(mode, batch, time_steps, input_size, hidden_size):
    """The same one-layer model differentiated by autodiff of the plain `lax.scan` (`unroll(backward="autodiff")`):
    the baseline of the hand-written backward pass that `rnnjax` runs by default."""
    cell = rnnjax.make_cell(mode, hidden_size)
    return jax_step(lambda: cell.init(jax.random.key(0), input_size),
                    lambda p, xs: rnnjax.unroll(cell, p, xs, backward="autodiff")[0], batch, time_steps, input_size)


def flax_variant(mode, batch, time_steps, input_size, hidden_size):
    from flax import linen as nn

    cell = nn.OptimizedLSTMCell(hidden_size) if mode == "lstm" else nn.GRUCell(hidden_size)
    module = nn.RNN(cell)
    sample = jnp.zeros((batch, time_steps, input_size))
    return jax_step(lambda: module.init(jax.random.key(0), sample), module.apply, batch, time_steps, input_size)


def torch_variant(mode, batch, time_steps, input_size, hidden_size):
    import torch

    torch.set_num_threads(int(os.environ.get("RNNJAX_BENCH_THREADS", os.cpu_count())))
    module = (torch.nn.LSTM if mode == "lstm" else torch.nn.GRU)(input_size, hidden_size, batch_first=True)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    xs = torch.randn(batch, time_steps, input_size)

    def run():
        optimizer.zero_grad()
        loss = module(xs)[0].pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()

    return run


PEERS = {"rnnjax": rnnjax_variant, "rnnjax_autodiff": rnnjax_autodiff_variant, "flax": flax_variant,
         "torch": torch_variant}


def available(name: str) -> bool:
    try:
        __import__({"rnnjax": "rnnjax", "rnnjax_autodiff": "rnnjax", "flax": "flax.linen", "torch": "torch"}[name])
        return True
    except ImportError:
        return False


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    parser.add_argument("--shapes", nargs="+", default=["32,100,128,256"], help="B,T,D,H")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=list(PEERS), choices=list(PEERS))
    args = parser.parse_args(argv)
    peers = [name for name in args.variants if available(name)]
    results = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "rows": []}
    for mode in args.cells:
        for shape in args.shapes:
            batch, time_steps, input_size, hidden_size = (int(v) for v in shape.split(","))
            runs = {name: PEERS[name](mode, batch, time_steps, input_size, hidden_size) for name in peers}
            medians = {name: [] for name in peers}
            for _ in range(args.rounds):
                for name in peers:  # interleaved: every round times every variant
                    medians[name].append(statistics.median(time_call(runs[name], args.repeats)) * 1e3)
            row = {"cell": mode, "shape": shape, "median_ms": {n: round(statistics.median(m), 1)
                                                                for n, m in medians.items()}}
            if "torch" in peers:
                row["speedup_vs_torch_per_round"] = {
                    n: [round(t / s, 2) for t, s in zip(medians["torch"], medians[n])] for n in peers if n != "torch"
                }
            if "rnnjax" in peers and "rnnjax_autodiff" in peers:  # what the hand-written backward pass buys
                row["custom_backward_speedup_per_round"] = [
                    round(a / c, 2) for a, c in zip(medians["rnnjax_autodiff"], medians["rnnjax"])]
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    return results


if __name__ == "__main__":
    main()
