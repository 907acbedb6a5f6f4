"""`python -m benchmarks.run --preset parallel-scan` (issue 8; it replaced `benchmarks/parallel_scan.py`): MinGRU on
the parallel and the sequential scan against GRU and LSTM, per T, with the crossover and the speed-ups at the longest
T. Runs end to end on tiny lengths; the summaries are checked on synthetic timings. Nothing here is timed or
compared."""

import json
import os

import pytest
from helpers import CLASSIC_PATH

from benchmarks import report, run

TINY = ["--rounds", "1", "--repeats", "1", "--gemm-size", "32"]
PRESET_VARIANTS = [("mingru", "rnnjax[parallel]"), ("mingru", "rnnjax[sequential]"), ("gru", "rnnjax"),
                   ("lstm", "rnnjax")]


def test_parallel_scan_preset_resolves_lengths_variants_and_scan_spaces():
    parser = run.make_parser()
    scan = run.resolve(parser, parser.parse_args(["--preset", "parallel-scan"]))
    assert [shape[1] for shape in scan["shapes"]] == [256, 512, 1024, 2048, 4096]
    assert {shape[0] for shape in scan["shapes"]} == {16} and {shape[2:] for shape in scan["shapes"]} == {(128, 128)}
    groups, _ = run.plan(scan)
    assert [(e.cell, e.name) for e in groups[0].entries] == PRESET_VARIANTS
    assert {group.step for group in groups} == {"train"}
    linear = run.resolve(parser, parser.parse_args(["--preset", "parallel-scan", "--scan-space", "log", "linear"]))
    entries = run.plan(linear)[0][0].entries
    assert [(e.cell, e.name, e.scan_mode, e.scan_space) for e in entries] == [
        ("mingru", "rnnjax[parallel]", "parallel", "log"), ("mingru", "rnnjax[parallel,linear]", "parallel", "linear"),
        ("mingru", "rnnjax[sequential]", "sequential", "log"), ("gru", "rnnjax", "sequential", None),
        ("lstm", "rnnjax", "sequential", None)]
    quick = run.resolve(parser, parser.parse_args(["--preset", "parallel-scan", "--quick"]))
    assert quick["shapes"] == run.QUICK_PRESET_SHAPES["parallel-scan"] and quick["mode"] == "train"


def test_parallel_scan_preset_trains_every_variant_with_its_path(tmp_path, capsys):
    # The preset's own step (train) at one tiny length, the linear-space parallel scan included.
    results = run.main(["--preset", "parallel-scan", "--shapes", "2,8,3,3", "--scan-space", "log", "linear",
                        "--out", str(tmp_path), *TINY])
    rows = results["rows"]
    assert [(r["cell"], r["variant"], r["time"], r["mode"]) for r in rows] == [
        (cell, variant, 8, "train") for cell, variant in
        [PRESET_VARIANTS[0], ("mingru", "rnnjax[parallel,linear]"), *PRESET_VARIANTS[1:]]]
    assert [(r["info"]["path"], r["info"]["scan_space"]) for r in rows] == [
        ("parallel", "log"), ("parallel", "linear"), ("sequential", "log"), (CLASSIC_PATH, None), (CLASSIC_PATH, None)]
    for row in rows:
        assert row["median_ms"] > 0 and row["min_ms"] > 0 and row["compile_s"] > 0
        assert row["tokens_per_s"] == pytest.approx(2 * 8 / (row["median_ms"] / 1e3))
    (summary,) = results["summary"]["scan"]
    others = {"mingru rnnjax[parallel,linear]", "mingru rnnjax[sequential]", "gru rnnjax", "lstm rnnjax"}
    assert summary["crossover_against"] == "mingru rnnjax[sequential]" and summary["crossover"] in (8, "none")
    assert set(summary["crossover_vs"]) == others and set(summary["speedup_at_longest"]) == others
    assert summary["longest"] == 8 and summary["mode"] == "train"
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["scan"] == [summary]
    out = capsys.readouterr().out
    assert "| mingru rnnjax[parallel] (parallel, log space, autodiff bwd) |" in out
    assert "| mingru rnnjax[parallel,linear] (parallel, linear space, autodiff bwd) |" in out
    assert "Crossover vs mingru rnnjax[sequential]" in out


