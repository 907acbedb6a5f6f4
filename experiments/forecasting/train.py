"""Time-series forecasting: recurrent direct, sequence-to-sequence and segment (SegRNN) forecasters against baselines
on one set of windows.

    python -m experiments.forecasting                     # embedded Mauna Loa CO2 (statsmodels), ~2-3 min on 2 CPUs
    python -m experiments.forecasting --preset etth1-dlinear --data-dir ../shared/data/ett --features S --horizon 96
    python -m experiments.forecasting --preset etth1-dlinear --data-dir ../shared/data/ett --features M --horizon 720
    python -m experiments.forecasting --dataset co2 --model seq2seq --scheduled-sampling-rate 0.25 --covariates
    python -m experiments.forecasting --preset etth1-segrnn --data-dir ../shared/data/ett --horizon 336  # SegRNN, L=96

Protocol (Informer/Autoformer/DLinear): the dataset's fixed split (ETT: 12/4/4 months; others 70/10/20), z-scores
with training-split statistics only, settings "S" (target only) and "M" (all columns, target last), look-back L,
horizon H, every window of each split (`experiments.forecasting.windows`: inputs strictly before targets, valid/test
windows look back into the previous split, never forward). MSE and MAE are reported on the normalised scale, overall
and per horizon step, for the model and for the baselines computed here on the same test windows: repeat-last,
seasonal-naive, and least-squares linear maps of the look-back (DLinear's function class, fit in closed form on the
training windows with a ridge penalty picked on the validation windows; "nlinear" subtracts the last value first).
The model is trained through `rnnjax.train.fit` (Adam behind `clip_by_global_norm`), validated after every epoch, and
tested with the parameters of its best validation epoch.

Every run prints its full config, takes a seed, is bit-for-bit repeatable on CPU and writes a run directory:
config.json, metrics.jsonl, summary.json, checkpoints/ (from the engine), results.json (test metrics of every
method, per-step errors, published reference rows where they exist, wall times), best/ (the engine's checkpoint of
the best validation epoch, the params tested; a resumed run keeps the uninterrupted run's), plots/forecasts.png
(test windows, model and baselines against the truth) and plots/error_by_step.png.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import numpy as np

import rnnjax
from experiments import cli
from experiments.cli import parse_config_flags
from experiments.forecasting import baselines
from experiments.forecasting.calendar_features import calendar_features
from experiments.forecasting.metrics import accumulate_errors, summarize_errors
from rnnjax.models.forecasters import DirectForecaster, Seq2SeqForecaster
from rnnjax.models.segrnn import SegmentForecaster
from experiments.forecasting.scaling import fit_scaler, scale
from experiments.forecasting.series import FILLS, SERIES, load_series
from rnnjax import _checks
from rnnjax.train.run_files import write_json_atomic
from experiments.forecasting.windows import SPLIT_NAMES, batch_indices, gather_windows, split_ranges, window_starts


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "co2"  # a name in forecasting.series.SERIES: ETTh1/ETTh2/ETTm1/ETTm2, exchange_rate, weather, ...
    data_dir: str = ""  # directory holding the dataset's CSV; empty: download-and-verify (statsmodels: its package)
    fill: str = ""  # missing values: "" (dataset default; an error for most) | "interpolate" | "ffill" | "zero"
    features: str = "S"  # "S": the target column only | "M": all columns (target last)
    target: str = ""  # target column; empty: the dataset's (OT for ETT)
    lookback: int = 104  # L: look-back steps (CO2 is weekly: two years)
    horizon: int = 52  # H: forecast steps (one year)
    model: str = "direct"  # "direct" (encoder -> dense head) | "seq2seq" (encoder -> autoregressive decoder)
    # | "segrnn" (segment encoder -> parallel multi-step decoder, rnnjax.models.SegmentForecaster)
    mode: str = "gru"  # "lstm" | "gru" | "rnn_tanh" | "rnn_relu"
    hidden_size: int = 64  # units per recurrent layer
    num_layers: int = 1  # stacked recurrent layers (encoder and decoder)
    dropout_rate: float = 0.0  # between recurrent layers (segrnn: on the decoder outputs before the head)
    patch_length: int = 4  # look-back steps per encoder step (SegRNN-style segments); must divide lookback
    # (segrnn: the segment length W, which must divide the horizon too)
    revin: bool = True  # reversible instance normalisation (Kim et al. 2022); segrnn without it: last-value
    channel_embedding: bool = True  # segrnn only: decoder inputs [position ; channel embedding] (paper's channel_id)
    channel_independent: bool = True  # one shared univariate model per series ("M" setting)
    linear_skip: bool = False  # direct model only: add a trained linear map of the look-back (residual over it)
    covariates: bool = False  # calendar features (Informer's timeF) as extra inputs
    scheduled_sampling_rate: float = 0.0  # seq2seq training: probability of feeding back its own prediction
    epochs: int = 10  # passes over the training windows
    batch_size: int = 32  # windows per step
    max_steps_per_epoch: int = 0  # cap on steps per epoch (0: every training window once)
    learning_rate: float = 1e-3  # Adam
    lr_decay_start_epoch: int = 0  # 0: constant rate; k: epochs 1..k at the full rate, then x lr_decay_factor each
    lr_decay_factor: float = 0.8  # per-epoch factor once decay starts (SegRNN's "type3": start 4, factor 0.8)
    max_grad_norm: float = 1.0  # clip_by_global_norm
    ridge_grid: str = "0,1,10,100,1000,10000"  # L2 penalties tried for the linear baselines, picked on validation
    eval_batch_size: int = 256  # windows per evaluation call
    plot_windows: int = 3  # test windows drawn in plots/forecasts.png
    log_every: int = 50  # steps between metric lines
    seed: int = 0  # PRNG seed: parameters, shuffling, dropout, scheduled sampling
    run_dir: str = "runs/forecasting"  # output directory
    resume: bool = False  # continue the run in run_dir from its newest checkpoint
    quiet: bool = False  # no progress bar


QUICK = dict(dataset="co2", lookback=16, horizon=4, patch_length=4, hidden_size=4, epochs=2, max_steps_per_epoch=3,
             batch_size=8, eval_batch_size=512, log_every=1, run_dir="runs/forecasting_quick")

# Published configurations: the look-back each comparison uses (DLinear: L = 336; Informer: L = 96 in its
# long-horizon protocol). Flags override preset values.
PRESETS = {
    "etth1-dlinear": dict(dataset="ETTh1", lookback=336, horizon=96, patch_length=24, hidden_size=64, epochs=6,
                          batch_size=32, learning_rate=2e-3, max_steps_per_epoch=0),
    "etth1-informer": dict(dataset="ETTh1", lookback=96, horizon=24, patch_length=24, hidden_size=64, epochs=6,
                           batch_size=32, learning_rate=2e-3),
}

# SegRNN (Lin et al. 2023) at L = 96, multivariate, from the lss-1138/SegRNN scripts (scripts/SegRNN/Lookback_96):
# GRU, d_model 512, dropout 0.5, channel embedding, last-value normalisation (no RevIN), batch 256, Adam with the
# "type3" schedule, no gradient clipping (a 1e3 clip norm never binds), 30 epochs with patience 10 (here: the best
# validation epoch of `epochs`). Segment length 24 (hourly) / 48 (15-minute), learning rate per dataset.
_SEGRNN = dict(features="M", lookback=96, horizon=96, model="segrnn", mode="gru", hidden_size=512, dropout_rate=0.5,
               revin=False, channel_embedding=True, epochs=30, batch_size=256, lr_decay_start_epoch=4,
               lr_decay_factor=0.8, max_grad_norm=1e3)
for _name, _segment, _rate in (("ETTh1", 24, 1e-3), ("ETTh2", 24, 2e-4), ("ETTm1", 48, 2e-4), ("ETTm2", 48, 1e-4)):
    PRESETS[f"{_name.lower()}-segrnn"] = dict(_SEGRNN, dataset=_name, patch_length=_segment, learning_rate=_rate)

# Published test MSE/MAE on ETTh1 (normalised data), (horizon -> (mse, mae)).
# Informer: Zhou et al., AAAI 2021, Table 1 (univariate) and Table 2 (multivariate), row "LSTMa".
# DLinear: Zeng et al., AAAI 2023 ("Are Transformers Effective for Time Series Forecasting?"), Table 2
# (multivariate, L = 336) and the univariate ETT table of the same paper, row "DLinear".
# Quoted from memory of the papers, not re-checked against the PDFs in this environment: verify before citing.
REFERENCES = {
    ("ETTh1", "S"): {
        "Informer LSTMa": {24: (0.114, 0.272), 48: (0.193, 0.358), 168: (0.236, 0.392), 336: (0.590, 0.698),
                           720: (0.683, 0.768)},
        "DLinear": {96: (0.056, 0.180), 192: (0.071, 0.204), 336: (0.098, 0.244), 720: (0.189, 0.359)},
    },
    ("ETTh1", "M"): {
        "Informer LSTMa": {24: (0.650, 0.624), 48: (0.702, 0.675), 168: (1.212, 0.867), 336: (1.424, 0.994),
                           720: (1.960, 1.322)},
        "DLinear": {96: (0.375, 0.399), 192: (0.405, 0.416), 336: (0.439, 0.443), 720: (0.472, 0.490)},
    },
}


# Published multivariate test MSE/MAE at look-back L = 96 (horizon -> (mse, mae)), from the table "Comparison
# Results for Lookback L = 96" of the lss-1138/SegRNN README (SegRNN re-run after its drop_last fix; iTransformer,
# PatchTST and DLinear quoted there from the iTransformer paper, Liu et al. ICLR 2024). At L = 96 these replace
# the L = 336 DLinear row above.
LOOKBACK_96_REFERENCES = {
    ("ETTh1", "M"): {
        "SegRNN": {96: (0.368, 0.395), 192: (0.408, 0.419), 336: (0.444, 0.440), 720: (0.446, 0.457)},
        "iTransformer": {96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458), 720: (0.503, 0.491)},
        "PatchTST": {96: (0.414, 0.419), 192: (0.460, 0.445), 336: (0.501, 0.466), 720: (0.500, 0.488)},
        "DLinear": {96: (0.386, 0.400), 192: (0.437, 0.432), 336: (0.481, 0.459), 720: (0.519, 0.516)},
    },
    ("ETTh2", "M"): {
        "SegRNN": {96: (0.278, 0.335), 192: (0.359, 0.389), 336: (0.421, 0.436), 720: (0.432, 0.455)},
        "iTransformer": {96: (0.297, 0.349), 192: (0.380, 0.400), 336: (0.428, 0.432), 720: (0.427, 0.445)},
        "PatchTST": {96: (0.302, 0.348), 192: (0.388, 0.400), 336: (0.426, 0.433), 720: (0.431, 0.446)},
        "DLinear": {96: (0.333, 0.387), 192: (0.477, 0.476), 336: (0.594, 0.541), 720: (0.831, 0.657)},
    },
    ("ETTm1", "M"): {
        "SegRNN": {96: (0.330, 0.369), 192: (0.369, 0.392), 336: (0.399, 0.412), 720: (0.454, 0.443)},
        "iTransformer": {96: (0.334, 0.368), 192: (0.377, 0.391), 336: (0.426, 0.420), 720: (0.491, 0.459)},
        "PatchTST": {96: (0.329, 0.367), 192: (0.367, 0.385), 336: (0.399, 0.410), 720: (0.454, 0.439)},
        "DLinear": {96: (0.345, 0.372), 192: (0.380, 0.389), 336: (0.413, 0.413), 720: (0.474, 0.453)},
    },
    ("ETTm2", "M"): {
        "SegRNN": {96: (0.173, 0.255), 192: (0.237, 0.298), 336: (0.296, 0.336), 720: (0.389, 0.407)},
        "iTransformer": {96: (0.180, 0.264), 192: (0.250, 0.309), 336: (0.311, 0.348), 720: (0.412, 0.407)},
        "PatchTST": {96: (0.175, 0.259), 192: (0.241, 0.302), 336: (0.305, 0.343), 720: (0.402, 0.400)},
        "DLinear": {96: (0.193, 0.292), 192: (0.284, 0.362), 336: (0.369, 0.427), 720: (0.554, 0.522)},
    },
}


def published_references(config) -> dict:
    """name -> (horizon -> (mse, mae)) for the config's dataset, setting and look-back."""
    rows = dict(REFERENCES.get((config.dataset, config.features), {}))
    if config.lookback == 96:
        rows.update(LOOKBACK_96_REFERENCES.get((config.dataset, config.features), {}))
    return rows


