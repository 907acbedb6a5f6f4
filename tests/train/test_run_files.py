"""The run directory: metrics lines, truncation on resume, one plot per metric, and no plots (a warning, not an
error) where matplotlib is not installed."""

import json
import sys

import pytest

from rnnjax.train.run_files import RunFiles


def records():
    return [{"split": "train", "step": s, "epoch": 0, "loss": 1.0 / s, "grad_norm": 2.0} for s in (1, 2, 3)] + [
        {"split": "valid", "step": 3, "epoch": 0, "loss": 0.5}]


def test_metrics_append_and_truncate(tmp_path):
    run = RunFiles(tmp_path)
    for record in records():
        run.append_metrics(record)
    run.truncate_metrics(2)
    assert [json.loads(line)["step"] for line in run.metrics.read_text().splitlines()] == [1, 2]


def test_one_plot_per_metric(tmp_path):
    run = RunFiles(tmp_path)
    for record in records():
        run.append_metrics(record)
    written = run.plot()
    assert sorted(path.name for path in written) == ["grad_norm.png", "loss.png"]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in written)


def test_without_matplotlib_plots_are_skipped_with_a_warning(tmp_path, monkeypatch):
    run = RunFiles(tmp_path)
    for record in records():
        run.append_metrics(record)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.warns(RuntimeWarning, match=r"plots skipped: matplotlib is not installed .*rnnjax\[experiments\]"):
        assert run.plot() == []
    assert not (tmp_path / "plots").exists()
