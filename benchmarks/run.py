"""The benchmark harness: rnnjax's cells against Flax `nn.RNN` and PyTorch `nn.LSTM/GRU/RNN` in one process, for
training and inference steps, with compile time, memory, GEMM utilisation and the environment recorded.

    python -m benchmarks.run --preset standard                  # lstm, gru at four shapes, train + infer
    python -m benchmarks.run --preset train-step                # lstm, gru training: custom vs autodiff backward
    python -m benchmarks.run --preset parallel-scan             # issue 8: minGRU parallel vs sequential vs T
    python -m benchmarks.run --cells lstm mingru --shapes 32,100,128,256 --mode train --compare torch
    python -m benchmarks.run --quick --out /tmp/bq              # every code path in about a minute
    python -m benchmarks.run --preset train-step --quick        # any preset at small shapes, under a minute

Protocol (benchmarks/measure.py): each (cell, shape, mode) group compiles all its variants, then times them in
interleaved rounds (a warm-up call, then `--repeats` timed calls per variant per round); the rows report median,
min and max step time, sequences/s and tokens/s, GEMM GFLOP/s against two ceilings measured in the same run (a
large GEMM; the recurrent GEMM [B,H]@[H,G] repeated T times in a loop), compile time, memory, which rnnjax path ran,
and per-round speed-ups t(peer) / t(rnnjax).

FLOP model (benchmarks/flops.py, also in results.json): GEMM FLOPs only, G = gates*H (lstm 4, gru 3, rnn 1;
mingru 2 and minlstm 3 from x only); forward 2*B*T*G*(D+H) (minimal cells 2*B*T*G*D); training adds the backward
dW_ih 2BTGD + dW_hh 2BTGH + dh 2BTGH (minimal cells: dW_ih only; no input gradient).
`--scan-modes` with more than one mode names the rnnjax variants "rnnjax[auto]", "rnnjax[parallel]", ...;
`--backward auto autodiff` adds "rnnjax[autodiff]" (`unroll(backward="autodiff")`: autodiff of the plain `lax.scan`,
the baseline of the hand-written backward pass), `--scan-space log linear` adds the minimal cells' linear-space
parallel scan ("rnnjax[parallel,linear]"). Every rnnjax row records the path `rnnjax.unroll_path` reports
("parallel", "fused": sequential with the hand-written backward pass, or "sequential": autodiff of `lax.scan`).
Peers run when installed and when the cell has a counterpart (minGRU/minLSTM have none); skips are recorded.
PyTorch is pinned to `$RNNJAX_BENCH_THREADS` threads, else `os.cpu_count()` (XLA's CPU default).
Writes results.json, results.md (also printed) and PNG plots to `--out` (default benchmarks/results/<timestamp>).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import rnnjax
from benchmarks import environment, flops, measure, report, variants
from rnnjax.minimal_cells import SCAN_SPACES
from rnnjax.time_loop import BACKWARDS
from rnnjax.train import host_memory

DEFAULTS = {
    "cells": ["lstm", "gru"],
    "shapes": [(32, 100, 128, 256)],
    "mode": "both",
    "compare": list(variants.PEERS),
    "dtype": "float32",
    "rounds": 3,
    "repeats": 10,
    "unroll": 1,
    "scan_modes": ["auto"],
    "backwards": ["auto"],
    "scan_spaces": ["log"],
    "natives": ["on"],
    "gemm_size": 2048,
    "host_memory": "retain",
}
# --quick: small enough for about a minute on 2 cores, yet every code path of the harness: both Flax LSTM cells,
# Flax GRUCell and SimpleCell (with relu), the three PyTorch modules, a minimal cell on both scan paths.
QUICK = {
    "cells": ["lstm", "gru", "rnn_relu", "mingru"],
    "shapes": [(4, 16, 8, 16)],
    "rounds": 2,
    "repeats": 2,
    "scan_modes": ["auto", "parallel"],
    "gemm_size": 512,
}
PARALLEL_SCAN_LENGTHS = (256, 512, 1024, 2048, 4096)
PRESETS = {
    # The four shapes of ../shared/PERFORMANCE-NOTES.md.
    "standard": {
        "cells": ["lstm", "gru"],
        "shapes": [(32, 100, 128, 256), (64, 100, 256, 512), (16, 400, 64, 128), (128, 50, 512, 1024)],
        "mode": "both",
        "compare": ["flax", "torch"],
        "scan_modes": ["auto"],
        "natives": ["on", "off"],  # rnnjax on the native CPU loop where it has one, and rnnjax[xla] beside it
    },
    # What the hand-written backward pass buys, and the training step against Flax and PyTorch (the former
    # benchmarks/train_step.py): rnnjax (backward="auto": the fused path) and rnnjax[autodiff] in every group.
    "train-step": {
        "cells": ["lstm", "gru"],
        "shapes": [(32, 100, 128, 256), (16, 400, 64, 128)],
        "mode": "train",
        "compare": ["flax", "torch"],
        "scan_modes": ["auto"],
        "backwards": ["auto", "autodiff"],
    },
    # Issue 8 (and the former benchmarks/parallel_scan.py): training-step time against T, minGRU on both paths
    # against GRU and LSTM, all in one group per T; `--scan-space log linear` adds the linear-space parallel scan.
    "parallel-scan": {
        "shapes": [(16, t, 128, 128) for t in PARALLEL_SCAN_LENGTHS],
        "mode": "train",
        "compare": [],
        "variants": [("mingru", "parallel", "rnnjax[parallel]"), ("mingru", "sequential", "rnnjax[sequential]"),
                     ("gru", "sequential", "rnnjax"), ("lstm", "sequential", "rnnjax")],  # (cell, scan mode, name)
    },
}
# On one NVIDIA GPU (benchmarks/gpu_check.sh runs it in float32 and bfloat16): the standard shapes, rnnjax on its
# GPU path (cudnn or pallas, as `unroll_path` reports) and on its own XLA scan (rnnjax[autodiff]), against Flax and
# PyTorch's cuDNN modules; a GEMM large enough to find the GPU's ceiling; rounds sized to fit the script's budget.
PRESETS["gpu"] = dict(PRESETS["standard"], backwards=["auto", "autodiff"], natives=["on"], gemm_size=8192, rounds=2,
                      repeats=5)
QUICK_PRESET_SHAPES = {"standard": [(4, 16, 8, 16)], "train-step": [(4, 16, 8, 16)], "gpu": [(4, 16, 8, 16)],
                       "parallel-scan": [(2, t, 8, 8) for t in (8, 16, 32)]}
CEILING_REPEATS = 5


@dataclasses.dataclass(frozen=True)
class Entry:
    """One variant of a group: rnnjax with a scan mode, backward pass and (minimal cells) scan space, or a peer
    (scan_mode None)."""

    cell: str
    name: str
    scan_mode: str | None = None
    backward: str = "auto"
    scan_space: str | None = None
    native: bool = True  # False: traced under rnnjax.native.flags(enabled=False), the XLA paths only


@dataclasses.dataclass(frozen=True)
class Group:
    """Variants timed together in interleaved rounds: one (cell, shape, mode) — or, for the parallel-scan preset,
    one (shape, mode) across cells."""

    shape: tuple[int, int, int, int]
    step: str
    entries: tuple[Entry, ...]


def parse_shape(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected B,T,D,H positive ints, got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--cells", nargs="+", choices=rnnjax.CELL_MODES, help="default: lstm gru")
    parser.add_argument("--shapes", nargs="+", type=parse_shape, metavar="B,T,D,H", help="default: 32,100,128,256")
    parser.add_argument("--mode", choices=("train", "infer", "both"), help="default: both")
    parser.add_argument("--compare", nargs="*", choices=variants.PEERS, help="peers (default: flax torch; none "
                        "when given without names)")
    parser.add_argument("--dtype", choices=tuple(measure.DTYPES), help="GEMM operand dtype (default: float32)")
    parser.add_argument("--out", help="output directory (default: benchmarks/results/<timestamp>)")
    parser.add_argument("--rounds", type=positive_int, help="interleaved rounds (default 3; --quick 2)")
    parser.add_argument("--repeats", type=positive_int, help="timed calls per variant per round (default 10)")
    parser.add_argument("--unroll", type=positive_int, help="lax.scan unroll factor, rnnjax and Flax (default 1)")
    parser.add_argument("--scan-modes", nargs="+", choices=rnnjax.SCANS,
                        help="rnnjax scans, unroll(scan=...) (default auto)")
    parser.add_argument("--backward", dest="backwards", nargs="+", choices=BACKWARDS,
                        help="rnnjax backward passes, unroll(backward=...) (default auto; train-step preset: auto "
                             "autodiff)")
    parser.add_argument("--scan-space", dest="scan_spaces", nargs="+", choices=SCAN_SPACES,
                        help="parallel scan space of the minimal cells, MinGRU/MinLSTM(scan_space=...) (default log)")
    parser.add_argument("--native", dest="natives", nargs="+", choices=("on", "off"),
                        help="rnnjax on the native CPU loop (on) and/or on XLA only (off: rnnjax[xla]) (default on; "
                             "standard preset: on off)")
    parser.add_argument("--gemm-size", type=positive_int, help="n of the large-GEMM ceiling (default 2048)")
    parser.add_argument("--host-memory", choices=("retain", "system"),
                        help="retain (default): rnnjax.train.retain_freed_memory() before anything runs, so that no "
                             "framework's per-call buffers page-fault; system: the C allocator's defaults")
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds: every code path quickly")
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="standard: lstm, gru at four shapes, train + infer, vs flax and torch; train-step: lstm, "
                             "gru training steps, rnnjax and rnnjax[autodiff] vs flax and torch; parallel-scan: minGRU "
                             "parallel/sequential vs gru, lstm at T = 256 ... 4096; gpu: the standard shapes with "
                             "rnnjax's GPU path and its XLA scan (rnnjax[autodiff]) vs flax and torch cuDNN "
                             "(benchmarks/gpu_check.sh) (with --quick: small shapes)")
    return parser


def resolve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The run's configuration: explicit flags, else the preset's, else --quick's, else the defaults (--quick also
    shrinks a preset's shapes)."""
    preset = PRESETS.get(args.preset, {})
    if args.preset == "parallel-scan":
        for flag, value in (("--cells", args.cells), ("--scan-modes", args.scan_modes), ("--compare", args.compare),
                            ("--backward", args.backwards)):
            if value is not None:
                parser.error(f"--preset parallel-scan fixes its variants (minGRU parallel/sequential, GRU, LSTM); "
                             f"drop {flag}")
    quick = QUICK if args.quick else {}
    config = {}
    for key, default in DEFAULTS.items():
        explicit = getattr(args, key)
        if explicit is not None:
            config[key] = explicit
        elif key == "shapes" and args.quick and args.preset:
            config[key] = QUICK_PRESET_SHAPES[args.preset]
        elif key in preset:
            config[key] = preset[key]
        elif key in quick:
            config[key] = quick[key]
        else:
            config[key] = default
    for key in ("scan_modes", "backwards", "scan_spaces", "natives"):
        config[key] = list(dict.fromkeys(config[key]))
    config["preset"] = args.preset
    config["quick"] = args.quick
    config["variants"] = preset.get("variants")
    config["out"] = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                             time.strftime("%Y%m%d-%H%M%S"))
    if config["dtype"] != "float32" and not variants.has_matmul_dtype():
        parser.error(f"--dtype {config['dtype']} needs rnnjax.make_cell(..., matmul_dtype=...), which this rnnjax "
                     "does not have yet")
    return config