@dataclasses.dataclass(frozen=True)
class ForecastData:
    """Everything the run reads: scaled values `[T, C]`, calendar covariates `[T, K]` or None, window starts per
    split, and what was loaded."""

    values: np.ndarray
    covariates: np.ndarray | None
    starts: dict
    columns: tuple
    period: int
    record: dict


def build_data(config: Config) -> ForecastData:
    """Series -> the setting's columns -> train-only z-scores -> window starts per split (errors name the split)."""
    series = load_series(config.dataset, config.data_dir or None, config.fill or None)
    values, columns = series.select(config.features, config.target or None)
    ranges = split_ranges(series.spec.split, values.shape[0])
    stats = fit_scaler(values, ranges.train)  # training rows only: valid/test statistics never enter
    scaled = scale(stats, values).astype(np.float32)
    covariates = calendar_features(series.dates, series.spec.frequency) if config.covariates else None
    starts = {name: window_starts(getattr(ranges, name), config.lookback, config.horizon, name)
              for name in SPLIT_NAMES}
    record = dict(series.record, setting=config.features, columns=list(columns), splits=ranges._asdict(),
                  windows={name: len(s) for name, s in starts.items()},
                  scaler={"mean": stats.mean.tolist(), "std": stats.std.tolist()})
    return ForecastData(scaled, covariates, starts, columns, series.spec.period, record)


