"""Captioning multi-digit MNIST canvases: a small CNN, then a recurrent caption decoder.

    python -m experiments.captioning --data-dir ../shared/data                      # attention (Show, Attend, Tell)
    python -m experiments.captioning --decoder vector --data-dir ../shared/data     # Show and Tell
    python -m experiments.captioning --quick

Data (`experiments.captioning.data`): 32 x 144 canvases of 2-5 MNIST digits (k uniform), train canvases drawn
from the training digits minus `validation_size` held out (the validation canvases use those), test canvases from
the test split only; the caption is the digits' words left to right, BOS/EOS around it. Train canvases are made
per step (`np.random.default_rng([seed, step])`), the validation and test sets once from fixed seeds.

Encoder: three 3x3 convolutions (16, 32, 64 channels, ReLU, 2x2 max-pool each; plain `lax.conv_general_dilated`),
giving a 4 x 18 grid of 64 features (one column per 8 pixels). Decoders (`rnnjax.models.CaptionDecoder`):
"attention" attends over the 72 grid vectors (additive; Xu et al. 2015's initial carry from the mean annotation), each
with its one-hot row and column appended (`coordinates`);
"vector" flattens the grid through a dense layer into one image vector that sets the initial carry (Vinyals et al.
2015). Loss: `rnnjax.models.sequence_loss` (optional label smoothing); Adam, cosine decay, a global-norm clip.

Metrics on the test canvases, per digit count, from `greedy_decode` (and `beam_search` when `beam_size > 1`):
whole-caption exact match, per-token accuracy (the reference's words and EOS, position by position), corpus
BLEU-4 (Papineni et al. 2002; only over canvases with at least 4 digits, shorter captions have no 4-grams).
`attention.png`: test canvases with their generated captions and, per word, its attention map over the canvas.
The run directory holds `config.json`, `metrics.jsonl`, `result.json` and the figure. Every run prints its config,
takes a seed and is bit-for-bit repeatable on CPU.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments import cli, mnist
from experiments.captioning import data
from experiments.cli import parse_config_flags
from rnnjax import _checks
from rnnjax.train.run_files import write_json_atomic

DECODERS = ("attention", "vector")
CHANNELS = (16, 32, 64)
GRID = (data.HEIGHT // 8, data.WIDTH // 8)  # three 2x2 pools


@dataclasses.dataclass(frozen=True)
class Config:
    decoder: str = "attention"  # "attention" (Show, Attend and Tell) | "vector" (Show and Tell)
    mode: str = "lstm"  # the decoder cell, any rnnjax.CELL_MODES
    hidden_size: int = 128  # decoder cell units
    embed_size: int = 32  # word embedding size
    attention_size: int = 64  # additive attention's hidden size
    coordinates: bool = True  # attention: append each grid location's one-hot row and column to its features
    vector_size: int = 256  # "vector": the image vector's size (a dense layer over the flattened grid)
    dropout_rate: float = 0.0  # decoder dropout (embeddings, before the output layer)
    label_smoothing: float = 0.0  # of the cross-entropy targets
    batch_size: int = 64  # canvases per step
    steps: int = 8000  # training steps (the test targets were met at 8000: experiments/README.md)
    learning_rate: float = 2e-3  # Adam peak rate (cosine decay to 0)
    max_grad_norm: float = 5.0  # global-norm clip
    validation_size: int = 5000  # training digits held out for the validation canvases
    valid_canvases: int = 500  # validation canvases (scored every eval_every steps)
    test_canvases: int = 1000  # test canvases per digit count (2, 3, 4, 5)
    eval_every: int = 1000  # steps between validations (the best one is kept)
    beam_size: int = 1  # > 1: also score beam search on the test canvases
    figure_examples: int = 4  # test canvases in attention.png (one per digit count first)
    data_dir: str = ""  # the MNIST .gz files (or ../shared/data); empty: download-and-verify into the cache
    seed: int = 0  # PRNG seed: init and the train canvases
    data_seed: int = 0  # the validation and test canvases' seed
    run_dir: str = "runs/captioning"  # output directory
    log_every: int = 500  # steps between train metric lines
    max_train_digits: int = 0  # use only the first N training digits (0: all; smoke runs)

    def __post_init__(self):
        _checks.check_choice("decoder", self.decoder, DECODERS)
        _checks.check_choice("mode", self.mode, rnnjax.CELL_MODES)
        for name in ("hidden_size", "embed_size", "attention_size", "vector_size", "batch_size", "steps",
                     "validation_size", "valid_canvases", "test_canvases", "eval_every", "beam_size", "log_every"):
            _checks.check_positive_int(name, getattr(self, name))
        for name in ("figure_examples", "seed", "data_seed", "max_train_digits"):
            _checks.check_nonnegative_int(name, getattr(self, name))
        _checks.check_rate("dropout_rate", self.dropout_rate)
        _checks.check_rate("label_smoothing", self.label_smoothing)
        _checks.check_positive_float("learning_rate", self.learning_rate)
        _checks.check_positive_float("max_grad_norm", self.max_grad_norm)


PRESETS = {
    "attention": dict(decoder="attention"),
    "vector": dict(decoder="vector"),
}
QUICK = dict(hidden_size=16, embed_size=8, attention_size=8, vector_size=16, batch_size=8, steps=4, eval_every=2,
             validation_size=50, valid_canvases=8, test_canvases=4, log_every=1, beam_size=2, figure_examples=2,
             max_train_digits=200, run_dir="runs/captioning_quick")


# -- the CNN encoder -----------------------------------------------------------------------------------------------
def cnn_init(key: jax.Array) -> tuple:
    """Three 3x3 convolutions, HWIO kernels, He-uniform (fan-in), zero biases."""
    layers, channels = [], 1
    for layer_key, out in zip(jax.random.split(key, len(CHANNELS)), CHANNELS):
        bound = math.sqrt(6.0 / (9 * channels))
        layers.append({"kernel": jax.random.uniform(layer_key, (3, 3, channels, out), minval=-bound, maxval=bound),
                       "bias": jnp.zeros((out,))})
        channels = out
    return tuple(layers)


def cnn_apply(params: tuple, images: jax.Array) -> jax.Array:
    """`images` `[B, H, W]` -> the feature grid `[B, (H/8) * (W/8), 64]` (row-major locations)."""
    x = images[..., None]
    for layer in params:
        x = jax.lax.conv_general_dilated(x, layer["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + layer["bias"].reshape(1, 1, 1, -1))
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return x.reshape(x.shape[0], -1, x.shape[-1])


@dataclasses.dataclass(frozen=True)
class Captioner:
    """CNN + `CaptionDecoder`, with the decoding protocol of `rnnjax.models.decoding` (images are the
    conditioning)."""

    config: Config

    @property
    def decoder(self) -> rnnjax.models.CaptionDecoder:
        c = self.config
        attention = c.decoder == "attention"
        return rnnjax.models.CaptionDecoder(
            vocab_size=len(data.VOCAB), embed_size=c.embed_size, hidden_size=c.hidden_size,
            feature_size=self.grid_features if attention else c.vector_size, mode=c.mode,
            attention="additive" if attention else None, attention_size=c.attention_size if attention else None,
            dropout_rate=c.dropout_rate)

    @property
    def grid_features(self) -> int:
        return CHANNELS[-1] + (GRID[0] + GRID[1] if self.config.coordinates else 0)

    def init(self, key: jax.Array) -> dict:
        cnn_key, vector_key, decoder_key = jax.random.split(key, 3)
        params = {"cnn": cnn_init(cnn_key), "decoder": self.decoder.init(decoder_key)}
        if self.config.decoder == "vector":
            size = GRID[0] * GRID[1] * CHANNELS[-1]
            bound = 1.0 / math.sqrt(size)
            params["vector"] = {
                "weight": jax.random.uniform(vector_key, (self.config.vector_size, size), minval=-bound, maxval=bound),
                "bias": jnp.zeros((self.config.vector_size,))}
        return params

    def features(self, params: dict, images: jax.Array) -> jax.Array:
        grid = cnn_apply(params["cnn"], images)
        if self.config.decoder == "attention":
            if not self.config.coordinates:
                return grid
            # Convolutions are translation-equivariant: the same digit gives the same vector anywhere, so without
            # its location the attended context cannot tell the decoder where it looked (and where to look next).
            rows, columns = np.meshgrid(np.arange(GRID[0]), np.arange(GRID[1]), indexing="ij")
            where = np.concatenate([np.eye(GRID[0])[rows.ravel()], np.eye(GRID[1])[columns.ravel()]], axis=1)
            where = jnp.broadcast_to(jnp.asarray(where, grid.dtype)[None], (grid.shape[0],) + where.shape)
            return jnp.concatenate([grid, where], axis=-1)
        flat = grid.reshape(grid.shape[0], -1)
        return jax.nn.relu(flat @ params["vector"]["weight"].T + params["vector"]["bias"][None, :])

    def init_state(self, params: dict, images: jax.Array):
        return self.decoder.init_state(params["decoder"], self.features(params, images))

    def step(self, params: dict, state, tokens: jax.Array):
        return self.decoder.step(params["decoder"], state, tokens)

    def apply(self, params, images, inputs, lengths, *, key=None, train=False):
        return self.decoder.apply(params["decoder"], self.features(params, images), inputs, lengths, key=key,
                                  train=train)


# -- metrics -------------------------------------------------------------------------------------------------------
def _ngrams(words, n):
    return collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(references: list[list[str]], hypotheses: list[list[str]], max_n: int = 4) -> float:
    """Corpus BLEU-`max_n` (Papineni et al. 2002): clipped n-gram precisions summed over the corpus, their
    geometric mean, times the brevity penalty exp(1 - r/c) when the hypotheses are shorter. 0 when some order
    has no matching n-gram (no smoothing)."""
    matches, totals = [0] * max_n, [0] * max_n
    for reference, hypothesis in zip(references, hypotheses):
        for n in range(1, max_n + 1):
            ref, hyp = _ngrams(reference, n), _ngrams(hypothesis, n)
            matches[n - 1] += sum(min(count, ref[gram]) for gram, count in hyp.items())
            totals[n - 1] += max(len(hypothesis) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    ref_length, hyp_length = sum(map(len, references)), sum(map(len, hypotheses))
    brevity = 1.0 if hyp_length > ref_length else math.exp(1 - ref_length / max(hyp_length, 1))
    return brevity * math.exp(log_precision)


def caption_metrics(tokens: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> dict:
    """Exact match (every word and the EOS right), per-token accuracy over the reference's words and EOS, and
    BLEU-4 (canvases of >= 4 digits) for generated `tokens` `[n, L]` against `targets` `[n, L]` of `lengths`."""
    n = len(tokens)
    valid = np.arange(targets.shape[1])[None, :] < lengths[:, None]
    correct = (tokens[:, :targets.shape[1]] == targets) & valid
    exact = correct.sum(1) == lengths
    references = [data.caption_text(t).split() for t in targets]
    hypotheses = [data.caption_text(t).split() for t in tokens]
    long = [i for i in range(n) if len(references[i]) >= 4]
    bleu = corpus_bleu([references[i] for i in long], [hypotheses[i] for i in long]) if long else None
    return {"exact_match": float(exact.mean()), "token_accuracy": float(correct.sum() / valid.sum()),
            "bleu4": bleu, "count": n}


@functools.partial(jax.jit, static_argnums=0)
def _greedy(model, params, images):
    return rnnjax.models.greedy_decode(model, params, images, bos_id=data.BOS, eos_id=data.EOS,
                                       max_length=data.MAX_CAPTION, pad_id=data.EOS)


def decode(model, params, images, batch: int = 250, beam_size: int = 1):
    """Greedy (or beam) tokens `[n, MAX_CAPTION]` and greedy attention `[n, MAX_CAPTION, locations]` (None for
    beams or without attention), in batches of one shape (the last padded)."""
    tokens, attention = [], []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        rows = len(chunk)
        if rows < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - rows,) + chunk.shape[1:], chunk.dtype)])
        if beam_size == 1:
            out, _, weights = _greedy(model, params, jnp.asarray(chunk))
            if weights is not None:
                attention.append(np.asarray(weights)[:rows])
        else:
            out, _, _ = rnnjax.models.beam_search(model, params, jnp.asarray(chunk), beam_size=beam_size,
                                                  bos_id=data.BOS, eos_id=data.EOS, max_length=data.MAX_CAPTION,
                                                  length_penalty=0.0, pad_id=data.EOS)
        tokens.append(np.asarray(out)[:rows])
    return np.concatenate(tokens), (np.concatenate(attention) if attention else None)


# -- training ------------------------------------------------------------------------------------------------------
def digit_pools(config: Config, digits: mnist.MNIST):
    train_index, valid_index = mnist.split_validation(len(digits.train_labels), config.validation_size, 0)
    if config.max_train_digits:
        train_index = train_index[:config.max_train_digits]
    return ((digits.train_images[train_index], digits.train_labels[train_index]),
            (digits.train_images[valid_index], digits.train_labels[valid_index]),
            (digits.test_images, digits.test_labels))


def canvas_set(pool, counts, seed):
    canvases, digits, boxes = data.make_canvases(*pool, counts, np.random.default_rng(seed))
    inputs, targets, lengths = data.captions(digits)
    return {"images": canvases, "digits": digits, "boxes": boxes, "inputs": inputs, "targets": targets,
            "lengths": lengths}


def train_batch(config: Config, pool, step: int) -> dict:
    rng = np.random.default_rng([config.seed, step])
    counts = rng.integers(data.MIN_DIGITS, data.MAX_DIGITS + 1, size=config.batch_size)
    canvases, digits, _ = data.make_canvases(*pool, counts, rng)
    inputs, targets, lengths = data.captions(digits)
    return {"images": canvases, "inputs": inputs, "targets": targets, "lengths": lengths}


def make_train_step(model: Captioner, optimizer, label_smoothing: float):
    def loss_fn(params, batch, key):
        logits, _ = model.apply(params, batch["images"], batch["inputs"], batch["lengths"], key=key, train=True)
        return rnnjax.models.sequence_loss(logits, batch["targets"], batch["lengths"],
                                           label_smoothing=label_smoothing)

    @jax.jit
    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    return step


def write_figure(path: pathlib.Path, test: dict, tokens: np.ndarray, attention: np.ndarray | None,
                 examples: list[int]) -> None:
    """Each example a row: the canvas with reference and generated caption, then one panel per generated word
    with its attention map (4 x 18 grid, nearest-upsampled to the canvas) over the image."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    columns = 1 + (data.MAX_CAPTION if attention is not None else 0)
    figure, axes = pyplot.subplots(len(examples), columns, figsize=(2.6 * columns, 1.1 * len(examples) + 0.4),
                                   squeeze=False)
    for row, index in enumerate(examples):
        image = test["images"][index]
        generated = data.caption_text(tokens[index])
        reference = data.caption_text(test["targets"][index])
        axes[row, 0].imshow(image, cmap="gray_r")
        mark = "" if generated == reference else " (WRONG)"
        axes[row, 0].set_title(f"ref: {reference}\ngen: {generated}{mark}", fontsize=7)
        words = (generated.split() + ["<eos>"])[:data.MAX_CAPTION] if attention is not None else []
        for column in range(1, columns):
            axis = axes[row, column]
            if column - 1 < len(words):
                grid = attention[index, column - 1].reshape(GRID)
                upsampled = np.kron(grid, np.ones((8, 8)))
                axis.imshow(image, cmap="gray_r")
                axis.imshow(upsampled, cmap="inferno", alpha=0.55, vmin=0.0, vmax=max(float(grid.max()), 1e-6))
                axis.set_title(f'"{words[column - 1]}" (max {grid.max():.2f})', fontsize=7)
            axis.axis("off")
        axes[row, 0].axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def attention_on_digit(test: dict, tokens: np.ndarray, attention: np.ndarray) -> float:
    """Over correctly captioned test canvases: the fraction of word steps whose attention's mass-weighted column
    centre falls inside the columns of the digit being named (a number for 'the attention lands on the digit')."""
    hits, total = 0, 0
    column_centres = (np.arange(GRID[1]) + 0.5) * 8
    for i in range(len(tokens)):
        k = int(test["lengths"][i]) - 1
        if data.caption_text(tokens[i]) != data.caption_text(test["targets"][i]):
            continue
        for j in range(k):
            mass = attention[i, j].reshape(GRID).sum(0)
            centre = float((mass * column_centres).sum() / max(mass.sum(), 1e-9))
            left = test["boxes"][i, j, 1]
            hits += left <= centre < left + data.DIGIT
            total += 1
    return hits / max(total, 1)