def plan(config: dict) -> tuple[list[Group], list[dict]]:
    """The groups to time and the peer variants skipped (not installed, or no counterpart for the cell)."""
    steps = ("train", "infer") if config["mode"] == "both" else (config["mode"],)
    if config["variants"]:
        entries = tuple(entry for cell, scan, name in config["variants"]
                        for entry in rnnjax_entries(cell, name, [scan], config["backwards"], config))
        return [Group(shape, step, entries) for shape in config["shapes"] for step in steps], []
    skipped = []
    installed = {peer: variants.available(peer) for peer in config["compare"]}
    groups = []
    for cell in config["cells"]:
        entries = rnnjax_entries(cell, "rnnjax", config["scan_modes"], config["backwards"], config)
        for peer, present in installed.items():
            names = variants.peer_names(cell, peer)
            if not present:
                skipped.append({"cell": cell, "variant": peer, "reason": f"{peer} is not installed"})
            elif not names:
                skipped.append({"cell": cell, "variant": peer, "reason": f"{peer} has no counterpart of {cell}"})
            else:
                entries += [Entry(cell, name) for name in names]
        groups += [Group(shape, step, tuple(entries)) for shape in config["shapes"] for step in steps]
    return groups, skipped


def tagged(name: str, tags: list[str]) -> str:
    """`name` with `tags` added inside its brackets: ("rnnjax", ["autodiff"]) -> "rnnjax[autodiff]",
    ("rnnjax[parallel]", ["linear"]) -> "rnnjax[parallel,linear]"."""
    if not tags:
        return name
    if name.endswith("]"):
        return f"{name[:-1]},{','.join(tags)}]"
    return f"{name}[{','.join(tags)}]"