def test_parallel_scan_preset_on_tiny_lengths(tmp_path):
    # Inference steps keep the compiles of two lengths cheap.
    results = run.main(["--preset", "parallel-scan", "--shapes", "2,2,3,3", "2,4,3,3", "--mode", "infer",
                        "--unroll", "2", "--out", str(tmp_path), *TINY])
    rows = results["rows"]
    assert {r["info"]["unroll"] for r in rows} == {2}
    assert [(r["cell"], r["variant"], r["time"]) for r in rows] == [
        (cell, variant, t) for t in (2, 4) for cell, variant in PRESET_VARIANTS]
    assert {r["variant"]: r["info"]["path"] for r in rows if r["cell"] == "mingru"} == {
        "rnnjax[parallel]": "parallel", "rnnjax[sequential]": "sequential"}
    assert {r["mode"] for r in rows} == {"infer"}
    (summary,) = results["summary"]["scan"]
    assert summary["crossover"] in (2, 4, "none") and summary["crossover_against"] == "mingru rnnjax[sequential]"
    assert set(summary["speedup_at_longest"]) == {"mingru rnnjax[sequential]", "gru rnnjax", "lstm rnnjax"}
    assert summary["longest"] == 4
    parallel_row = rows[0]
    assert set(parallel_row["speedup_vs"]) == {"mingru rnnjax[sequential]", "gru rnnjax", "lstm rnnjax"}
    assert {c["variant"] for c in results["summary"]["compile_vs_time"]} == {"rnnjax[parallel]",
                                                                            "rnnjax[sequential]", "rnnjax"}
    table = (tmp_path / "results.md").read_text()
    assert "Crossover vs mingru rnnjax[sequential]" in table and "| mingru rnnjax[parallel] (parallel" in table
    assert os.path.exists(tmp_path / "scan_mingru_infer_B2_D3_H3.png")


# -- the summaries on synthetic timings ---------------------------------------------------------------------------
def test_crossover_on_synthetic_timings():
    lengths = (256, 512, 1024, 2048, 4096)
    slow = dict.fromkeys(lengths, 10.0)
    assert report.crossover(dict(zip(lengths, (20.0, 12.0, 9.0, 8.0, 5.0))), slow) == 1024
    assert report.crossover(dict(zip(lengths, (20.0, 12.0, 11.0, 10.5, 11.0))), slow) == "none"
    assert report.crossover(dict(zip(lengths, (5.0, 12.0, 9.0, 8.0, 5.0))), slow) == 1024  # must stay faster
    assert report.crossover(dict(zip(lengths, (1.0,) * 5)), slow) == 256
    assert report.crossover({1: 5.0, 2: 3.0, 4: 3.0}, {1: 4.0, 2: 4.0, 4: 8.0}) == 2
    assert report.crossover({1: 4.0, 2: 4.0, 4: 8.0}, {1: 5.0, 2: 3.0, 4: 3.0}) == "none"


def synthetic_row(cell, variant, time_steps, median_ms, group, path="sequential", compile_s=1.0):
    return {"cell": cell, "variant": variant, "time": time_steps, "median_ms": median_ms, "group": group,
            "mode": "train", "batch": 2, "input_size": 3, "hidden_size": 3, "framework": "rnnjax",
            "info": {"path": path}, "compile_s": compile_s}


def test_scan_and_compile_summaries_on_synthetic_rows():
    rows = []
    for group, (t, parallel, sequential, gru) in enumerate([(4, 9.0, 3.0, 2.0), (8, 5.0, 6.0, 4.0),
                                                           (16, 4.0, 12.0, 8.0)]):
        rows += [synthetic_row("mingru", "rnnjax[parallel]", t, parallel, group, "parallel", compile_s=t / 4),
                 synthetic_row("mingru", "rnnjax[sequential]", t, sequential, group),
                 synthetic_row("gru", "rnnjax", t, gru, group, "fused")]
    rows.append(synthetic_row("lstm", "rnnjax", 16, 1.0, group=99, path="fused"))  # timed elsewhere: not compared
    (summary,) = report.scan_summaries(rows)
    assert summary["crossover"] == 8 and summary["crossover_against"] == "mingru rnnjax[sequential]"
    assert summary["crossover_vs"] == {"mingru rnnjax[sequential]": 8, "gru rnnjax": 16}
    assert summary["speedup_at_longest"] == pytest.approx({"mingru rnnjax[sequential]": 3.0, "gru rnnjax": 2.0})
    compile_times = {c["variant"]: c for c in report.compile_summaries(rows) if c["cell"] == "mingru"}
    assert compile_times["rnnjax[parallel]"]["compile_s"] == [1.0, 2.0, 4.0]
    assert compile_times["rnnjax[parallel]"]["max_over_min"] == 4.0


def test_crossover_is_against_a_sequential_variant_of_the_same_cell_whatever_its_name():
    # "rnnjax[auto]" on CPU runs the sequential scan: with no "rnnjax[sequential]" it is the one compared against.
    rows = [synthetic_row("mingru", "rnnjax[parallel]", 4, 2.0, 0, "parallel"),
            synthetic_row("mingru", "rnnjax[auto]", 4, 3.0, 0, "sequential")]
    (summary,) = report.scan_summaries(rows)
    assert summary["crossover_against"] == "mingru rnnjax[auto]" and summary["crossover"] == 4