def make_batch(data: ForecastData, starts: np.ndarray, config: Config) -> dict:
    inputs, targets = gather_windows(data.values, starts, config.lookback, config.horizon)
    batch = {"inputs": inputs, "targets": targets}
    if data.covariates is not None:
        batch["covariates"], batch["future_covariates"] = gather_windows(data.covariates, starts, config.lookback,
                                                                         config.horizon)
    return batch


def make_model(config: Config, num_series: int, covariate_size: int):
    if config.model == "segrnn":
        if covariate_size or config.covariates:
            raise ValueError("covariates apply to model='direct' or 'seq2seq' only, not 'segrnn'")
        if (config.scheduled_sampling_rate or config.linear_skip or config.num_layers != 1
                or not config.channel_independent):
            raise ValueError("model='segrnn' is one channel-independent cell with a parallel decoder: "
                             "scheduled_sampling_rate, linear_skip, num_layers != 1 and channel_independent=False "
                             "do not apply")
        _checks.check_positive_int("patch_length", config.patch_length)
        for name in ("lookback", "horizon"):  # checked here to name the config's fields, not the model's
            if getattr(config, name) % config.patch_length:
                raise ValueError(f"patch_length must divide {name} for model='segrnn' (its segment length), got "
                                 f"patch_length {config.patch_length} and {name} {getattr(config, name)}")
        return SegmentForecaster(num_series=num_series, lookback=config.lookback, horizon=config.horizon,
                                 segment_length=config.patch_length, mode=config.mode, hidden_size=config.hidden_size,
                                 dropout_rate=config.dropout_rate, channel_embedding=config.channel_embedding,
                                 normalization="revin" if config.revin else "last")
    common = dict(num_series=num_series, lookback=config.lookback, horizon=config.horizon, mode=config.mode,
                  hidden_size=config.hidden_size, num_layers=config.num_layers, dropout_rate=config.dropout_rate,
                  patch_length=config.patch_length, covariate_size=covariate_size, revin=config.revin,
                  channel_independent=config.channel_independent)
    if config.model == "direct":
        if config.scheduled_sampling_rate:
            raise ValueError("scheduled_sampling_rate applies to model='seq2seq' only")
        return DirectForecaster(**common, linear_skip=config.linear_skip)
    if config.model == "seq2seq":
        if config.linear_skip:
            raise ValueError("linear_skip applies to model='direct' only")
        return Seq2SeqForecaster(**common)
    raise ValueError(f"model must be one of ('direct', 'seq2seq', 'segrnn'), got {config.model!r}")


