"""Spoken digits (FSDD): one digit per recording (many-to-one) or digit strings transcribed with CTC.

    python -m experiments.speech --data-dir ../shared/data                         # BiLSTM classifier, standard split
    python -m experiments.speech --data-dir ../shared/data --protocol loso         # leave one speaker out (x6)
    python -m experiments.speech --preset ctc --data-dir ../shared/data            # digit strings, CTC
    python -m experiments.speech --preset ctc --data-dir ../shared/data --protocol loso

Features (`experiments.speech.features`): every recording scaled to a fixed peak, 40 log-mel filterbank energies
of 25 ms frames every 10 ms (NumPy), optionally `stack_frames` consecutive frames concatenated (a k-times shorter
sequence), standardised per feature with the training split's statistics only.

- `task="classify"`: `rnnjax.models.FrameClassifier` (a bidirectional `mode` stack over the frames with masks from
  the lengths, pooled over valid frames, dense to 10 digits), cross-entropy.
- `task="ctc"`: strings of `min_digits`..`max_digits` digits made by concatenating one speaker's recordings with
  random silence between them (train strings from train recordings, dev from dev, test from test; fixed by
  `data_seed`), `rnnjax.models.FrameTagger` with 11 outputs (blank = 0, digit d = d + 1) trained with
  `rnnjax.models.ctc_loss_fn` (`optax.ctc_loss`). Decoded best-path (`ctc_greedy_decode`) and with prefix beam
  search (`ctc_prefix_beam_search`); the digit error rate is the summed edit distance over the summed reference
  length, the string accuracy the fraction decoded exactly. A PNG shows one test string's spectrogram with the
  per-frame posteriors under it.

Protocols: "standard" (FSDD's split: takes 0-4 of each speaker and digit are test; takes 5-9 are held out as dev
for model selection; 10-49 train) and "loso" (each speaker in `speakers` held out in turn: all 500 of its
recordings are test, the other speakers' takes 5-9 dev; the mean over the held-out speakers is reported). The
epoch with the best dev score (accuracy, or greedy digit error rate) is kept and the test set scored once with it.
Batches are length-bucketed (`experiments.bucketing`: at most `num_buckets` compiled shapes). The run directory
holds one subdirectory per run (`config.json`, `metrics.jsonl`, `plots/`, `result.json`), `summary.json` and,
for CTC, `ctc_posteriors.png`. Every run prints its full config first and is bit-for-bit repeatable on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from experiments import bucketing, cli
from experiments.cli import parse_config_flags
from experiments.speech import data as fsdd
from experiments.speech import features as feats
from rnnjax import _checks
from rnnjax.train.run_files import write_json_atomic

TASKS = ("classify", "ctc")
PROTOCOLS = ("standard", "loso")
BLANK = 0  # CTC class 0; digit d is class d + 1


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "classify"  # "classify" (a digit per recording) | "ctc" (digit strings, CTC)
    protocol: str = "standard"  # "standard" (test = takes 0-4) | "loso" (each speaker held out in turn)
    speakers: str = ""  # loso: the held-out speakers, comma-separated ("": all six)
    data_dir: str = ""  # FSDD's SHA256SUMS + recordings/ (or ../shared/data); empty: download into the cache
    n_mels: int = 40  # log-mel filterbank channels
    frame_ms: float = 25.0  # analysis window
    hop_ms: float = 10.0  # frame step
    stack_frames: int = 1  # concatenate k consecutive frames, keep every k-th (k-times shorter sequences)
    mode: str = "lstm"  # any core cell: "lstm" | "gru" | "rnn_tanh" | "rnn_relu" | "mingru" | "minlstm"
    hidden_size: int = 128  # units per direction
    num_layers: int = 1  # stacked bidirectional levels
    pooling: str = "mean"  # classify: "last" | "mean" | "max" over valid frames
    dropout_rate: float = 0.3  # before the dense layer
    input_dropout_rate: float = 0.1  # on the input features
    layer_dropout_rate: float = 0.0  # between stacked levels
    batch_size: int = 32  # recordings or strings per step (short batches padded with masked rows)
    epochs: int = 25  # passes over the training split; the best-dev epoch is kept
    learning_rate: float = 2e-3  # Adam peak rate
    schedule: str = "cosine"  # "cosine" (to 0 over the run) | "constant"
    max_grad_norm: float = 5.0  # global-norm clip
    num_buckets: int = 4  # length buckets: at most this many compiled train shapes
    train_utterances: int = 4000  # ctc: training strings (made once from the training recordings)
    eval_utterances: int = 500  # ctc: dev strings and test strings, each
    min_digits: int = 3  # ctc: shortest string
    max_digits: int = 7  # ctc: longest string
    silence_min_ms: float = 50.0  # ctc: shortest gap before, between and after digits
    silence_max_ms: float = 300.0  # ctc: longest gap
    noise: float = 1e-3  # ctc: standard deviation of the noise that fills the gaps (recordings peak at 0.5)
    beam_size: int = 8  # ctc: prefix beam width of the final test decoding
    data_seed: int = 0  # ctc: the strings (which recordings, gaps, noise) are fixed by this seed
    seed: int = 0  # PRNG seed: init, dropout, batch order
    run_dir: str = "runs/speech"  # output directory
    log_every: int = 50  # steps between train metric lines
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        _checks.check_choice("task", self.task, TASKS)
        _checks.check_choice("protocol", self.protocol, PROTOCOLS)
        for speaker in self.speaker_names:
            _checks.check_choice("speakers", speaker, fsdd.SPEAKERS)
        for name in ("n_mels", "stack_frames", "batch_size", "epochs", "num_buckets", "train_utterances",
                     "eval_utterances", "min_digits", "max_digits", "beam_size", "log_every"):
            _checks.check_positive_int(name, getattr(self, name))
        for name in ("data_seed", "seed"):
            _checks.check_nonnegative_int(name, getattr(self, name))
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits ({self.min_digits}) must be <= max_digits ({self.max_digits})")
        if not 0 <= self.silence_min_ms <= self.silence_max_ms:
            raise ValueError(f"need 0 <= silence_min_ms <= silence_max_ms, got {self.silence_min_ms}, "
                             f"{self.silence_max_ms}")
        for name in ("frame_ms", "hop_ms", "learning_rate", "max_grad_norm", "noise"):
            _checks.check_positive_float(name, getattr(self, name))
        _checks.check_choice("schedule", self.schedule, ("cosine", "constant"))

    @property
    def speaker_names(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.speakers.split(",") if s.strip()) or fsdd.SPEAKERS

    @property
    def num_classes(self) -> int:
        return 10 if self.task == "classify" else 11


PRESETS = {
    "classify": dict(task="classify"),
    "ctc": dict(task="ctc", stack_frames=3, hidden_size=128, batch_size=32, epochs=15, train_utterances=3000,
                dropout_rate=0.2, input_dropout_rate=0.1),
}
QUICK = dict(hidden_size=8, batch_size=4, epochs=2, num_buckets=1, train_utterances=8, eval_utterances=4,
             min_digits=2, max_digits=3, beam_size=2, log_every=1, quiet=True, run_dir="runs/speech_quick")


# -- data -------------------------------------------------------------------------------------------------------------
def splits_for(config: Config, recordings) -> list[tuple[str, dict]]:
    """`(run name, {"train"|"dev"|"test": recording indices})` per run of the protocol."""
    if config.protocol == "standard":
        return [("standard", fsdd.standard_split(recordings))]
    return [(f"loso_{speaker}", fsdd.leave_one_speaker_out(recordings, speaker)) for speaker in config.speaker_names]


def featurize(config: Config, signal: np.ndarray) -> np.ndarray:
    """Unnormalised features of one float signal: log-mel, frames stacked."""
    features = feats.log_mel(signal, fsdd.SAMPLE_RATE, config.n_mels, config.frame_ms, config.hop_ms)
    return feats.stack_frames(features, config.stack_frames)


@dataclasses.dataclass(frozen=True)
class Examples:
    """One split: normalised feature sequences and their targets (a digit, or a tuple of digits)."""

    features: list
    targets: list
    speakers: list
    signals: list  # float signals (kept for the CTC figure)


def build_examples(config: Config, dataset: fsdd.FSDD, split: dict) -> tuple[dict[str, Examples], dict]:
    """Per split: features normalised with the training split's statistics, and targets."""
    raw = {}
    for offset, name in enumerate(("train", "dev", "test")):
        pool = split[name]
        if config.task == "classify":
            signals = [feats.scale_to_peak(dataset.signals[i], 0.5) for i in pool]
            targets = [dataset.recordings[i].digit for i in pool]
            speakers = [dataset.recordings[i].speaker for i in pool]
        else:
            count = config.train_utterances if name == "train" else config.eval_utterances
            utterances = feats.make_utterances(
                dataset.recordings, dataset.signals, pool, count, seed=config.data_seed * 3 + offset,
                sample_rate=fsdd.SAMPLE_RATE, min_digits=config.min_digits, max_digits=config.max_digits,
                silence_ms=(config.silence_min_ms, config.silence_max_ms), noise=config.noise)
            signals = [u.signal for u in utterances]
            targets = [u.digits for u in utterances]
            speakers = [u.speaker for u in utterances]
        raw[name] = ([featurize(config, s) for s in signals], targets, speakers, signals)
    normalizer = feats.Normalizer.fit(raw["train"][0])
    examples = {name: Examples([normalizer(f) for f in features], targets, speakers, signals)
                for name, (features, targets, speakers, signals) in raw.items()}
    stats = {"frames": {name: int(sum(len(f) for f in e.features)) for name, e in examples.items()},
             "examples": {name: len(e.targets) for name, e in examples.items()},
             "feature_mean_of_means": float(normalizer.mean.mean()), "feature_mean_std": float(normalizer.std.mean())}
    return examples, {"normalizer": normalizer, **stats}


