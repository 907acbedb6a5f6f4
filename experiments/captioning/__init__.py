"""Captioning multi-digit MNIST canvases: canvases and captions (`data`), the CNN + caption decoder training script
(`train`); the digits come from `experiments.mnist`.

Run it with `python -m experiments.captioning` (`--help` lists every flag and preset)."""