def forward(model, params, batch: dict, key=None, teacher_forcing: bool = False, rate: float = 0.0):
    """Model predictions `[B, H, C]` for a batch; seq2seq uses the targets only when `teacher_forcing`."""
    if isinstance(model, DirectForecaster):
        return model.apply(params, batch["inputs"], batch.get("covariates"), key=key)
    if isinstance(model, SegmentForecaster):
        return model.apply(params, batch["inputs"], key=key)
    targets = batch["targets"] if teacher_forcing else None
    return model.apply(params, batch["inputs"], batch.get("covariates"), batch.get("future_covariates"),
                       targets=targets, scheduled_sampling_rate=rate if teacher_forcing else 0.0, key=key)


@functools.partial(jax.jit, static_argnums=0)
def _predict(model, params, batch):
    return forward(model, params, batch)


def predict_windows(model, params, data: ForecastData, starts: np.ndarray, config: Config):
    """Yields `(batch, predictions)` over `starts` in fixed-size calls (the last one padded, then cut)."""
    size = config.eval_batch_size
    for begin in range(0, len(starts), size):
        chunk = starts[begin:begin + size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk))]) if len(chunk) < size else chunk
        batch = make_batch(data, padded, config)
        predictions = np.asarray(_predict(model, params, batch))[:len(chunk)]
        yield {k: v[:len(chunk)] for k, v in batch.items()}, predictions


