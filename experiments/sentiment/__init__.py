"""Sentiment classification: datasets (`data`), sentence encoding (`encoding`), pretrained vectors
(`word_vectors`) and the training script (`train`).

Run it with `python -m experiments.sentiment` (`--help` lists every flag and preset)."""
