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

    def clear_metrics(self) -> None:
        if is_writer():
            self.metrics.unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> None:
        if is_writer():
            write_json_atomic(self.path / "summary.json", summary)

    def plot(self) -> list[pathlib.Path]:
        """One PNG per logged metric (train and valid overlaid) in `plots/`; [] without matplotlib (warned)."""
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

        records = [json.loads(line) for line in self.metrics.read_text().splitlines() if line]
        numeric = {k for r in records for k, v in r.items() if isinstance(v, (int, float))}
        written = []
        (self.path / "plots").mkdir(exist_ok=True)
        for name in sorted(numeric - NOT_PLOTTED):
            figure, axes = pyplot.subplots(figsize=(6, 4))
            for split in ("train", "valid"):
                points = [(r["step"], r[name]) for r in records if r.get("split") == split and name in r]
                if points:
                    axes.plot(*zip(*points), marker="." if split == "valid" else None, label=split)
            axes.set_xlabel("step")
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


def is_writer() -> bool:
    """Only process 0 writes the run directory."""
    return jax.process_index() == 0