def evaluate_model(model, params, data, split: str, config: Config) -> tuple[dict, np.ndarray]:
    sums, kept = None, []
    for batch, predictions in predict_windows(model, params, data, data.starts[split], config):
        sums = accumulate_errors(sums, predictions, batch["targets"])
        kept.append(predictions)
    return summarize_errors(sums), np.concatenate(kept)


def baseline_forecasts(data: ForecastData, config: Config) -> tuple[dict, dict]:
    """name -> function `inputs [B, L, C] -> [B, H, C]`, and the ridge chosen for each linear baseline: the
    normal equations come from the training windows, the penalty with the lowest validation MSE is kept."""
    def chunks(starts):
        for begin in range(0, len(starts), 2048):
            batch = make_batch(data, starts[begin:begin + 2048], config)
            yield batch["inputs"], batch["targets"]

    grid = parse_ridge_grid(config.ridge_grid)
    methods = {"repeat_last": lambda x: baselines.repeat_last(x, config.horizon)}
    if 1 < data.period <= config.lookback:
        methods["seasonal_naive"] = lambda x: baselines.seasonal_naive(x, config.horizon, data.period)
    chosen = {}
    for name, subtract_last in (("linear", False), ("nlinear", True)):
        equations = baselines.normal_equations(chunks(data.starts["train"]), subtract_last)
        candidates = [baselines.solve_linear(equations, ridge) for ridge in grid]
        scores = []
        for params in candidates:
            sums = None
            for inputs, targets in chunks(data.starts["valid"]):
                sums = accumulate_errors(sums, baselines.linear_forecast(params, inputs), targets)
            scores.append(summarize_errors(sums)["mse"])
        best = int(np.argmin(scores))
        chosen[name] = {"ridge": grid[best], "valid_mse": scores[best]}
        methods[name] = functools.partial(baselines.linear_forecast, candidates[best])
    return methods, chosen


def optimizer_config(config: Config, steps_per_epoch: int) -> "rnnjax.train.OptimizerConfig":
    """Adam behind the clip, at a constant rate or decaying per epoch after `lr_decay_start_epoch` epochs."""
    if config.lr_decay_start_epoch == 0:
        return rnnjax.train.OptimizerConfig(optimizer="adam", learning_rate=config.learning_rate,
                                            max_grad_norm=config.max_grad_norm)
    return rnnjax.train.OptimizerConfig(optimizer="adam", learning_rate=config.learning_rate,
                                        max_grad_norm=config.max_grad_norm, schedule="step_decay",
                                        steps_per_epoch=steps_per_epoch,
                                        decay_start_epoch=config.lr_decay_start_epoch,
                                        decay_factor=config.lr_decay_factor)


def parse_ridge_grid(text: str) -> list[float]:
    try:
        grid = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise ValueError(f"ridge_grid must be comma-separated numbers, got {text!r}") from None
    if not grid or any(value < 0 for value in grid):
        raise ValueError(f"ridge_grid must hold one or more penalties >= 0, got {text!r}")
    return grid


def evaluate_baselines(methods: dict, data, split: str, config: Config) -> tuple[dict, dict]:
    results, kept = {}, {}
    for name, method in methods.items():
        sums, outputs = None, []
        for begin in range(0, len(data.starts[split]), config.eval_batch_size):
            batch = make_batch(data, data.starts[split][begin:begin + config.eval_batch_size], config)
            predictions = method(batch["inputs"])
            sums = accumulate_errors(sums, predictions, batch["targets"])
            outputs.append(predictions)
        results[name], kept[name] = summarize_errors(sums), np.concatenate(outputs)
    return results, kept