def train(config: Config) -> dict:
    digits = mnist.load_mnist(config.data_dir or None)
    train_pool, valid_pool, test_pool = digit_pools(config, digits)
    rng = np.random.default_rng([config.data_seed, 1])
    valid = canvas_set(valid_pool, rng.integers(data.MIN_DIGITS, data.MAX_DIGITS + 1, config.valid_canvases),
                       [config.data_seed, 2])
    counts = np.repeat(np.arange(data.MIN_DIGITS, data.MAX_DIGITS + 1), config.test_canvases)
    test = canvas_set(test_pool, counts, [config.data_seed, 3])
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"config": dataclasses.asdict(config), "data": digits.record,
                                                "train_digits": len(train_pool[1])})
    model = Captioner(config)
    init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    params = model.init(init_key)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.steps)))
    opt_state = optimizer.init(params)
    step_fn = make_train_step(model, optimizer, config.label_smoothing)
    best = {"exact_match": -1.0, "step": -1, "params": params}
    started = time.perf_counter()
    with open(run_dir / "metrics.jsonl", "w") as log:
        for step in range(1, config.steps + 1):
            batch = {k: jnp.asarray(v) for k, v in train_batch(config, train_pool, step).items()}
            params, opt_state, loss, norm = step_fn(params, opt_state, batch, jax.random.fold_in(dropout_key, step))
            if step % config.log_every == 0 or step == config.steps:
                record = {"step": step, "split": "train", "loss": float(loss), "grad_norm": float(norm),
                          "seconds": round(time.perf_counter() - started, 1)}
                log.write(json.dumps(record) + "\n")
                print(f"step {step:5d}  loss {float(loss):.4f}  grad norm {float(norm):.3f}  "
                      f"{record['seconds']:.0f} s", flush=True)
            if step % config.eval_every == 0 or step == config.steps:
                tokens, _ = decode(model, params, valid["images"], batch=min(250, config.valid_canvases))
                metrics = caption_metrics(tokens, valid["targets"], valid["lengths"])
                log.write(json.dumps({"step": step, "split": "valid", **metrics}) + "\n")
                log.flush()
                print(f"step {step:5d}  valid exact match {metrics['exact_match']:.4f}  token accuracy "
                      f"{metrics['token_accuracy']:.4f}", flush=True)
                if metrics["exact_match"] > best["exact_match"]:
                    best.update(exact_match=metrics["exact_match"], step=step, params=jax.device_get(params))
    train_seconds = time.perf_counter() - started
    params = best["params"]
    batch = min(250, config.test_canvases * 4)
    tokens, attention = decode(model, params, test["images"], batch=batch)
    per_count = {}
    for k in range(data.MIN_DIGITS, data.MAX_DIGITS + 1):
        rows = test["lengths"] == k + 1
        per_count[str(k)] = caption_metrics(tokens[rows], test["targets"][rows], test["lengths"][rows])
    result = {"decoder": config.decoder, "mode": config.mode, "steps": config.steps, "best_step": best["step"],
              "valid_exact_match": best["exact_match"], "train_seconds": round(train_seconds, 1),
              "test": {"all": caption_metrics(tokens, test["targets"], test["lengths"]), **per_count}}
    if config.beam_size > 1:
        beam_tokens, _ = decode(model, params, test["images"], batch=batch, beam_size=config.beam_size)
        result["test_beam"] = {str(k): caption_metrics(beam_tokens[test["lengths"] == k + 1],
                                                       test["targets"][test["lengths"] == k + 1],
                                                       test["lengths"][test["lengths"] == k + 1])
                               for k in range(data.MIN_DIGITS, data.MAX_DIGITS + 1)}
    figures = []
    if config.figure_examples:
        # One canvas of each digit count first, then more of the 5-digit ones.
        per = config.test_canvases
        examples = [i * per for i in range(4)] + [3 * per + j for j in range(1, per)]
        write_figure(run_dir / "attention.png", test, tokens, attention, examples[:config.figure_examples])
        figures.append("attention.png")
    if attention is not None:
        result["attention_on_named_digit"] = attention_on_digit(test, tokens, attention)
    result["figures"] = figures
    write_json_atomic(run_dir / "result.json", result)
    rows = {f"{k} digits": {"exact": round(m["exact_match"], 4), "token acc": round(m["token_accuracy"], 4),
                            "bleu4": None if m["bleu4"] is None else round(m["bleu4"], 4)}
            for k, m in result["test"].items()}
    cli.print_table({name: json.dumps(values) for name, values in rows.items()},
                    title=f"test ({config.decoder}, best step {best['step']}, {train_seconds:.0f} s training)")
    if "attention_on_named_digit" in result:
        print(f"attention centre on the named digit: {result['attention_on_named_digit']:.4f}")
    print(f"run directory: {run_dir} (config.json, metrics.jsonl, result.json{', ' if figures else ''}"
          f"{', '.join(figures)})")
    return result


def validate(config: Config) -> None:
    """Raises a ValueError naming the first invalid field, before any data loads or any file is written."""
    cli.check_directory("data_dir", config.data_dir)
    cli.check_run_dir(config.run_dir)
    Captioner(config).decoder  # sizes


def parse_config(argv=None) -> Config:
    return parse_config_flags(Config, argv, __doc__.split("\n\n")[0], presets=PRESETS, quick=QUICK,
                              validate=validate, exit_on_error=True,
                              choices={"decoder": DECODERS, "mode": rnnjax.CELL_MODES}, run_flags=("overwrite",))


def main(argv=None):
    return cli.run_main(argv, parse_config, train, trains=False)


if __name__ == "__main__":
    main()
