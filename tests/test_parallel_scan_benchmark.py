"""The parallel-scan benchmark runs end to end on tiny lengths (it must not rot); nothing here is timed or compared."""

import json

from benchmarks import parallel_scan


def test_parallel_scan_benchmark_reports_rows_paths_and_summary(tmp_path, capsys):
    path = tmp_path / "results.json"
    results = parallel_scan.main(["--lengths", "8", "--batch", "2", "--hidden", "3", "--repeats", "1",
                                  "--json", str(path)])
    variants = list(parallel_scan.DEFAULT_VARIANTS)
    assert [(row["variant"], row["time"]) for row in results["rows"]] == [
        (name, 8) for name in variants
    ]
    paths = {row["variant"]: row["path"] for row in results["rows"]}
    assert paths == {"mingru_parallel": "parallel", "mingru_sequential": "sequential", "gru": "sequential",
                     "lstm": "sequential"}
    assert all(row["median_ms"] > 0 and row["compile_s"] > 0 for row in results["rows"])
    assert set(results["summary"]) >= {"crossover_vs_gru", "speedup_at_8_vs_mingru_sequential"}
    assert json.loads(path.read_text())["table"] == results["table"]
    assert "| mingru_parallel (parallel) |" in capsys.readouterr().out


def test_crossover():
    rows = [{"variant": v, "time": t, "median_ms": ms} for v, t, ms in [
        ("p", 1, 5.0), ("s", 1, 4.0), ("p", 2, 3.0), ("s", 2, 4.0), ("p", 4, 3.0), ("s", 4, 8.0)]]
    assert parallel_scan.crossover(rows, "p", "s") == 2
    assert parallel_scan.crossover(rows, "s", "p") is None