def rnnjax_entries(cell: str, name: str, scans: list[str], backwards: list[str], config: dict) -> list[Entry]:
    """The rnnjax variants of `cell`: every scan x backward pass, and for a cell with a parallel scan every scan space
    on the scans that may run it (not "sequential"). Named `name` tagged with what varies: the scan when several
    are asked for, a backward pass other than "auto" and a scan space other than "log" when several are."""
    spaces = config["scan_spaces"]
    has_space = variants.has_scan_space(cell)
    entries = []
    for scan in scans:
        for backward in backwards:
            space_varies = has_space and scan != "sequential" and len(spaces) > 1
            for space in (spaces if space_varies else spaces[:1]):
                for native in config["natives"]:
                    tags = [scan] if len(scans) > 1 else []
                    tags += [backward] if len(backwards) > 1 and backward != "auto" else []
                    tags += [space] if space_varies and space != "log" else []
                    tags += ["xla"] if native == "off" and len(config["natives"]) > 1 else []
                    entries.append(Entry(cell, tagged(name, tags), scan, backward, space if has_space else None,
                                         native == "on"))
    return entries


def build(entry: Entry, spec: variants.Spec) -> variants.Variant:
    if entry.scan_mode is not None:
        with rnnjax.native.flags(enabled=entry.native):  # the path is chosen when the step is traced, here
            return variants.rnnjax_variant(spec, entry.scan_mode, entry.name, entry.backward, entry.scan_space)
    return variants.peer_variant(spec, entry.name)