def make_batches(config: Config, examples: Examples, boundaries, seed=None) -> list[dict]:
    """Length-bucketed batches of `examples` (`experiments.bucketing` picks rows and shapes; features are gathered
    here): `features` [B, L, F], `lengths`, `mask`, `index`, and `labels` (classify: [B]; ctc: [B, max_digits]
    with `label_lengths`)."""
    lengths = [len(f) for f in examples.features]
    plans = bucketing.bucket_batches([np.ones(n, np.int32) for n in lengths], np.arange(len(lengths)),
                                     batch_size=config.batch_size, boundaries=boundaries, seed=seed)
    width = examples.features[0].shape[1]
    batches = []
    for plan in plans:
        size, length = plan["tokens"].shape
        features = np.zeros((size, length, width), np.float32)
        for row, index in enumerate(plan["index"].tolist()):
            if index >= 0:
                features[row, :lengths[index]] = examples.features[index]
        batch = {"features": features, "lengths": plan["lengths"], "mask": plan["mask"], "index": plan["index"]}
        if config.task == "classify":
            batch["labels"] = np.array([examples.targets[i] if i >= 0 else 0 for i in plan["index"].tolist()],
                                       np.int32)
        else:
            labels = np.zeros((size, config.max_digits), np.int32)
            label_lengths = np.zeros((size,), np.int32)
            for row, index in enumerate(plan["index"].tolist()):
                if index >= 0:
                    digits = examples.targets[index]
                    labels[row, :len(digits)] = np.asarray(digits) + 1
                    label_lengths[row] = len(digits)
            batch["labels"], batch["label_lengths"] = labels, label_lengths
        batches.append(batch)
    return batches


