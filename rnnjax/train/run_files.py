"""The run directory a training run writes and reads back: `config.json`, `metrics.jsonl`, `summary.json` and
`plots/*.png`. Only process 0 writes (multi-host runs would otherwise race on the same files).

    run_dir/config.json        the run's full config (the caller's plus the trainer's)
    run_dir/metrics.jsonl      one JSON line per log interval ("split": "train") and per evaluation ("valid")
    run_dir/summary.json       final metrics, steps, skipped steps, wall time
    run_dir/plots/*.png        one plot per metric, train and valid overlaid, drawn at the end (needs matplotlib:
                               `pip install rnnjax[experiments]`; without it the plots are skipped with a warning)

Every whole-file write goes through `write_text_atomic` / `write_json_atomic`: a temporary file in the same
directory, flushed and fsynced, then renamed over the target (`os.replace`, atomic on POSIX) and the directory
fsynced, so a kill or a full disk leaves either the previous file or the new one, never half of one. The
experiments write their result files through the same two functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
import warnings

import jax

NOT_PLOTTED = {"step", "epoch", "skipped", "steps_per_second", "perplexity", "bits_per_token"}
_UMASK = os.umask(0o022)  # read once (reading it means setting it); mkstemp's files are 0600, ours honour it
os.umask(_UMASK)


class RunFileWriteError(OSError):
    """A run-directory or result file could not be written; the message names the file, and the file's previous
    content (if any) is intact."""


class PreviousRunError(FileExistsError):
    """`fit` was pointed at a run directory that holds a previous run, and was asked neither to resume it
    (`resume=True`, which needs a checkpoint to resume from) nor to replace it (`overwrite=True`). Nothing in the
    directory has been changed."""


# What fit leaves in a run directory; any of them marks a previous run (vocabularies and other files an
# experiment writes before training do not).
RUN_MARKERS = ("config.json", "metrics.jsonl", "summary.json", "checkpoints")


def previous_run(path: str | os.PathLike) -> list[str]:
    """The names of `RUN_MARKERS` present in `path` (`checkpoints` only when it holds anything): [] for a new or
    empty directory."""
    path = pathlib.Path(path)
    found = []
    for name in RUN_MARKERS:
        marker = path / name
        if name == "checkpoints" and marker.is_dir():
            if any(marker.iterdir()):
                found.append("checkpoints/")
        elif marker.exists():
            found.append(name)
    return found


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes `text` to `path` atomically (module docstring); returns the path. The parent directory must exist.
    Raises `RunFileWriteError` naming `path` when anything fails (a full disk, a read-only directory, a directory
    where the file should be); the temporary file is removed and the previous `path` is left as it was."""
    path = pathlib.Path(path)
    temporary = None
    try:
        if path.is_dir():
            raise IsADirectoryError("it is a directory")
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
            os.chmod(file.fileno(), 0o666 & ~_UMASK)
        os.replace(temporary, path)
        temporary = None
        _fsync_directory(path.parent)
    except OSError as error:
        reason = error.strerror or str(error)
        raise RunFileWriteError(f"could not write {str(path)!r}: {reason}; its previous content, if any, is "
                                f"unchanged") from error
    finally:
        if temporary is not None:
            pathlib.Path(temporary).unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike, value, *, indent: int | None = 2, default=None) -> pathlib.Path:
    """`write_text_atomic(path, json.dumps(value, indent=indent, default=default))`."""
    return write_text_atomic(path, json.dumps(value, indent=indent, default=default))