def train(config: Config) -> dict:
    started = time.perf_counter()
    data = build_data(config)
    num_series = data.values.shape[1]
    covariate_size = 0 if data.covariates is None else data.covariates.shape[1]
    model = make_model(config, num_series, covariate_size)
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    train_starts = data.starts["train"]
    batch_size = min(config.batch_size, len(train_starts))
    steps_per_epoch = len(train_starts) // batch_size
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)

    def train_batches(epoch):
        for index in batch_indices(len(train_starts), batch_size, config.seed, epoch)[:steps_per_epoch]:
            yield make_batch(data, train_starts[np.sort(index)], config)

    def loss_fn(params, carry, batch, key):
        predictions = forward(model, params, batch, key, teacher_forcing=True, rate=config.scheduled_sampling_rate)
        mse = rnnjax.mean_squared_error(predictions, batch["targets"])
        # "mse" beside the loss it equals: the run files then draw train and valid MSE in one plot (valid_mse)
        return mse, (carry, {"mse": mse, "mae": rnnjax.mean_absolute_error(predictions, batch["targets"])})

    optimizer = rnnjax.train.make_optimizer(optimizer_config(config, steps_per_epoch))
    init_key, state_key = jax.random.split(jax.random.key(config.seed))
    state = rnnjax.train.create_train_state(model.init(init_key), optimizer, state_key)

    def evaluate(params):
        metrics, _ = evaluate_model(model, params, data, "valid", config)
        return {"valid_mse": metrics["mse"], "valid_mae": metrics["mae"]}

    run_config = {"config": dataclasses.asdict(config), "data": data.record}
    trainer = rnnjax.train.TrainerConfig(run_dir=str(run_dir), num_epochs=config.epochs, log_every=config.log_every,
                                   checkpoint_every=max(steps_per_epoch, 1), quiet=config.quiet,
                                   best_metric="valid_mse")  # model selection on validation only, as early stopping
    train_started = time.perf_counter()
    state, summary = cli.fit(trainer, state, rnnjax.train.train_step_fn(loss_fn, optimizer), train_batches,
                                      evaluate=evaluate, run_config=run_config, resume=config.resume,
                                      steps_per_epoch=steps_per_epoch)
    train_seconds = time.perf_counter() - train_started
    best = summary["best"] or {"epoch": -1, "value": float("inf")}  # none: no epoch had a finite validation MSE
    params = rnnjax.train.load_best(run_dir, state.params)[0] if summary["best"] else state.params

    test, model_predictions = evaluate_model(model, params, data, "test", config)
    methods, chosen_ridges = baseline_forecasts(data, config)
    baseline_results, baseline_predictions = evaluate_baselines(methods, data, "test", config)
    results = {"model": test, **baseline_results}
    references = {name: {"mse": rows[config.horizon][0], "mae": rows[config.horizon][1]}
                  for name, rows in published_references(config).items()
                  if config.horizon in rows}
    report = {
        "dataset": config.dataset, "features": config.features, "lookback": config.lookback,
        "horizon": config.horizon, "model": config.model, "mode": config.mode,
        "test": {name: {"mse": r["mse"], "mae": r["mae"]} for name, r in results.items()},
        "test_by_step": {name: {"mse": r["mse_by_step"], "mae": r["mae_by_step"]} for name, r in results.items()},
        "references": references, "linear_ridge": chosen_ridges, "best_epoch": best["epoch"],
        "best_valid_mse": best["value"],
        "steps": summary["steps"], "windows": data.record["windows"],
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / "results.json", report)
    plot_results(run_dir, data, config, model_predictions, baseline_predictions, results)
    print(format_table(report))
    cli.print_table({k: v for k, v in report.items() if k not in ("test_by_step", "test")}, title="result")
    return report


