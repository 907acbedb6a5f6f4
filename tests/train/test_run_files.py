"""The run directory: metrics lines, truncation on resume, one plot per metric, and no plots (a warning, not an
error) where matplotlib is not installed."""

import json
import sys

import pytest

from rnnjax.train import run_files
from rnnjax.train.run_files import RunFileWriteError, RunFiles, write_json_atomic


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


def test_atomic_write_failure_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    run = RunFiles(tmp_path)
    run.write_summary({"steps": 1})
    before = (tmp_path / "summary.json").read_text()

    def fail(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_files.os, "fsync", fail)
    with pytest.raises(RunFileWriteError, match=r"could not write '.*summary\.json': No space left on device"):
        run.write_summary({"steps": 2})
    assert (tmp_path / "summary.json").read_text() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["summary.json"]  # no temporary file left


def test_truncate_metrics_is_atomic(tmp_path, monkeypatch):
    run = RunFiles(tmp_path)
    for record in records():
        run.append_metrics(record)
    before = run.metrics.read_text()
    monkeypatch.setattr(run_files.os, "replace", lambda *args: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(RunFileWriteError, match=r"metrics\.jsonl"):
        run.truncate_metrics(2)
    assert run.metrics.read_text() == before


def test_atomic_write_into_a_path_that_is_a_file(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a directory")
    with pytest.raises(RunFileWriteError, match=r"could not write '.*blocker/config\.json'"):
        write_json_atomic(tmp_path / "blocker" / "config.json", {"a": 1})
    (tmp_path / "result.json").mkdir()
    with pytest.raises(RunFileWriteError, match=r"result\.json'.*directory"):
        write_json_atomic(tmp_path / "result.json", {"a": 1})


def test_atomic_write_content_and_permissions(tmp_path):
    path = write_json_atomic(tmp_path / "result.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert path.stat().st_mode & 0o777 == 0o666 & ~run_files._UMASK


def test_the_errors_users_catch_are_exported_from_rnnjax_train():
    import rnnjax.train
    from rnnjax.train import checkpoint

    assert rnnjax.train.RunFileWriteError is RunFileWriteError and issubclass(RunFileWriteError, OSError)
    for name in ("CheckpointError", "CorruptCheckpointError", "CheckpointWriteError"):
        assert getattr(rnnjax.train, name) is getattr(checkpoint, name) and name in rnnjax.train.__all__
    assert issubclass(rnnjax.train.CorruptCheckpointError, rnnjax.train.CheckpointError)


def test_one_plot_per_metric_with_every_split_overlaid(tmp_path, monkeypatch):
    (tmp_path / "lm").mkdir()
    run = RunFiles(tmp_path / "lm")
    for step in (1, 2, 3, 4):
        run.append_metrics({"split": "train", "step": step, "epoch": 0, "loss": 2.0 / step, "perplexity": 9.0})
    run.append_metrics({"split": "valid", "step": 4, "epoch": 0, "valid_loss": 0.9, "valid_perplexity": 2.5,
                        "test_accuracy": 0.7})
    assert run_files.curves([json.loads(line) for line in run.metrics.read_text().splitlines()]) == {
        "accuracy": {"test": [(4, 0.7)]},
        "loss": {"train": [(1, 2.0), (2, 1.0), (3, 2.0 / 3), (4, 0.5)], "valid": [(4, 0.9)]},
    }
    pyplot = pytest.importorskip("matplotlib.pyplot")
    figures = []
    real_subplots, real_close = pyplot.subplots, pyplot.close
    monkeypatch.setattr(pyplot, "subplots", lambda *a, **k: figures.append(real_subplots(*a, **k)) or figures[-1])
    monkeypatch.setattr(pyplot, "close", lambda figure: None)  # keep them to look at
    written = run.plot()
    monkeypatch.undo()
    assert sorted(path.name for path in written) == ["accuracy.png", "loss.png"]  # no valid_loss.png twin
    axes = {figure.axes[0].get_ylabel(): figure.axes[0] for figure, _ in figures}
    loss = axes["loss"]
    assert loss.get_title() == "loss: train and valid (lm)" and loss.get_xlabel() == "training step"
    assert [line.get_label() for line in loss.get_lines()] == ["train", "valid"]
    assert all(line.get_marker() == "o" for line in loss.get_lines())  # few points: each one marked
    assert [line.get_label() for line in axes["accuracy"].get_lines()] == ["test"]
    for figure, _ in figures:
        real_close(figure)


def test_a_scaled_training_loss_keeps_its_own_plot_and_evaluations_join_the_per_token_curve():
    train = [{"split": "train", "step": s, "loss": 20.0 / s, "token_loss": 1.0 / s} for s in (1, 2)]
    valid = [{"split": "valid", "step": 2, "valid_loss": 0.7}]
    assert run_files.curves(train + valid) == {"loss": {"train": [(1, 20.0), (2, 10.0)]},
                                                "token_loss": {"train": [(1, 1.0), (2, 0.5)], "valid": [(2, 0.7)]}}
    unscaled = [{"split": "train", "step": s, "loss": 1.0 / s, "token_loss": 1.0 / s} for s in (1, 2)]
    assert list(run_files.curves(unscaled + valid)) == ["token_loss"]  # loss repeated it: one plot, not two
