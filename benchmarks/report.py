"""Reporting: summaries over the measured rows (scan crossover, compile time against T), `results.json`,
`results.md` (also printed) and PNG plots (matplotlib, Agg backend).

A row is one (cell, shape, mode, variant) with its timings; rnnjax rows carry `speedup_vs`, the per-round ratios
t(other) / t(this rnnjax variant) (> 1: rnnjax faster) against every other variant of its group.
"""

from __future__ import annotations

import json
import os

PARALLEL = "rnnjax[parallel]"
SEQUENTIAL = "rnnjax[sequential]"
SEQUENTIAL_PATHS = ("sequential", "fused")  # `rnnjax.unroll_path`'s names of the sequential scan's two paths


def label(row: dict, cross_cell: bool) -> str:
    """How a variant is named in ratios: its variant name, prefixed by its cell when a group mixes cells."""
    return f"{row['cell']} {row['variant']}" if cross_cell else row["variant"]


# -- summaries ----------------------------------------------------------------------------------------------------
def crossover(fast: dict, slow: dict):
    """The shortest length from which `fast` stays faster than `slow` at every longer length measured for both
    (`{length: ms}` each), or "none"."""
    result = "none"
    for length in sorted(set(fast) & set(slow), reverse=True):
        if fast[length] >= slow[length]:
            break
        result = length
    return result


def scan_summaries(rows: list[dict]) -> list[dict]:
    """For every parallel-path rnnjax variant ("rnnjax[parallel]"): against every variant timed in the same groups
    (same mode and B, D, H), the crossover over the measured lengths and the speed-up at the longest one.
    `crossover` is the one against the same cell's sequential path (its "rnnjax[sequential]", else another rnnjax
    variant that ran sequentially, such as "rnnjax[auto]" on CPU)."""
    summaries = []
    families = {(r["cell"], r["mode"], r["batch"], r["input_size"], r["hidden_size"]) for r in rows
                if r["variant"] == PARALLEL}
    for cell, mode, batch, input_size, hidden_size in sorted(families):
        family = (cell, mode, batch, input_size, hidden_size)
        fast_rows = [r for r in rows if (r["cell"], r["mode"], r["batch"], r["input_size"], r["hidden_size"])
                     == family and r["variant"] == PARALLEL]
        fast = {r["time"]: r["median_ms"] for r in fast_rows}
        groups = {r["group"] for r in fast_rows}
        others, sequential = {}, []
        for r in rows:
            if r["group"] in groups and r not in fast_rows:
                name = f"{r['cell']} {r['variant']}"
                others.setdefault(name, {})[r["time"]] = r["median_ms"]
                if r["cell"] == cell and r["framework"] == "rnnjax" and r["info"].get("path") in SEQUENTIAL_PATHS:
                    sequential.append(name)
        if not others:
            continue
        longest = max(fast)
        crossovers = {name: crossover(fast, slow) for name, slow in others.items()}
        against = f"{cell} {SEQUENTIAL}" if f"{cell} {SEQUENTIAL}" in sequential else next(iter(sequential), None)
        summaries.append({
            "cell": cell, "variant": PARALLEL, "mode": mode, "batch": batch, "input_size": input_size,
            "hidden_size": hidden_size, "lengths": sorted(fast), "longest": longest,
            "crossover": crossovers[against] if against else "not measured", "crossover_against": against,
            "crossover_vs": crossovers,
            "speedup_at_longest": {name: slow[longest] / fast[longest] for name, slow in others.items()
                                   if longest in slow},
        })
    return summaries


def compile_summaries(rows: list[dict]) -> list[dict]:
    """Compile seconds against T for every JAX variant measured at several T with the same (B, D, H)."""
    series = {}
    for r in rows:
        if r["compile_s"] is not None:
            key = (r["cell"], r["variant"], r["mode"], r["batch"], r["input_size"], r["hidden_size"])
            series.setdefault(key, {})[r["time"]] = r["compile_s"]
    summaries = []
    for (cell, variant, mode, batch, input_size, hidden_size), by_time in series.items():
        if len(by_time) > 1:
            lengths = sorted(by_time)
            seconds = [by_time[t] for t in lengths]
            summaries.append({"cell": cell, "variant": variant, "mode": mode, "batch": batch,
                              "input_size": input_size, "hidden_size": hidden_size, "lengths": lengths,
                              "compile_s": seconds, "max_over_min": max(seconds) / min(seconds)})
    return summaries