def group_rows(group: Group, index: int, config: dict, ceilings: dict, drifts: dict,
               skipped: list[dict]) -> list[dict]:
    """Builds, compiles and times one group; returns its rows (ratios included)."""
    batch, time_steps, input_size, hidden_size = group.shape
    built = {}
    for entry in group.entries:
        spec = variants.Spec(entry.cell, group.step, *group.shape, dtype=config["dtype"], unroll=config["unroll"])
        try:
            built[entry] = (spec, build(entry, spec))
        except variants.Skip as skip:
            skipped.append({"cell": entry.cell, "shape": spec.shape, "mode": group.step, "variant": entry.name,
                            "reason": str(skip)})
    seconds = measure.interleaved_rounds({entry: variant.run for entry, (_, variant) in built.items()},
                                         config["rounds"], config["repeats"])
    cross_cell = len({entry.cell for entry in built}) > 1
    rows = []
    for entry, (spec, variant) in built.items():
        timing = measure.summarize(seconds[entry])
        median_s = timing["median_ms"] / 1e3
        step_flops = flops.step_flops(entry.cell, group.step, batch, time_steps, input_size, hidden_size)
        in_loop = in_loop_ceiling(entry.cell, group.shape, config, ceilings)
        gflops = step_flops / median_s / 1e9
        row = {
            "cell": entry.cell, "shape": spec.shape, "batch": batch, "time": time_steps, "input_size": input_size,
            "hidden_size": hidden_size, "mode": group.step, "dtype": config["dtype"], "variant": variant.name,
            "framework": variant.framework, "group": index, **timing,
            "per_round_ms": [[t * 1e3 for t in round_] for round_ in seconds[entry]],
            "sequences_per_s": batch / median_s, "tokens_per_s": batch * time_steps / median_s,
            "flops": step_flops, "gflops": gflops,
            "pct_of_gemm_ceiling": 100 * gflops / ceilings["gemm"]["gflops"],
            "pct_of_in_loop_ceiling": None if in_loop is None else 100 * gflops / in_loop["gflops"],
            "in_loop_ceiling_gflops": None if in_loop is None else in_loop["gflops"],
            "compile_s": variant.compile_s,
            "memory": {"compiled": variant.memory, "peak": measure.peak_memory()},
            "info": variant.info,
        }
        if variant.framework == "rnnjax" and config["dtype"] != "float32":
            key = (entry.cell, spec.shape)
            if key not in drifts:
                drifts[key] = dict(variants.bf16_drift(spec, entry.scan_mode, entry.backward, entry.scan_space),
                                   cell=entry.cell, shape=spec.shape)
            row["bf16_drift"] = drifts[key]
        rows.append(row)
    for row in rows:
        if row["framework"] == "rnnjax":
            this = row["per_round_median_ms"]
            row["speedup_vs"] = {report.label(other, cross_cell): measure.ratios(other["per_round_median_ms"], this)
                                 for other in rows if other is not row}
    return rows