def _fsync_directory(directory: pathlib.Path) -> None:
    """Makes the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The files of one run directory (`path`); every metric record also goes to each of `writers`
    (`rnnjax.train.writers`)."""

    path: pathlib.Path
    writers: tuple = ()

    @property
    def metrics(self) -> pathlib.Path:
        return self.path / "metrics.jsonl"

    def write_config(self, config: dict) -> None:
        if is_writer():
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path / "config.json", config, default=str)

    def append_metrics(self, record: dict) -> None:
        if is_writer():
            with self.metrics.open("a") as file:
                file.write(json.dumps(record) + "\n")
            for writer in self.writers:
                writer.write(record)

    def close(self) -> None:
        if is_writer():
            for writer in self.writers:
                writer.close()

    def truncate_metrics(self, last_step: int) -> None:
        """On resume, forget lines logged after the checkpoint: they will be logged again."""
        if not is_writer() or not self.metrics.exists():
            return
        kept = [line for line in self.metrics.read_text().splitlines()
                if line and json.loads(line).get("step", 0) <= last_step]
        write_text_atomic(self.metrics, "".join(line + "\n" for line in kept))

    def last_records(self) -> tuple[dict, dict]:
        """The last "train" record and the metrics of the last "valid" record in `metrics.jsonl` ({} for none)."""
        train, valid = {}, {}
        if self.metrics.exists():
            for line in self.metrics.read_text().splitlines():
                record = json.loads(line) if line else {}
                if record.get("split") == "train":
                    train = record
                elif record.get("split") == "valid":
                    valid = {k: v for k, v in record.items() if k not in ("split", "step", "epoch")}
        return train, valid

    def remove_previous_run(self) -> None:
        """`fit(..., overwrite=True)`: deletes what a previous run wrote here besides its checkpoints (which
        `fit` deletes through the checkpoint directory): config, metrics (and their CSV and TensorBoard copies),
        summary and plots. Other files (an experiment's vocabulary, results) are left alone."""
        if not is_writer():
            return
        for name in ("config.json", "metrics.jsonl", "summary.json", "metrics.csv", "metrics.valid.csv"):
            (self.path / name).unlink(missing_ok=True)
        for pattern in ("tensorboard/events.out.tfevents.*", "plots/*.png"):
            for old in self.path.glob(pattern):
                old.unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> None:
        if is_writer():
            write_json_atomic(self.path / "summary.json", summary)

    def plot(self) -> list[pathlib.Path]:
        """One PNG per metric in `plots/` (`curves`: train, valid and test overlaid, a title, axis labels, markers
        where a curve has few points); [] without matplotlib (warned)."""
        if not is_writer() or not self.metrics.exists():
            return []
        try:
            import matplotlib
        except ImportError:
            warnings.warn("plots skipped: matplotlib is not installed (pip install 'rnnjax[experiments]'); "
                          f"the metrics are in {self.metrics}", RuntimeWarning, stacklevel=2)
            return []
        matplotlib.use("Agg")  # files only, no display
        from matplotlib import pyplot
        from matplotlib.ticker import MaxNLocator

        records = [json.loads(line) for line in self.metrics.read_text().splitlines() if line]
        written = []
        (self.path / "plots").mkdir(exist_ok=True)
        for name, lines in curves(records).items():
            figure, axes = pyplot.subplots(figsize=(6, 4))
            for split, points in lines.items():
                axes.plot(*zip(*points), marker="o" if len(points) <= _FEW_POINTS else None, markersize=4,
                          label=split)
            axes.set_title(f"{name}: {' and '.join(lines)}" + (f" ({self.path.name})" if self.path.name else ""))
            axes.set_xlabel("training step")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
            axes.set_ylabel(name)
            if name == "grad_norm":
                axes.set_yscale("log")  # vanishing and exploding gradients span orders of magnitude
            axes.legend()
            axes.grid(alpha=0.3)
            path = self.path / "plots" / f"{name}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            pyplot.close(figure)
            written.append(path)
        return written


_FEW_POINTS = 30  # curves with at most this many points get a marker per point
_SPLITS = ("train", "valid", "test", "dev")


def curves(records: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """`{metric: {split: [(step, value), ...]}}` of the numeric metrics in `records` (not `NOT_PLOTTED`). A
    metric's split is its record's `"split"`, unless its name starts with a split (`valid_loss` in a valid record,
    `test_accuracy` in any): then the prefix is the split and the rest the metric, so `loss` (train) and
    `valid_loss` share one plot, and a test metric is labelled test. Where training logs a `token_loss` (its
    `loss` scaled for the optimizer, e.g. summed over steps), an evaluation's `loss` is a per-token loss and joins
    that curve. A metric whose train curve repeats another's (`token_loss` equal to an unscaled `loss`) is one
    plot: the one with more splits."""
    found: dict[str, dict[str, list]] = {}
    per_token = any(record.get("split", "train") == "train" and "token_loss" in record for record in records)
    for record in records:
        for key, value in record.items():
            if key in NOT_PLOTTED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            split, name = record.get("split", "train"), key
            prefix, _, rest = key.partition("_")
            if prefix in _SPLITS and rest:
                if rest in NOT_PLOTTED:
                    continue
                split, name = prefix, rest
            if per_token and name == "loss" and split != "train":
                name = "token_loss"
            found.setdefault(name, {}).setdefault(split, []).append((record["step"], value))
    for name in sorted(found):
        for other in sorted(found):
            if (other != name and name in found and other in found and "train" in found[name]
                    and found[name]["train"] == found[other].get("train")
                    and (len(found[other]), other) > (len(found[name]), name)):
                del found[name]
    return {name: dict(sorted(lines.items(), key=lambda item: _SPLITS.index(item[0])
                              if item[0] in _SPLITS else len(_SPLITS)))
            for name, lines in sorted(found.items())}


def is_writer() -> bool:
    """Only process 0 writes the run directory."""
    return jax.process_index() == 0
