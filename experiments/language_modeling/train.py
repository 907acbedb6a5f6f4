"""Language modeling, char and word level: train, evaluate with carried state, and sample.

    python -m experiments.language_modeling                         # char LM, embedded pydoc corpus, ~3 min
    python -m experiments.language_modeling --preset zaremba-small --data-dir ../shared/data/ptb
    python -m experiments.language_modeling --preset char-shakespeare --data-dir ../shared/data/tinyshakespeare
    python -m experiments.language_modeling sample --run runs/lm --prime "The " --length 200 --temperature 0.8

Training follows Zaremba et al. (2014) where a preset says so: stream batching into [batch, N] rows cut into
`num_steps` windows with the carry passed between windows (truncated BPTT, reset every epoch), loss = sum over the
unrolled steps of the batch-mean cross-entropy, plain SGD with the epoch step-decay schedule, a global-norm clip,
every weight U(-init_scale, init_scale). Validation carries state across windows; the test set is read with
batch 1 (the TensorFlow reproduction's protocol) and carried state. Every run prints its full config, takes a seed
and is bit-for-bit repeatable on CPU; the run directory holds config, vocabulary, metrics, plots and checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from experiments import cli, text
from experiments.cli import parse_config_flags
from experiments.language_modeling.corpora import CORPORA, load_corpus
from rnnjax import _checks
from rnnjax.train.run_files import write_json_atomic


@dataclasses.dataclass(frozen=True)
class Config:
    corpus: str = "pydoc"  # "pydoc" (embedded, no download) | "tinyshakespeare" | "ptb" | "enwik8" | "text8"
    level: str = "char"  # "char" | "word" (PTB convention: <eos> per line, <unk>)
    data_dir: str = ""  # local copies of the corpus files; empty: download-and-verify into the cache
    mode: str = "lstm"  # "lstm" | "gru" | "rnn_tanh" | "rnn_relu" | "mingru" | "minlstm"
    num_layers: int = 2  # stacked recurrent layers
    hidden_size: int = 256  # units per layer
    embedding_size: int = 256  # token embedding width
    dropout_rate: float = 0.0  # Zaremba placement: embedding output, between layers, before the softmax
    tie_weights: bool = False  # share embedding and softmax weights (needs embedding_size == hidden_size)
    init_scale: float = 0.1  # every weight U(-init_scale, init_scale)
    batch_size: int = 32  # stream rows
    num_steps: int = 64  # truncated-BPTT window
    epochs: int = 2  # passes over the training stream
    max_steps_per_epoch: int = 0  # cap on windows per epoch (0: the whole stream)
    optimizer: str = "adam"  # "sgd" | "adam" | "adamw"
    learning_rate: float = 2e-3  # peak learning rate
    schedule: str = "constant"  # "constant" | "step_decay" (Zaremba) | "cosine"
    decay_start_epoch: int = 1  # step_decay: epochs at the full rate (Zaremba's max_epoch)
    decay_factor: float = 0.5  # step_decay: factor per epoch afterwards (Zaremba's lr_decay)
    max_grad_norm: float = 5.0  # clip_by_global_norm
    sum_loss_over_steps: bool = False  # Zaremba's loss scale: sum over steps of the batch-mean cross-entropy
    eval_num_steps: int = 100  # evaluation window (with carried state any window gives the same result)
    log_every: int = 50  # steps between metric lines
    seed: int = 0  # PRNG seed
    run_dir: str = "runs/lm"  # output directory
    resume: bool = False  # continue the run in run_dir from its newest checkpoint
    quiet: bool = False  # no progress bar
    sample_length: int = 300  # tokens sampled at the end of training
    temperature: float = 0.8  # sampling temperature
    top_k: int = 0  # sample among the k most likely tokens (0: all)


# Published hyper-parameters (Zaremba et al. 2014, and their TensorFlow reproduction `ptb_word_lm.py`).
PRESETS = {
    "zaremba-small": dict(corpus="ptb", level="word", num_layers=2, hidden_size=200, embedding_size=200,
                          init_scale=0.1, optimizer="sgd", learning_rate=1.0, schedule="step_decay",
                          decay_start_epoch=4, decay_factor=0.5, max_grad_norm=5.0, num_steps=20, batch_size=20,
                          epochs=13, dropout_rate=0.0, sum_loss_over_steps=True),
    "zaremba-medium": dict(corpus="ptb", level="word", num_layers=2, hidden_size=650, embedding_size=650,
                           init_scale=0.05, optimizer="sgd", learning_rate=1.0, schedule="step_decay",
                           decay_start_epoch=6, decay_factor=0.8, max_grad_norm=5.0, num_steps=35, batch_size=20,
                           epochs=39, dropout_rate=0.5, sum_loss_over_steps=True),
    "zaremba-large": dict(corpus="ptb", level="word", num_layers=2, hidden_size=1500, embedding_size=1500,
                          init_scale=0.04, optimizer="sgd", learning_rate=1.0, schedule="step_decay",
                          decay_start_epoch=14, decay_factor=1 / 1.15, max_grad_norm=10.0, num_steps=35,
                          batch_size=20, epochs=55, dropout_rate=0.65, sum_loss_over_steps=True),
    "char-shakespeare": dict(corpus="tinyshakespeare", level="char", num_layers=2, hidden_size=512,
                             embedding_size=128, dropout_rate=0.2, optimizer="adam", learning_rate=2e-3,
                             num_steps=100, batch_size=32, epochs=10, max_grad_norm=5.0),
}


QUICK = dict(hidden_size=16, embedding_size=8, num_layers=1, epochs=1, max_steps_per_epoch=4, batch_size=8,
             num_steps=16, log_every=2, sample_length=20, eval_num_steps=400, run_dir="runs/lm_quick")
SUBCOMMANDS = {"sample": "sample text from a finished run: sample --run DIR --prime TEXT --length N --temperature T"}


def tokenizer_for(level: str):
    return text.WordTokenizer() if level == "word" else text.CharTokenizer()


def build_data(config: Config):
    """Corpus -> vocabulary (training split only) -> id streams for train/valid/test."""
    corpus = load_corpus(config.corpus, config.data_dir or None)
    tokenizer = tokenizer_for(config.level)
    train_tokens = tokenizer.tokenize(corpus.train)
    # <unk> for both levels: valid/test may hold characters the training split never shows.
    vocabulary = text.Vocabulary.build(train_tokens, specials=(text.UNK,)
                                         if config.level == "char" else tokenizer.specials)
    streams = {
        "train": vocabulary.encode(train_tokens),
        "valid": vocabulary.encode(tokenizer.tokenize(corpus.valid)),
        "test": vocabulary.encode(tokenizer.tokenize(corpus.test)),
    }
    return corpus, vocabulary, streams


def make_model(config: Config, vocab_size: int) -> rnnjax.models.LanguageModel:
    return rnnjax.models.LanguageModel(vocab_size, config.embedding_size, config.hidden_size, config.num_layers,
                                config.mode, config.dropout_rate, config.tie_weights, config.init_scale)


def make_loss_fn(model: rnnjax.models.LanguageModel, sum_over_steps: bool):
    def loss_fn(params, carry, batch, key):
        logits, carry = model.apply(params, batch["inputs"], carry, key)
        summed, mean = rnnjax.models.zaremba_loss(logits, batch["targets"])
        accuracy = rnnjax.accuracy(logits, batch["targets"])
        return (summed if sum_over_steps else mean), (carry, {"token_loss": mean, "accuracy": accuracy})

    return loss_fn


def evaluate_stream(model, params, ids: np.ndarray, batch_size: int, num_steps: int) -> dict:
    """Mean token cross-entropy over the stream with state carried across windows (exact for any window size)."""
    data = text.batchify(ids, batch_size)
    carry = model.initial_carry(batch_size)
    total, count = 0.0, 0
    for inputs, targets in text.stream_windows(data, num_steps):
        carry, loss_sum = _eval_window(model, params, carry, inputs, targets)
        total += float(loss_sum)
        count += targets.size
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2)}


@functools.partial(jax.jit, static_argnums=0)  # module level: one compile per model and shape, not per evaluation
def _eval_window(model, params, carry, inputs, targets):
    logits, carry = model.apply(params, inputs, carry)
    return carry, rnnjax.cross_entropy(logits, targets) * targets.size


def make_optimizer(config: Config, steps_per_epoch: int):
    return rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(
        optimizer=config.optimizer, learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm,
        schedule=config.schedule, decay_start_epoch=config.decay_start_epoch, decay_factor=config.decay_factor,
        steps_per_epoch=max(1, steps_per_epoch)))


def train(config: Config) -> dict:
    corpus, vocabulary, streams = build_data(config)
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    vocabulary.save(run_dir / "vocabulary.json")
    model = make_model(config, len(vocabulary))
    steps_per_epoch = _steps_per_epoch(config, streams["train"])
    optimizer = make_optimizer(config, steps_per_epoch)
    init_key, state_key = jax.random.split(jax.random.key(config.seed))
    state = rnnjax.train.create_train_state(model.init(init_key), optimizer, state_key,
                                      carry=model.initial_carry(config.batch_size))
    train_data = text.batchify(streams["train"], config.batch_size)

    def train_batches(epoch):
        del epoch  # the stream is read in order every epoch, as in Zaremba et al.
        windows = text.stream_windows(train_data, config.num_steps)
        for index, (inputs, targets) in enumerate(windows):
            if index == steps_per_epoch:
                return
            yield {"inputs": inputs, "targets": targets}

    def evaluate(params):
        return {"valid_" + k: v for k, v in evaluate_stream(model, params, streams["valid"], config.batch_size,
                                                            config.eval_num_steps).items()}

    run_config = {"config": dataclasses.asdict(config), "corpus": corpus.record,
                  "vocabulary": {"size": len(vocabulary), "fingerprint": vocabulary.fingerprint}}
    trainer = rnnjax.train.TrainerConfig(run_dir=str(run_dir), num_epochs=config.epochs, log_every=config.log_every,
                                   checkpoint_every=max(steps_per_epoch, 1), quiet=config.quiet, perplexity=True)
    start = time.perf_counter()
    train_step = rnnjax.train.train_step_fn(make_loss_fn(model, config.sum_loss_over_steps), optimizer)
    state, summary = cli.fit(trainer, state, train_step, train_batches, evaluate=evaluate,
                                      initial_carry=lambda: model.initial_carry(config.batch_size),
                                      run_config=run_config, tokens_per_batch=config.batch_size * config.num_steps,
                                      resume=config.resume, steps_per_epoch=steps_per_epoch)
    test = evaluate_stream(model, state.params, streams["test"], 1, config.eval_num_steps)
    result = {"test_" + k: v for k, v in test.items()} | summary["valid"] | {
        "steps": summary["steps"], "train_seconds": round(time.perf_counter() - start, 1), "run_dir": str(run_dir)}
    write_json_atomic(run_dir / "result.json", result)
    if config.sample_length:
        sample_text = generate(model, state.params, vocabulary, tokenizer_for(config.level),
                               prime=_default_prime(corpus.valid, config.level), length=config.sample_length,
                               temperature=config.temperature, top_k=config.top_k or None, seed=config.seed)
        result["sample"] = sample_text
        print("--- sample ---\n" + sample_text + "\n--------------")
    cli.print_table({k: v for k, v in result.items() if k != "sample"}, title="result")
    print(f"run directory: {run_dir} (config.json, vocabulary.json, metrics.jsonl, plots/, checkpoints/)")
    return result


def _steps_per_epoch(config: Config, train_ids: np.ndarray) -> int:
    windows = text.num_windows(text.batchify(train_ids, config.batch_size), config.num_steps)
    return min(windows, config.max_steps_per_epoch) if config.max_steps_per_epoch else windows


def _default_prime(text: str, level: str) -> str:
    return " ".join(text.split()[:3]) + " " if level == "word" else text[:20]


def generate(model, params, vocabulary, tokenizer, prime: str, length: int, temperature: float, top_k, seed: int):
    """Prime text -> prime + `length` sampled tokens, detokenized. Unknown prime tokens are an error."""
    tokens = tokenizer.tokenize(prime)
    open_line = not prime.endswith("\n")
    if isinstance(tokenizer, text.WordTokenizer) and tokens and tokens[-1] == text.EOS and open_line:
        tokens = tokens[:-1]  # the word tokenizer closes every line; a prime is an open line
    unknown = sorted({token for token in tokens if token not in vocabulary})
    if unknown:
        raise ValueError(f"prime text has tokens not in the run's vocabulary: {unknown[:10]}")
    if not tokens:
        raise ValueError("prime text is empty; give at least one token")
    ids = jnp.asarray(vocabulary.encode(tokens))
    sampled = _sample(model, params, jax.random.key(seed), ids, length, temperature, top_k)
    return tokenizer.detokenize(tokens + vocabulary.decode(np.asarray(sampled)))


_sample = jax.jit(rnnjax.models.sample, static_argnums=(0, 4, 5, 6))


def sample_command(argv) -> str:
    parser = cli.OneLineParser(prog="python -m experiments.language_modeling sample", allow_abbrev=False)
    parser.add_argument("--run", required=True, help="a run directory written by training")
    parser.add_argument("--prime", default="The ")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:  # every value checked before the run is read, each error naming its flag
        _checks.check_positive_int("--length", args.length)
        _checks.check_positive_float("--temperature", args.temperature)
        _checks.check_nonnegative_int("--top-k", args.top_k)
        _checks.check_nonnegative_int("--seed", args.seed)
        if not (pathlib.Path(args.run) / "config.json").is_file():
            raise ValueError(f"--run {args.run!r} is not a run directory (it has no config.json)")
    except ValueError as error:
        parser.error(str(error))
    run_dir = pathlib.Path(args.run)
    saved = json.loads((run_dir / "config.json").read_text())["run"]
    config = Config(**saved["config"])
    vocabulary = text.Vocabulary.load(run_dir / "vocabulary.json")
    vocabulary.check_matches(saved["vocabulary"]["fingerprint"])
    model = make_model(config, len(vocabulary))
    template = model.init(jax.random.key(0))
    restored = rnnjax.train.CheckpointDirectory(run_dir / "checkpoints").restore_latest(
        _state_template(model, template, config))
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    sample_text = generate(model, restored[0].params, vocabulary, tokenizer_for(config.level), args.prime,
                           args.length, args.temperature, args.top_k or None, args.seed)
    print(sample_text)
    return sample_text


def _state_template(model, params, config: Config):
    optimizer = make_optimizer(config, 1)  # the schedule does not change the state's tree
    return rnnjax.train.create_train_state(params, optimizer, jax.random.key(0),
                                           carry=model.initial_carry(config.batch_size))


def validate(config: Config) -> None:
    """Raises a ValueError naming the first invalid field of `config`; run before any data loads or any file is
    written (the command line shows the field as its flag)."""
    _checks.check_choice("corpus", config.corpus, tuple(CORPORA))
    _checks.check_choice("level", config.level, ("char", "word"))
    cli.check_directory("data_dir", config.data_dir)
    for name in ("batch_size", "num_steps", "epochs", "eval_num_steps", "log_every"):
        _checks.check_positive_int(name, getattr(config, name))
    for name in ("max_steps_per_epoch", "sample_length", "top_k", "seed"):
        _checks.check_nonnegative_int(name, getattr(config, name))
    _checks.check_positive_float("temperature", config.temperature)
    make_model(config, 2)  # mode, sizes, dropout and tying, in the config's own field names
    make_optimizer(config, 1)  # optimizer, learning rate, schedule, decay and clip
    cli.check_run_dir(config.run_dir)


def parse_config(argv=None) -> Config:
    """A `Config` from a preset and `--field value` flags, validated (`validate`); a bad value exits with status 2
    and one line naming its flag."""
    return parse_config_flags(Config, argv, __doc__.split("\n\n")[0], presets=PRESETS, quick=QUICK,
                              validate=validate, exit_on_error=True, run_flags=True, subcommands=SUBCOMMANDS,
                              choices={"corpus": tuple(CORPORA), "level": ("char", "word")})


def main(argv=None):
    return cli.run_main(argv, parse_config, train, subcommands={"sample": sample_command})


if __name__ == "__main__":
    main()