# -- markdown -----------------------------------------------------------------------------------------------------
def _bytes(value) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _number(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _path(row: dict) -> str:
    info = row["info"]
    if row["framework"] == "torch":
        autocast = f", autocast {info['autocast']} -> {info['output_dtype']} out" if info.get("autocast") else ""
        return info["module"] + autocast
    if row["framework"] == "flax":
        return "nn.RNN scan" + (f", dtype {info['compute_dtype']}" if info["compute_dtype"] != "float32" else "")
    parts = [info["path"]]
    if info["path"] == "parallel" and info.get("scan_space"):
        parts.append(f"{info['scan_space']} space")
    if info.get("custom_backward"):
        parts.append("custom bwd")
    elif info.get("custom_backward") is False:
        parts.append("autodiff bwd")
    if info.get("unroll", 1) != 1:
        parts.append(f"unroll {info['unroll']}")
    if info.get("matmul_dtype"):
        parts.append(f"{info['matmul_dtype']} GEMMs")
    return ", ".join(parts)


def _memory(row: dict) -> str:
    memory = row["memory"]
    parts = []
    if memory.get("compiled"):
        parts.append(f"XLA {_bytes(memory['compiled']['total_bytes'])}")
    peak = memory.get("peak")
    if peak:
        parts.append(("RSS " if "RSS" in peak["source"] else "device peak ") + _bytes(peak["bytes"]))
    return ", ".join(parts) or "-"


def _speedups(row: dict) -> str:
    if not row.get("speedup_vs"):
        return "-"
    return "; ".join(f"vs {name} {ratio['median']:.2f} ({', '.join(f'{r:.2f}' for r in ratio['per_round'])})"
                     for name, ratio in row["speedup_vs"].items())


def _host_memory(env: dict) -> str:
    setting = env.get("host_memory")  # absent in results written before the harness recorded it
    if not setting:
        return "not recorded"
    text = "freed memory retained (rnnjax.train.retain_freed_memory)" if setting["retained"] else "C allocator defaults"
    return text + (f", LD_PRELOAD={setting['ld_preload']}" if setting.get("ld_preload") else "")


def markdown(results: dict) -> str:
    rows = results["rows"]
    env = results["environment"]
    config = results["config"]
    lines = [
        f"# rnnjax benchmark {env['time']}",
        "",
        f"{env['device_count']}x {env['device_kind']} ({env['platform']}), CPU {env['cpu_model']}, "
        f"{env['threads']['pinned']} threads; jax {env['versions']['jax']}, flax {env['versions']['flax']}, "
        f"torch {env['versions']['torch']}; dtype {config['dtype']}; rounds {config['rounds']} x repeats "
        f"{config['repeats']}; load average {env['load_average_at_start']} at start, "
        f"{results['load_average_at_end']} at end; host memory: {_host_memory(env)}.",
        "",
        *_busy_warning(env, results),
        "Speed-up = t(other) / t(rnnjax variant), median and per round (> 1: rnnjax faster). GFLOP/s counts GEMM "
        "FLOPs only (see `flop_model` in results.json); % of the large-GEMM ceiling / of the in-loop GEMM ceiling "
        "measured in this run. Memory: XLA = temp + argument + output - alias of the compiled step; RSS/device peak "
        "= process-wide peak so far.",
        "",
        "| cell | B,T,D,H | mode | variant | path | median ms | min-max ms | seq/s | tokens/s | GFLOP/s | % GEMM | "
        "% in-loop | compile s | memory | speed-up |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['shape']} | {r['mode']} | {r['variant']} | {_path(r)} | {r['median_ms']:.2f} | "
            f"{r['min_ms']:.2f}-{r['max_ms']:.2f} | {_number(r['sequences_per_s'])} | {_number(r['tokens_per_s'], 0)} "
            f"| {_number(r['gflops'])} | {_number(r['pct_of_gemm_ceiling'])} | {_number(r['pct_of_in_loop_ceiling'])} "
            f"| {_number(r['compile_s'], 2)} | {_memory(r)} | {_speedups(r)} |"
        )
    ceilings = results["ceilings"]
    lines += ["", "## Ceilings (measured in this run)", "", "| ceiling | shape | dtype | GFLOP/s | median ms |",
              "|---|---|---|---:|---:|",
              f"| large GEMM | {ceilings['gemm']['shape']} | {ceilings['gemm']['dtype']} | "
              f"{ceilings['gemm']['gflops']:.1f} | {ceilings['gemm']['median_ms']:.2f} |"]
    for ceiling in ceilings["in_loop"]:
        lines.append(f"| in-loop GEMM | {ceiling['shape']} | {ceiling['dtype']} | {ceiling['gflops']:.1f} | "
                     f"{ceiling['median_ms']:.2f} |")
    if results["bf16_drift"]:
        lines += ["", "## bfloat16 drift (rnnjax forward, same params and inputs as float32)", "",
                  "| cell | B,T,D,H | max abs diff | max abs y | relative |", "|---|---|---:|---:|---:|"]
        for d in results["bf16_drift"]:
            lines.append(f"| {d['cell']} | {d['shape']} | {d['max_abs_diff']:.3g} | {d['max_abs_y']:.3g} | "
                         f"{d['relative']:.3g} |")
    for s in results["summary"]["scan"]:
        lines += ["", f"## Parallel scan: {s['cell']} {s['variant']} ({s['mode']}, B={s['batch']}, "
                      f"D={s['input_size']}, H={s['hidden_size']})", ""]
        lines += _length_table(rows, s)
        lines += ["", f"Crossover vs {s['crossover_against']}: {s['crossover']}. Crossover vs each: "
                  + ", ".join(f"{name} {t}" for name, t in s["crossover_vs"].items()) + ".",
                  f"Speed-up of {s['cell']} {s['variant']} at T={s['longest']}: "
                  + ", ".join(f"vs {name} {x:.2f}x" for name, x in s["speedup_at_longest"].items()) + "."]
    if results["summary"]["compile_vs_time"]:
        lines += ["", "## Compile time against T", "", "| cell | variant | mode | B,D,H | T | compile s | max/min |",
                  "|---|---|---|---|---|---|---:|"]
        for c in results["summary"]["compile_vs_time"]:
            lines.append(f"| {c['cell']} | {c['variant']} | {c['mode']} | {c['batch']},{c['input_size']},"
                         f"{c['hidden_size']} | {', '.join(map(str, c['lengths']))} | "
                         f"{', '.join(f'{s:.2f}' for s in c['compile_s'])} | {c['max_over_min']:.2f} |")
    if results["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['cell']} {s.get('shape', '')} {s.get('mode', '')} {s['variant']}: {s['reason']}"
                  for s in results["skipped"]]
    return "\n".join(lines) + "\n"


def _busy_warning(env: dict, results: dict) -> list[str]:
    """A warning line when other processes loaded the machine (load average above half the cores)."""
    loads = [load for load in (env["load_average_at_start"], results["load_average_at_end"]) if load]
    cores = env["cpu_count"] or 1
    if loads and max(load[0] for load in loads) > cores / 2:
        return [f"**Busy machine**: 1-minute load average up to {max(load[0] for load in loads):.1f} on {cores} "
                "cores: other processes shared the CPU, so absolute times are inflated and noisy; read the "
                "same-round ratios.", ""]
    return []


def _summary_rows(rows: list[dict], summary: dict) -> list[dict]:
    """The rows a scan summary compares: its parallel variant and the variants timed with it."""
    names = {f"{summary['cell']} {summary['variant']}", *summary["crossover_vs"]}
    return [r for r in rows if (r["mode"], r["batch"], r["input_size"], r["hidden_size"])
            == (summary["mode"], summary["batch"], summary["input_size"], summary["hidden_size"])
            and f"{r['cell']} {r['variant']}" in names]


def _length_table(rows: list[dict], summary: dict) -> list[str]:
    same = _summary_rows(rows, summary)
    lengths = sorted({r["time"] for r in same})
    names = list(dict.fromkeys((r["cell"], r["variant"]) for r in same))
    times = {(r["cell"], r["variant"], r["time"]): r for r in same}
    lines = ["| variant (path) | " + " | ".join(f"T={t} ms" for t in lengths) + " | compile s per T |",
             "|---|" + "---:|" * len(lengths) + "---|"]
    for cell, variant in names:
        cells = [times.get((cell, variant, t)) for t in lengths]
        path = next(r for r in cells if r is not None)
        lines.append(f"| {cell} {variant} ({_path(path)}) | "
                     + " | ".join("-" if r is None else f"{r['median_ms']:.1f}" for r in cells) + " | "
                     + ", ".join("-" if r is None else _number(r["compile_s"], 1) for r in cells) + " |")
    return lines


# -- plots --------------------------------------------------------------------------------------------------------
def plots(rows: list[dict], out_dir: str) -> list[str]:
    """Per mode: throughput against shape (one panel per cell) and the speed-up of each rnnjax variant against
    each other variant of its group (bars: median, dots: rounds); step time against T for every scan summary.
    Returns the PNG paths written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        by_cell = {}
        for r in rows:
            if r["mode"] == mode:
                by_cell.setdefault(r["cell"], []).append(r)
        fig, axes = _panels(plt, len(by_cell), height=5.2)  # room for the legend under each panel
        for ax, (cell, selected) in zip(axes, by_cell.items()):
            shapes = list(dict.fromkeys(r["shape"] for r in selected))
            for variant in dict.fromkeys(r["variant"] for r in selected):
                points = [(shapes.index(r["shape"]), r["tokens_per_s"]) for r in selected if r["variant"] == variant]
                ax.plot(*zip(*points), marker="o", label=variant)
            _shape_axis(ax, shapes)
            ax.set_yscale("log")
            ax.set_ylabel("tokens/s")
            ax.set_title(f"{cell} {mode}", fontsize="medium")
            _legend_below(ax, *ax.get_legend_handles_labels())
        written.append(_save(fig, plt, out_dir, f"throughput_{mode}.png", f"throughput ({mode} step)"))

        with_ratios = {cell: selected for cell, selected in by_cell.items()
                       if any(r.get("speedup_vs") for r in selected)}
        if with_ratios:
            fig, axes = _panels(plt, len(with_ratios), height=5.2)  # room for the legend under each panel
            for ax, (cell, selected) in zip(axes, with_ratios.items()):
                _speedup_panel(ax, cell, mode, selected)
            written.append(_save(fig, plt, out_dir, f"speedup_{mode}.png",
                                 f"t(other) / t(rnnjax), {mode} step (> 1: rnnjax faster)"))

    for s in scan_summaries(rows):
        same = _summary_rows(rows, s)
        fig, ax = plt.subplots(figsize=(6, 4))
        for cell, variant in dict.fromkeys((r["cell"], r["variant"]) for r in same):
            points = sorted((r["time"], r["median_ms"]) for r in same if (r["cell"], r["variant"]) == (cell, variant))
            ax.plot(*zip(*points), marker="o", label=f"{cell} {variant}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T")
        ax.set_ylabel(f"{s['mode']} step ms")
        ax.legend(fontsize="small")
        name = f"scan_{s['cell']}_{s['mode']}_B{s['batch']}_D{s['input_size']}_H{s['hidden_size']}.png"
        written.append(_save(fig, plt, out_dir, name, f"step time against T (B={s['batch']}, D={s['input_size']}, "
                                                       f"H={s['hidden_size']})"))
    return written


def _panels(plt, count: int, height: float = 3.8):
    columns = min(3, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, height * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _speedup_panel(ax, cell: str, mode: str, selected: list[dict]) -> None:
    shapes = list(dict.fromkeys(r["shape"] for r in selected))
    pairs = []
    for pair in dict.fromkeys((r["variant"], other) for r in selected for other in r.get("speedup_vs", {})):
        if pair[::-1] not in pairs:  # rnnjax vs rnnjax[xla] is drawn once, not again as its inverse
            pairs.append(pair)
    width = 0.8 / len(pairs)
    for k, (variant, other) in enumerate(pairs):
        for r in selected:
            ratio = r.get("speedup_vs", {}).get(other) if r["variant"] == variant else None
            if ratio is not None:
                x = shapes.index(r["shape"]) + (k - (len(pairs) - 1) / 2) * width
                # Bars start at 1 (parity): up when rnnjax is faster, down when slower.
                ax.bar(x, ratio["median"] - 1.0, width, bottom=1.0, color=f"C{k % 10}", label=f"{variant} vs {other}")
                ax.plot([x] * len(ratio["per_round"]), ratio["per_round"], "k.", markersize=3)
    ax.axhline(1.0, color="gray", linewidth=1)
    _shape_axis(ax, shapes)
    ax.set_yscale("log")  # ratios: 0.5x and 2x sit equally far from 1
    ax.set_ylabel("speed-up")
    ax.set_title(f"{cell} {mode}", fontsize="medium")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    _legend_below(ax, unique.values(), unique.keys())


def _legend_below(ax, handles, labels) -> None:
    # Under the panel: inside it, the legend covered bars and points of the first shapes.
    ax.legend(handles, labels, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.42), ncol=2)


def _shape_axis(ax, shapes: list[str]) -> None:
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes, rotation=20, fontsize="small")
    ax.set_xlabel("B,T,D,H")


def _save(fig, plt, out_dir: str, name: str, title: str) -> str:
    path = os.path.join(out_dir, name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # legends placed outside a panel stay in the file
    plt.close(fig)
    return path


def write(results: dict, out_dir: str) -> dict:
    """Writes results.json, results.md and the plots into `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    files = {"markdown": os.path.join(out_dir, "results.md"), "json": os.path.join(out_dir, "results.json")}
    files["plots"] = plots(results["rows"], out_dir)
    results["files"] = files
    with open(files["markdown"], "w") as file:
        file.write(markdown(results))
    with open(files["json"], "w") as file:
        json.dump(results, file, indent=1)
    return files
