"""Measuring: step times in interleaved rounds, compile time, memory, and the machine's matmul ceilings.

Timing protocol (nanoGPT's bench, ../shared/PERFORMANCE-NOTES.md): every variant of a group is built and compiled
first (compile time measured separately: `jit(f).lower(...).compile()`), then round r runs one warm-up call of
every variant followed by `repeats` timed calls, variant after variant. Absolute times drift by tens of percent on a
shared machine, so comparisons are ratios of per-round medians taken in the same round. Every timed JAX callable
blocks on its outputs (`jax.block_until_ready`) itself.

Ceilings, measured in the same run and dtype: (a) one large GEMM `[n, n] @ [n, n]`; (b) the recurrent GEMM
`[B, H] @ [H, G]` repeated T times inside a `lax.fori_loop` whose carry feeds each product into the next (the rate
a time loop can reach at that shape). bfloat16 operands accumulate in float32 (`preferred_element_type`).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_rounds(runs: dict, rounds: int, repeats: int, warmup: int = 1) -> dict:
    """`{name: [[seconds of each call] per round]}`: round r runs every variant `warmup` + `repeats` times (warm-up
    untimed), one variant after the other, so drift of the machine's load hits all of them alike."""
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(warmup):
                run()
            seconds[name].append(time_calls(run, repeats))
    return seconds


def summarize(rounds: list[list[float]]) -> dict:
    """Median, min and max over every timed call, and each round's median, in milliseconds."""
    calls = [t for round_ in rounds for t in round_]
    return {
        "median_ms": statistics.median(calls) * 1e3,
        "min_ms": min(calls) * 1e3,
        "max_ms": max(calls) * 1e3,
        "per_round_median_ms": [statistics.median(round_) * 1e3 for round_ in rounds],
    }


def ratios(other_ms: list[float], this_ms: list[float]) -> dict:
    """t(other) / t(this) per round (> 1: this is faster) and their median."""
    per_round = [o / t for o, t in zip(other_ms, this_ms)]
    return {"per_round": per_round, "median": statistics.median(per_round)}


def compile_timed(jitted, *args):
    """`(compiled, seconds)` of `jitted.lower(*args).compile()` (tracing and lowering included)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def compiled_memory(compiled) -> dict | None:
    """Bytes from XLA's `compiled.memory_analysis()`; `total_bytes` = temp + argument + output - alias (a donated
    buffer that the output reuses is counted once). None when the backend does not report it."""
    try:
        stats = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if stats is None:
        return None
    fields = {name: getattr(stats, f"{name}_size_in_bytes", None) for name in ("temp", "argument", "output", "alias")}
    if any(value is None for value in fields.values()):
        return None
    result = {f"{name}_bytes": int(value) for name, value in fields.items()}
    result["total_bytes"] = fields["temp"] + fields["argument"] + fields["output"] - fields["alias"]
    result["source"] = "compiled.memory_analysis()"
    return result


def peak_memory() -> dict | None:
    """The process's peak so far: the device's `peak_bytes_in_use` where the backend keeps one (GPU/TPU), else the
    peak resident set size of the process (`getrusage`). Both are process-wide and never decrease, so a variant's
    number bounds its own peak from above."""
    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except (AttributeError, NotImplementedError, RuntimeError):
        pass
    if stats and "peak_bytes_in_use" in stats:
        return {"bytes": int(stats["peak_bytes_in_use"]),
                "source": "device.memory_stats() peak_bytes_in_use (process-wide peak so far)"}
    return rss_peak()


def rss_peak() -> dict:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # kilobytes on Linux, bytes on macOS
    return {"bytes": int(maxrss * scale), "source": "getrusage ru_maxrss (process peak RSS so far)"}


def _matmul(a, b, dtype):
    return jnp.matmul(a.astype(dtype), b, preferred_element_type=jnp.float32)


def _timed_rate(compiled, args, flops: int, repeats: int) -> dict:
    run = lambda: jax.block_until_ready(compiled(*args))  # noqa: E731
    run()  # warm-up
    times = time_calls(run, repeats)
    median = statistics.median(times)
    return {"gflops": flops / median / 1e9, "median_ms": median * 1e3, "flops": flops, "repeats": repeats}


def gemm_ceiling(n: int, dtype: str, repeats: int) -> dict:
    """GFLOP/s of one `[n, n] @ [n, n]` GEMM in `dtype` (float32 accumulation)."""
    dt = DTYPES[dtype]
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((n, n), dtype=np.float32)).astype(dt) for _ in range(2))
    compiled = jax.jit(lambda a, b: _matmul(a, b, dt)).lower(a, b).compile()
    result = _timed_rate(compiled, (a, b), 2 * n**3, repeats)
    result.update(shape=f"[{n},{n}]@[{n},{n}]", dtype=dtype)
    return result


def in_loop_gemm_ceiling(batch: int, hidden: int, width: int, time_steps: int, dtype: str, repeats: int) -> dict:
    """GFLOP/s of `[batch, hidden] @ [hidden, width]` repeated `time_steps` times in a `fori_loop`, each product's
    gate blocks summed into the next step's `h`. The blocks are an orthogonal matrix divided by their count, so
    their sum is orthogonal and `|h|` stays put (no overflow, no denormals); the sum costs `width` adds per row
    against `2 * hidden * width` GEMM FLOPs, and it keeps XLA from slicing the GEMM down to one block."""
    dt = DTYPES[dtype]
    blocks = width // hidden
    rng = np.random.default_rng(0)  # numpy, so that setting up compiles nothing
    q, _ = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    weight = jnp.asarray(np.tile(q / blocks, (1, blocks)).astype(np.float32)).astype(dt)
    h0 = jnp.asarray(rng.standard_normal((batch, hidden), dtype=np.float32))

    def loop(h, weight):
        def body(_, h):
            return jnp.sum(_matmul(h, weight, dt).reshape(batch, blocks, hidden), axis=1)

        return jax.lax.fori_loop(0, time_steps, body, h)

    compiled = jax.jit(loop).lower(h0, weight).compile()
    result = _timed_rate(compiled, (h0, weight), 2 * batch * hidden * width * time_steps, repeats)
    result.update(shape=f"[{batch},{hidden}]@[{hidden},{width}] x {time_steps} steps", dtype=dtype)
    return result
