"""Language modeling, char and word level: the corpora (`corpora`) and the training script (`train`).

Run it with `python -m experiments.language_modeling` (`--help` lists every flag and preset)."""
