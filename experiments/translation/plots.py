"""Attention heat-maps: one panel per example translation, source tokens along x, output tokens along y, cell
`(t, s)` the weight output step `t` gave source position `s` (each row sums to 1 over the source)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np


def plot_attention(examples: Sequence[dict], path: str | pathlib.Path, title: str) -> None:
    """Writes a PNG with one heat-map per example; each example is a dict with `source` (tokens, `<eos>`
    included), `output` (tokens, `<eos>` included when emitted) and `attention` (`[len(output), len(source)]`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    widths = [max(3.0, 0.38 * len(e["source"]) + 1.5) for e in examples]
    height = max(3.0, 0.38 * max(len(e["output"]) for e in examples) + 2.0)
    figure, axes = pyplot.subplots(1, len(examples), figsize=(sum(widths), height), squeeze=False,
                                   gridspec_kw={"width_ratios": widths, "wspace": 0.45})
    for number, (axis, example) in enumerate(zip(axes[0], examples)):
        weights = np.asarray(example["attention"], np.float64)
        if weights.shape != (len(example["output"]), len(example["source"])):
            raise ValueError(f"attention has shape {weights.shape}, expected (output tokens, source tokens) = "
                             f"({len(example['output'])}, {len(example['source'])})")
        image = axis.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        axis.set_xticks(range(len(example["source"])), example["source"], rotation=70, ha="right", fontsize=8)
        axis.set_yticks(range(len(example["output"])), example["output"], fontsize=8)
        axis.set_xlabel("source")
        if number == 0:
            axis.set_ylabel("output")
    figure.colorbar(image, ax=axes[0].tolist(), fraction=0.02, pad=0.01, label="attention weight")
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    pyplot.close(figure)
