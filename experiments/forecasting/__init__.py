"""Time-series forecasting: series (`series`), windows, scaling, calendar features, baselines, metrics and
the training script (`train`).

Run it with `python -m experiments.forecasting` (`--help` lists every flag and preset)."""