def in_loop_ceiling(cell: str, shape: tuple, config: dict, ceilings: dict) -> dict | None:
    """The in-loop GEMM ceiling of the cell's recurrent GEMM at this shape (cached); None for the minimal cells."""
    if not flops.has_recurrent_gemm(cell):
        return None
    batch, time_steps, _, hidden_size = shape
    width = flops.gate_width(cell, hidden_size)
    key = (batch, hidden_size, width, time_steps, config["dtype"])
    if key not in ceilings["in_loop_cache"]:
        ceiling = measure.in_loop_gemm_ceiling(batch, hidden_size, width, time_steps, config["dtype"],
                                               CEILING_REPEATS)
        ceilings["in_loop_cache"][key] = ceiling
        ceilings["in_loop"].append(ceiling)
    return ceilings["in_loop_cache"][key]


def _progress(rows: list[dict]) -> str:
    first = rows[0]
    times = ", ".join(f"{r['variant'] if r['cell'] == first['cell'] else r['cell'] + ' ' + r['variant']} "
                      f"{r['median_ms']:.1f} ms" for r in rows)
    return f"{first['cell']} {first['shape']} {first['mode']}: {times}"


def median_speedups(rows: list[dict]) -> dict:
    """Per (cell, mode, rnnjax variant, other variant): the median over shapes of the median per-shape speed-up."""
    collected = {}
    for row in rows:
        for other, ratio in row.get("speedup_vs", {}).items():
            collected.setdefault(f"{row['cell']} {row['mode']} {row['variant']} vs {other}", []).append(
                ratio["median"])
    return {key: statistics.median(values) for key, values in collected.items()}


def main(argv=None) -> dict:
    parser = make_parser()
    config = resolve(parser, parser.parse_args(argv))
    start = time.perf_counter()
    # Process-wide, so every variant (rnnjax, Flax, PyTorch) runs under the same allocator settings.
    retained = config["host_memory"] == "retain" and host_memory.retain_freed_memory()
    threads = environment.thread_count()
    if "torch" in config["compare"] and variants.available("torch"):
        variants.configure_torch(threads)
    env = environment.collect(threads)
    env["host_memory"] = {"requested": config["host_memory"], "retained": retained,
                          "glibc": host_memory.glibc_version(), "ld_preload": os.environ.get("LD_PRELOAD")}
    groups, skipped = plan(config)
    ceilings = {"gemm": measure.gemm_ceiling(config["gemm_size"], config["dtype"], CEILING_REPEATS),
                "in_loop": [], "in_loop_cache": {}}
    rows, drifts = [], {}
    for k, group in enumerate(groups):
        new_rows = group_rows(group, k, config, ceilings, drifts, skipped)
        rows += new_rows
        if new_rows:
            print(f"[{k + 1}/{len(groups)}] {_progress(new_rows)}", flush=True)
    del ceilings["in_loop_cache"]
    env["rnnjax_paths"] = [  # which path every rnnjax variant ran, next to the rest of the environment
        {"cell": r["cell"], "shape": r["shape"], "mode": r["mode"], "variant": r["variant"], **r["info"]}
        for r in rows if r["framework"] == "rnnjax"]
    results = {
        "config": dict(config),
        "environment": env,
        "flop_model": flops.MODEL,
        "ceilings": ceilings,
        "rows": rows,
        "skipped": skipped,
        "bf16_drift": list(drifts.values()),
        "summary": {"scan": report.scan_summaries(rows), "compile_vs_time": report.compile_summaries(rows),
                    "median_speedups": median_speedups(rows)},
        "load_average_at_end": environment.load_average(),
    }
    results["wall_s"] = time.perf_counter() - start
    report.write(results, config["out"])
    print(report.markdown(results), flush=True)
    print(f"wrote {results['files']['json']}, {results['files']['markdown']} and {len(results['files']['plots'])} "
          f"plots in {results['wall_s']:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