# -- model and evaluation ---------------------------------------------------------------------------------------------
def make_model(config: Config, input_size: int):
    kind = rnnjax.models.FrameClassifier if config.task == "classify" else rnnjax.models.FrameTagger
    options = {"pooling": config.pooling} if config.task == "classify" else {}
    return kind(input_size=input_size, num_classes=config.num_classes, hidden_size=config.hidden_size,
                num_layers=config.num_layers, mode=config.mode, bidirectional=True,
                dropout_rate=config.dropout_rate, input_dropout_rate=config.input_dropout_rate,
                layer_dropout_rate=config.layer_dropout_rate, **options)


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model, params, features, lengths):
    """Classify: logits [B, C]; ctc: log-probabilities [B, T, C] and the greedy decoding."""
    logits = model.apply(params, features, lengths)
    if isinstance(model, rnnjax.models.FrameClassifier):
        return logits
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return log_probs, rnnjax.models.ctc_greedy_decode(log_probs, lengths, BLANK)


def _without_blank_offset(labels) -> tuple[int, ...]:
    return tuple(int(c) - 1 for c in labels)


def predict(model, params, batches, beam_size: int = 0) -> dict:
    """Per example, in input order: the predicted digit (classify), or the greedy (and, with `beam_size`, the
    prefix-beam) decoding as digit tuples; `log_probs` of every example too (ctc)."""
    out: dict[str, dict] = {"predicted": {}, "beam": {}, "log_probs": {}}
    for batch in batches:
        result = _outputs(model, params, jnp.asarray(batch["features"]), jnp.asarray(batch["lengths"]))
        rows = [(row, index) for row, index in enumerate(batch["index"].tolist()) if index >= 0]
        if isinstance(model, rnnjax.models.FrameClassifier):
            predicted = np.asarray(jnp.argmax(result, axis=-1))
            out["predicted"].update({index: int(predicted[row]) for row, index in rows})
            continue
        log_probs, (labels, label_lengths) = (np.asarray(result[0]),
                                              (np.asarray(result[1][0]), np.asarray(result[1][1])))
        for row, index in rows:
            out["predicted"][index] = _without_blank_offset(labels[row, :label_lengths[row]])
            out["log_probs"][index] = log_probs[row, :batch["lengths"][row]]
        if beam_size:
            real = [row for row, _ in rows]
            decoded = rnnjax.models.ctc_prefix_beam_search(log_probs[real], batch["lengths"][real], beam_size, BLANK)
            out["beam"].update({index: _without_blank_offset(d) for (_, index), d in zip(rows, decoded)})
    return out