def format_table(report: dict) -> str:
    """The test table: every method's MSE and MAE, and the published rows at this horizon."""
    title = (f"{report['dataset']} {report['features']}  L={report['lookback']}  H={report['horizon']}"
             "  (test, normalised)")
    lines = [title, f"{'method':<22}{'MSE':>9}{'MAE':>9}"]
    label = f"rnnjax {report['model']} {report['mode']}"
    for name, row in report["test"].items():
        lines.append(f"{label if name == 'model' else name:<22}{row['mse']:>9.4f}{row['mae']:>9.4f}")
    for name, row in report["references"].items():
        lines.append(f"{name + ' (paper)':<22}{row['mse']:>9.3f}{row['mae']:>9.3f}")
    return "\n".join(lines)


def plot_results(run_dir, data, config, model_predictions, baseline_predictions, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    (run_dir / "plots").mkdir(exist_ok=True)
    starts = data.starts["test"]
    count = max(1, min(config.plot_windows, len(starts)))
    picks = np.linspace(0, len(starts) - 1, count).astype(int)
    channel = data.values.shape[1] - 1  # the target is always the last column
    figure, axes = pyplot.subplots(count, 1, figsize=(9, 2.6 * count), squeeze=False)
    shown_history = min(config.lookback, 3 * config.horizon)
    for axis, pick in zip(axes[:, 0], picks):
        start = starts[pick]
        history = np.arange(config.lookback - shown_history, config.lookback)
        future = np.arange(config.lookback, config.lookback + config.horizon)
        axis.plot(history, data.values[start + history, channel], color="black", linewidth=1, label="look-back")
        axis.plot(future, data.values[start + future, channel], color="black", linestyle="--", label="truth")
        axis.plot(future, model_predictions[pick, :, channel], linewidth=1.5, label=f"rnnjax {config.model}")
        for name, predictions in baseline_predictions.items():
            axis.plot(future, predictions[pick, :, channel], linewidth=0.8, alpha=0.8, label=name)
        axis.set_title(f"test window {pick} (row {start + config.lookback}), {data.columns[channel]}", fontsize=9)
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=3)
    figure.tight_layout()
    figure.savefig(run_dir / "plots" / "forecasts.png", dpi=100)
    pyplot.close(figure)

    figure, axis = pyplot.subplots(figsize=(7, 4))
    steps = np.arange(1, config.horizon + 1)
    for name, result in results.items():
        axis.plot(steps, result["mse_by_step"], label=f"rnnjax {config.model}" if name == "model" else name)
    axis.set_xlabel("horizon step")
    axis.set_ylabel("test MSE (normalised)")
    axis.set_title(f"{config.dataset} {config.features}: error by horizon step")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.savefig(run_dir / "plots" / "error_by_step.png", dpi=100, bbox_inches="tight")
    pyplot.close(figure)


def validate(config: Config) -> None:
    """Raises a ValueError naming the first invalid field of `config`; run before any data loads or any file is
    written (the command line shows the field as its flag)."""
    if config.dataset not in SERIES:
        raise ValueError(f"unknown dataset {config.dataset!r}; known: {', '.join(sorted(SERIES))}")
    if config.features not in ("S", "M"):
        raise ValueError(f"features must be 'S' or 'M', got {config.features!r}")
    if config.fill:
        _checks.check_choice("fill", config.fill, FILLS)
    cli.check_directory("data_dir", config.data_dir)
    for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
        _checks.check_positive_int(name, getattr(config, name))
    for name in ("max_steps_per_epoch", "plot_windows", "seed", "lr_decay_start_epoch"):
        _checks.check_nonnegative_int(name, getattr(config, name))
    _checks.check_rate("scheduled_sampling_rate", config.scheduled_sampling_rate)  # read only once training runs
    parse_ridge_grid(config.ridge_grid)
    make_model(config, 1, 0)  # model, mode, sizes, patch_length and switches, in the config's own field names
    optimizer_config(config, 1)
    cli.check_run_dir(config.run_dir)


def parse_config(argv=None) -> Config:
    """A `Config` from a preset and `--field value` flags, validated (`validate`); a bad value exits with status 2
    and one line naming its flag."""
    return parse_config_flags(Config, argv, __doc__.split("\n\n")[0], presets=PRESETS, quick=QUICK,
                              validate=validate, exit_on_error=True, run_flags=True,
                              choices={"dataset": tuple(SERIES), "fill": ("",) + tuple(FILLS)})


def main(argv=None) -> dict:
    return cli.run_main(argv, parse_config, train)


if __name__ == "__main__":
    main()
