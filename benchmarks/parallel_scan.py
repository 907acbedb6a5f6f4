"""Training-step time against sequence length: MinGRU on the parallel path (associative scan) and on the
sequential path (`lax.scan`), against GRU and LSTM at equal hidden size.

One training step = forward over `[batch, T, hidden]` inputs + backward of loss = sum(y), under one `jit`
(`jax.value_and_grad` w.r.t. the parameters). Compile time is measured separately (lower + compile); then one
burn-in call, then `--repeats` rounds in which every variant is timed once (interleaved, so machine-load drift hits
all variants alike), `block_until_ready` around each call; the median is reported. Every row records the path
`unroll` ran (`rnnjax.time_loop.unroll_path`).

    python -m benchmarks.parallel_scan --lengths 256 512 1024 2048 4096 --batch 16 --hidden 128 --repeats 5

Prints one JSON row per (variant, length), then a markdown table, the crossover (the shortest measured length from
which the parallel MinGRU stays faster than the sequential one) and the speed-ups at the longest length;
`--json PATH` writes everything (with the environment) to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from rnnjax.cells import GRU, LSTM
from rnnjax.minimal_cells import MinGRU
from rnnjax.time_loop import unroll, unroll_path

# name -> (cell for hidden size H, unroll mode)
VARIANTS = {
    "mingru_parallel": (lambda hidden: MinGRU(hidden, max_parallel_bytes=None), "parallel"),
    "mingru_parallel_linear": (lambda hidden: MinGRU(hidden, scan_space="linear", max_parallel_bytes=None),
                               "parallel"),
    "mingru_sequential": (lambda hidden: MinGRU(hidden), "sequential"),
    "gru": (GRU, "sequential"),
    "lstm": (LSTM, "sequential"),
}
DEFAULT_VARIANTS = ("mingru_parallel", "mingru_sequential", "gru", "lstm")


def make_step(name: str, batch: int, time_steps: int, hidden: int):
    """`(run, compile_seconds, path)`: a compiled forward+backward step on fixed random inputs."""
    make_cell, mode = VARIANTS[name]
    cell = make_cell(hidden)
    params = cell.init(jax.random.key(0), hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, hidden))
    path = unroll_path(cell, params, xs, mode=mode)

    def loss(params, xs):
        return jnp.sum(unroll(cell, params, xs, mode=mode)[0])

    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, xs).compile()
    compile_seconds = time.perf_counter() - start

    def run():
        jax.block_until_ready(compiled(params, xs))

    run()  # burn-in
    return run, compile_seconds, path


def crossover(rows: list[dict], fast: str, slow: str) -> int | None:
    """The shortest length from which `fast` is faster than `slow` at every longer measured length."""
    times = {(row["variant"], row["time"]): row["median_ms"] for row in rows}
    lengths = sorted({row["time"] for row in rows})
    result = None
    for length in reversed(lengths):
        if (fast, length) in times and (slow, length) in times and times[fast, length] < times[slow, length]:
            result = length
        else:
            break
    return result


def markdown_table(rows: list[dict], variants: list[str]) -> str:
    lengths = sorted({row["time"] for row in rows})
    times = {(row["variant"], row["time"]): row for row in rows}
    lines = ["| variant (path) | " + " | ".join(f"T={t} ms" for t in lengths) + " | compile s (longest T) |",
             "|---|" + "---|" * (len(lengths) + 1)]
    for name in variants:
        path = times[name, lengths[-1]]["path"]
        cells = [f"{times[name, t]['median_ms']:.1f}" for t in lengths]
        lines.append(f"| {name} ({path}) | " + " | ".join(cells) + f" | {times[name, lengths[-1]]['compile_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128, help="hidden size, also the input size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    results = {
        "config": vars(args),
        "environment": {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                        "cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "load_average_at_start": os.getloadavg()},
        "rows": [],
    }
    for length in args.lengths:
        steps = {name: make_step(name, args.batch, length, args.hidden) for name in args.variants}
        seconds = {name: [] for name in args.variants}
        for _ in range(args.repeats):
            for name, (run, _, _) in steps.items():  # interleaved rounds
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
        for name, (_, compile_seconds, path) in steps.items():
            median = statistics.median(seconds[name])
            row = {"variant": name, "time": length, "path": path, "median_ms": round(median * 1e3, 2),
                   "min_ms": round(min(seconds[name]) * 1e3, 2), "compile_s": round(compile_seconds, 2),
                   "tokens_per_s": round(args.batch * length / median)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    rows, longest = results["rows"], max(args.lengths)
    at_longest = {row["variant"]: row["median_ms"] for row in rows if row["time"] == longest}
    summary = {"load_average_at_end": os.getloadavg()}
    if "mingru_parallel" in at_longest:
        for other in args.variants:
            if other != "mingru_parallel":
                summary[f"crossover_vs_{other}"] = crossover(rows, "mingru_parallel", other)
                summary[f"speedup_at_{longest}_vs_{other}"] = round(at_longest[other] / at_longest["mingru_parallel"],
                                                                     2)
    results["summary"] = summary
    results["table"] = markdown_table(rows, args.variants)
    print(results["table"])
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()
