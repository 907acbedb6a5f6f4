"""Spoken digits (FSDD): the dataset (`data`), log-mel features and synthetic digit strings (`features`), and the
training script (`train`): many-to-one classification and CTC transcription.

Run it with `python -m experiments.speech` (`--help` lists every flag and preset)."""