def error_rates(references: list, hypotheses: list) -> dict:
    """Digit error rate (summed edit distance / summed reference length) and whole-string accuracy."""
    errors = sum(rnnjax.models.edit_distance(r, h) for r, h in zip(references, hypotheses))
    total = sum(len(r) for r in references)
    exact = sum(tuple(r) == tuple(h) for r, h in zip(references, hypotheses))
    return {"digit_error_rate": errors / total, "string_accuracy": exact / len(references), "edits": errors,
            "digits": total}


def score(config: Config, examples: Examples, predictions: dict, key: str = "predicted") -> dict:
    hypotheses = [predictions[key][i] for i in range(len(examples.targets))]
    if config.task == "classify":
        return {"accuracy": float(np.mean(np.array(hypotheses) == np.array(examples.targets)))}
    return error_rates(examples.targets, hypotheses)


# -- one run ----------------------------------------------------------------------------------------------------------
def run_one(config: Config, dataset: fsdd.FSDD, name: str, split: dict, run_dir: pathlib.Path) -> dict:
    started_data = time.perf_counter()
    examples, stats = build_examples(config, dataset, split)
    normalizer = stats.pop("normalizer")
    boundaries = bucketing.bucket_boundaries([len(f) for f in examples["train"].features], config.num_buckets)
    longest = max(len(f) for e in examples.values() for f in e.features)
    boundaries = boundaries[:-1] + (max(boundaries[-1], longest),)  # dev/test fit in the last bucket
    model = make_model(config, examples["train"].features[0].shape[1])
    init_key, state_key = jax.random.split(jax.random.key(config.seed))
    params = model.init(init_key)
    steps_per_epoch = len(make_batches(config, examples["train"], boundaries, seed=[config.seed, 0]))
    schedule = ({"schedule": "cosine", "total_steps": steps_per_epoch * config.epochs}
                if config.schedule == "cosine" else {})
    optimizer = rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(
        optimizer="adam", learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm, **schedule))
    state = rnnjax.train.create_train_state(params, optimizer, state_key)
    eval_batches = {part: make_batches(config, examples[part], boundaries) for part in ("dev", "test")}
    higher_is_better = config.task == "classify"
    best = {"score": None, "epoch": -1, "params": None}
    epoch_counter = [0]

    def train_batches(epoch):
        for batch in make_batches(config, examples["train"], boundaries, seed=[config.seed, epoch]):
            yield {k: v for k, v in batch.items() if k != "index"}

    def evaluate(params):
        result = score(config, examples["dev"], predict(model, params, eval_batches["dev"]))
        value = result["accuracy"] if higher_is_better else result["digit_error_rate"]
        if best["score"] is None or (value > best["score"] if higher_is_better else value < best["score"]):
            best.update(score=value, epoch=epoch_counter[0], params=jax.device_get(params))  # ties: the earlier
        epoch_counter[0] += 1
        return {"dev_" + k: v for k, v in result.items() if k in ("accuracy", "digit_error_rate", "string_accuracy")}

    loss_fn = (rnnjax.models.frame_classification_loss_fn(model) if config.task == "classify"
               else rnnjax.models.ctc_loss_fn(model, BLANK))
    run_config = {"config": dataclasses.asdict(config), "run": name, "data": dataset.record, **stats,
                  "bucket_boundaries": list(boundaries), "normalizer_mean": normalizer.mean.tolist(),
                  "normalizer_std": normalizer.std.tolist(),
                  "test_speakers": sorted(set(examples["test"].speakers))}
    trainer = rnnjax.train.TrainerConfig(run_dir=str(run_dir), num_epochs=config.epochs, log_every=config.log_every,
                                         checkpoint_every=steps_per_epoch * config.epochs + 1, keep_checkpoints=1,
                                         quiet=config.quiet)
    data_seconds = time.perf_counter() - started_data
    started = time.perf_counter()
    train_step = rnnjax.train.train_step_fn(loss_fn, optimizer)
    state, summary = cli.fit(trainer, state, train_step, train_batches, evaluate=evaluate,
                                      run_config=run_config, resume=False, steps_per_epoch=steps_per_epoch)
    seconds = time.perf_counter() - started
    predictions = predict(model, best["params"], eval_batches["test"],
                          beam_size=config.beam_size if config.task == "ctc" else 0)
    result = {"run": name, "task": config.task, "test_speakers": run_config["test_speakers"],
              "best_epoch": best["epoch"], "steps": summary["steps"], "train_seconds": round(seconds, 1),
              "data_seconds": round(data_seconds, 1), "examples": stats["examples"]}
    if config.task == "classify":
        result |= {"test_accuracy": score(config, examples["test"], predictions)["accuracy"],
                   "dev_accuracy": best["score"]}
    else:
        greedy = score(config, examples["test"], predictions)
        beam = score(config, examples["test"], predictions, key="beam")
        result |= {"test_greedy": greedy, "test_beam": beam, "dev_greedy_digit_error_rate": best["score"],
                   "beam_size": config.beam_size}
        plot_posteriors(config, examples["test"], predictions, normalizer, run_dir / "ctc_posteriors.png")
    write_json_atomic(run_dir / "result.json", result)
    cli.print_table(result, title=f"result: {run_dir.name}")
    return result


