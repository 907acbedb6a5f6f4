"""Metric writers: where `fit`'s metric records go besides the run directory's `metrics.jsonl` (which every run
keeps, since resume and the plots read it). A writer is any object with

    write(record: dict) -> None     # {"split": "train" | "valid", "step": int, "epoch": int, name: float, ...}
    close() -> None

`TensorBoardWriter` writes TensorBoard event files (tensorboardX, the `experiments` extra): one scalar per metric,
tagged `split/name` (`train/loss`, `valid/accuracy`), at the record's step; `CSVWriter` one CSV row per record.
"""

from __future__ import annotations

import csv
import os
import pathlib

_NOT_SCALARS = ("split", "step", "epoch")


class TensorBoardWriter:
    """TensorBoard event files in `log_dir` (`tensorboard --logdir log_dir` shows them)."""

    def __init__(self, log_dir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise ImportError("TensorBoardWriter needs tensorboardX: pip install 'rnnjax[experiments]' "
                              "(or pip install tensorboardX)") from error
        self.log_dir = pathlib.Path(log_dir)
        self._writer = SummaryWriter(logdir=str(self.log_dir))

    def write(self, record: dict) -> None:
        split = record.get("split", "train")
        for name, value in record.items():
            if name not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{split}/{name}", value, global_step=record["step"])
        self._writer.flush()  # one flush per log interval: the events are on disk for a live TensorBoard

    def close(self) -> None:
        self._writer.close()


class CSVWriter:
    """One row per record in `path`, the columns fixed by the first record of each split (`split` first), a
    record's missing columns empty. Records of a split with other columns go to `path` with `.<split>` added."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._columns: dict[str, list[str]] = {}

    def _target(self, split: str) -> pathlib.Path:
        return self.path if split == "train" else self.path.with_suffix(f".{split}{self.path.suffix}")

    def write(self, record: dict) -> None:
        split = record.get("split", "train")
        target = self._target(split)
        columns = self._columns.get(split)
        new = columns is None
        if new:
            columns = self._columns[split] = list(record)
        with target.open("w" if new else "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(record)

    def close(self) -> None:
        pass
