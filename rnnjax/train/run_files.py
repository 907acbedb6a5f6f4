"""The run directory a training run writes and reads back: `config.json`, `metrics.jsonl`, `summary.json` and
`plots/*.png`. Only process 0 writes (multi-host runs would otherwise race on the same files).

    run_dir/config.json        the run's full config (the caller's plus the trainer's)
    run_dir/metrics.jsonl      one JSON line per log interval ("split": "train") and per evaluation ("valid")
    run_dir/summary.json       final metrics, steps, skipped steps, wall time
    run_dir/plots/*.png        one plot per metric, train and valid overlaid, drawn at the end (needs matplotlib:
                               `pip install rnnjax[experiments]`; without it the plots are skipped with a warning)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import warnings

import jax

NOT_PLOTTED = {"step", "epoch", "skipped", "steps_per_second", "perplexity", "bits_per_token"}


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
            (self.path / "config.json").write_text(json.dumps(config, indent=2, default=str))

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
        self.metrics.write_text("".join(line + "\n" for line in kept))

    def clear_metrics(self) -> None:
        if is_writer():
            self.metrics.unlink(missing_ok=True)

    def write_summary(self, summary: dict) -> None:
        if is_writer():
            (self.path / "summary.json").write_text(json.dumps(summary, indent=2))

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