def plot_posteriors(config: Config, examples: Examples, predictions: dict, normalizer, path: pathlib.Path,
                    index: int = 0) -> None:
    """The log-mel spectrogram of test string `index` with the per-frame CTC posteriors under it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    signal = examples.signals[index]
    mel = feats.log_mel(signal, fsdd.SAMPLE_RATE, config.n_mels, config.frame_ms, config.hop_ms)
    posteriors = np.exp(predictions["log_probs"][index])  # [T', 11]
    frame_seconds = config.hop_ms / 1000
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(9, 5.2), sharex=True,
                                            gridspec_kw={"height_ratios": [1.2, 1]})
    top.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
               extent=(0, len(mel) * frame_seconds, 0, config.n_mels))
    top.set_ylabel("mel channel")
    reference = "".join(map(str, examples.targets[index]))
    greedy = "".join(map(str, predictions["predicted"][index]))
    beam = "".join(map(str, predictions["beam"].get(index, ())))
    top.set_title(f"test string {index}: reference {reference}, greedy {greedy}, beam {beam} "
                  f"(speaker {examples.speakers[index]})", fontsize=9)
    step = frame_seconds * config.stack_frames
    times = (np.arange(len(posteriors)) + 0.5) * step
    bottom.plot(times, posteriors[:, BLANK], color="0.7", linewidth=1, label="blank")
    for digit in range(10):
        column = posteriors[:, digit + 1]
        line, = bottom.plot(times, column, linewidth=1.3, color=f"C{digit}")
        peak = int(np.argmax(column))
        if column[peak] > 0.5:
            bottom.text(times[peak], min(column[peak] + 0.03, 1.02), str(digit), color=line.get_color(),
                        ha="center", fontsize=9, fontweight="bold")
    bottom.set_ylim(0, 1.1)
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("posterior")
    bottom.legend(loc="upper right", fontsize=8)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    pyplot.close(figure)


def _mean_std(values) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def train(config: Config) -> dict:
    dataset = fsdd.load_fsdd(config.data_dir or None)
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = [run_one(config, dataset, name, split, run_dir / name)
               for name, split in splits_for(config, dataset.recordings)]
    summary = {"config": dataclasses.asdict(config), "data": dataset.record, "runs": results,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    if config.task == "classify":
        summary["test_accuracy"] = _mean_std([r["test_accuracy"] for r in results])
    else:
        for decoder in ("greedy", "beam"):
            for metric in ("digit_error_rate", "string_accuracy"):
                summary[f"test_{decoder}_{metric}"] = _mean_std([r[f"test_{decoder}"][metric] for r in results])
    write_json_atomic(run_dir / "summary.json", summary)
    cli.print_table({k: v for k, v in summary.items() if k.startswith("test_") or k == "wall_seconds"}, title="summary")
    print(f"run directory: {run_dir} (summary.json, one subdirectory per run)")
    return summary


def validate(config: Config) -> None:
    """Raises a ValueError naming the first invalid field; run before any data loads or any file is written."""
    cli.check_directory("data_dir", config.data_dir)
    cli.check_run_dir(config.run_dir)
    make_model(config, config.n_mels * config.stack_frames)  # mode, sizes, pooling and rates


def parse_config(argv=None) -> Config:
    return parse_config_flags(Config, argv, __doc__.split("\n\n")[0], presets=PRESETS, quick=QUICK,
                              validate=validate, exit_on_error=True, run_flags=True,
                              choices={"task": TASKS, "protocol": PROTOCOLS, "schedule": ("cosine", "constant")})


def main(argv=None):
    return cli.run_main(argv, parse_config, train)


if __name__ == "__main__":
    main()
