"""Neural machine translation with recurrent encoder-decoders: Sutskever, Cho and Bahdanau models on Multi30k.

    python -m experiments.translation                     # offline: CLDR dates de -> en (Babel), about 2-4 min
    python -m experiments.translation --quick             # tiny sizes, one epoch (the test suite's smoke run)
    python -m experiments.translation --preset bahdanau --data-dir ../shared/data        # Multi30k de -> en
    python -m experiments.translation --preset bahdanau --src en --tgt de --data-dir ../shared/data

Pipeline: parallel text (`experiments.translation.data`: Multi30k task 1, sha256-verified, any direction among
en/de/fr; or CLDR's localised dates) -> tokeniser and vocabulary per side, from the training split only
(`experiments.translation.tokenisation`: Moses words, lower-cased with a minimum count, or a SentencePiece BPE)
-> length-bucketed batches (`experiments.translation.batching`) -> `rnnjax.models.Seq2Seq` trained with
teacher forcing (optionally scheduled sampling and label smoothing) by `rnnjax.train.fit` (Adam, global-norm
clip) -> after every epoch the validation split is scored (teacher-forced loss and perplexity; with
`--select-on bleu` also greedy-decoded sacreBLEU), and the best epoch's parameters (on validation only; kept by
`fit` in run_dir/best, so a resumed run keeps the uninterrupted run's choice) decode every test split once
(`greedy_decode`, or `beam_search` with `--beam-size` > 1).

Reported per test split: sacreBLEU on the detokenised output with its signature; the tokenised lower-cased BLEU
of the reference tutorials (`experiments.translation.metrics`); perplexity per target token (`<eos>` included,
label smoothing never applied to it), teacher-forced and free-running (the decoder reading its own argmax tokens,
as the tutorials measure it: `free_running_nll`); example translations, and their attention matrices as a
heat-map PNG (`attention.png`, source tokens along x). The run directory also holds the config, metrics.jsonl,
each split's translations (`translations.<split>.txt`), the vocabularies and `summary.json`. Every run prints its
full config and is bit-for-bit repeatable on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from experiments import cli
from experiments.cli import parse_config_flags
from experiments.translation import batching, metrics, plots
from experiments.translation import data as translation_data
from experiments.translation.tokenisation import BOS, EOS, TOKENIZERS, MosesTokenizer, Vocabulary, make_tokenizer
from rnnjax import _checks
from rnnjax.models import decoding
from rnnjax.models.decoder import ATTENTION_STYLES
from rnnjax.models.seq2seq import SAMPLED_TOKENS, SAMPLING_COINS, Seq2Seq, sequence_loss
from rnnjax.train.run_files import write_text_atomic

DATASETS = ("cldr_dates", "multi30k")
ATTENTIONS = ("none", "additive", "dot", "general")
BRIDGES = ("tanh_backward", "projection", "final")
SELECT_ON = ("loss", "free_running_loss", "bleu")
# select_on -> the validation metric and direction fit keeps the best epoch by (TrainerConfig.best_metric, best_mode);
# the free-running perplexity is exp of the free-running loss, so it picks the same epoch
SELECTED_METRIC = {"loss": ("valid_loss", "min"), "free_running_loss": ("valid_free_running_perplexity", "min"),
                   "bleu": ("valid_sacrebleu", "max")}
INITS = ("default", "normal")


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "cldr_dates"  # "cldr_dates" (offline: CLDR's dates via Babel) | "multi30k"
    src: str = "de"  # source language (Multi30k: en | de | fr; cldr_dates: any CLDR locale)
    tgt: str = "en"  # target language
    data_dir: str = ""  # Multi30k's files (or shared/data above them); empty: download-and-verify into the cache
    test_splits: str = "test_2016"  # comma-separated Multi30k splits scored at the end (cldr_dates: its test)
    max_train_pairs: int = 0  # train on the first N pairs only (0: all)
    cldr_train_pairs: int = 6000  # cldr_dates: distinct dates in its training split
    cldr_eval_pairs: int = 400  # cldr_dates: distinct dates in each of its val and test splits
    tokenizer: str = "moses"  # "moses" (words) | "bpe" (SentencePiece BPE trained on the training split)
    lowercase: bool = True  # lower-case before tokenising (the reference tutorials do); sacreBLEU then ignores case
    min_freq: int = 1  # training-split count below which a token becomes <unk> (the tutorials use 2)
    bpe_vocab_size: int = 8000  # pieces per language for --tokenizer bpe
    encoder_cell: str = "gru"  # "lstm" | "gru" | "rnn_tanh" | ... (rnnjax.make_cell names)
    decoder_cell: str = "gru"  # the decoder's cell
    bidirectional: bool = True  # bidirectional encoder
    num_layers: int = 1  # stacked recurrent levels in the encoder and in the decoder
    embedding_size: int = 32  # token embedding width (both sides)
    hidden_size: int = 64  # encoder units per direction, and the decoder's units
    attention: str = "additive"  # "none" | "additive" (Bahdanau) | "dot" | "general" (Luong)
    attention_style: str = "luong"  # "luong" (attend after the step, feed h~ back) | "bahdanau" (attend before it)
    attention_size: int = 0  # the additive attention's hidden size (0: the memory's, 2 * hidden_size if bidirectional)
    bridge: str = "tanh_backward"  # decoder's initial state: "tanh_backward" | "projection" | "final"
    context_every_step: bool = False  # feed the encoder's final state to every decoder step and output (Cho 2014)
    dropout_rate: float = 0.1  # on the embeddings (and between stacked levels)
    label_smoothing: float = 0.0  # training loss only: mass spread uniformly over the target vocabulary
    sampling_probability: float = 0.0  # scheduled sampling: feed the model's own previous token with this probability
    sampled_token: str = "sample"  # scheduled sampling's token: "sample" (from the softmax) | "argmax" (the tutorials')
    sampling_coin: str = "example"  # its coin: "example" (per example and step) | "batch" (per step: the tutorials')
    init: str = "default"  # "default" (each layer's, PyTorch's) | "normal" (weights N(0, 0.01), biases 0: tutorial 3)
    batch_size: int = 64  # pairs per batch (short batches are padded with empty rows)
    num_buckets: int = 2  # length buckets: at most this many compiled train shapes (each compiles for ~30 s)
    epochs: int = 12  # passes over the training split; the best validation epoch is kept
    optimizer: str = "adam"  # "adam" | "adamw" | "sgd"
    learning_rate: float = 3e-3  # constant rate
    max_grad_norm: float = 1.0  # global-norm clip (the tutorials clip at 1)
    select_on: str = "loss"  # keep the epoch with the best validation "loss" (teacher-forced), "free_running_loss"
    # (the decoder reading its own argmax tokens: the tutorials' choice) or greedy-decoded sacreBLEU ("bleu")
    beam_size: int = 1  # 1: greedy decoding; > 1: beam search of that width
    length_penalty: float = 1.0  # beam search: scores divided by length ** length_penalty (0: raw log-probability)
    max_decode_length: int = 0  # output tokens at most, <eos> included (0: longest training target + 10)
    examples: int = 3  # test translations printed and drawn with their attention
    seed: int = 0  # PRNG seed (init, dropout, sampling, shuffling)
    run_dir: str = "runs/translation"  # output directory
    log_every: int = 50  # steps between train metric lines
    quiet: bool = False  # no progress bar
    compilation_cache: bool = True  # persistent XLA cache in cache_dir()/jax: a second run skips recompiling


# bentrevett/pytorch-seq2seq (Multi30k de->en, test_2016, spaCy words lower-cased, min count 2, Adam 1e-3, clip 1,
# batch 128, teacher forcing 0.5 = sampling probability 0.5, dropout 0.5, 10 epochs, best validation loss kept,
# greedy decoding of at most 25 tokens).
_TUTORIAL = dict(dataset="multi30k", src="de", tgt="en", data_dir="", tokenizer="moses", lowercase=True, min_freq=2,
                 embedding_size=256, hidden_size=512, dropout_rate=0.5, sampling_probability=0.5, batch_size=128,
                 epochs=10, learning_rate=1e-3, max_grad_norm=1.0, select_on="loss", beam_size=1,
                 max_decode_length=25, num_buckets=4)
PRESETS = {
    # Tutorial 1, Sutskever et al. 2014: 2-layer LSTM encoder and decoder, final states passed over (13.76 / 43.8).
    "sutskever": dict(_TUTORIAL, encoder_cell="lstm", decoder_cell="lstm", bidirectional=False, num_layers=2,
                      attention="none", bridge="final"),
    # Tutorial 2, Cho et al. 2014: GRU, the encoder's final state as context at every decoder step (20.61 / 37.5).
    "cho": dict(_TUTORIAL, encoder_cell="gru", decoder_cell="gru", bidirectional=False, num_layers=1,
                attention="none", bridge="final", context_every_step=True),
    # Tutorial 3, Bahdanau et al. 2015: bi-GRU encoder, tanh(W [h_fwd; h_bwd]) bridge, additive attention 512 wide
    # queried with the previous decoder state, its context into the GRU's input and into the output layer with the
    # embedding (28.30 / 25.6); also its training and selection: teacher forcing 0.5 as one coin per step with the
    # argmax token, weights N(0, 0.01) and zero biases, the epoch with the best free-running validation loss.
    "bahdanau": dict(_TUTORIAL, encoder_cell="gru", decoder_cell="gru", bidirectional=True, num_layers=1,
                     attention="additive", attention_style="bahdanau", attention_size=512, bridge="projection",
                     sampled_token="argmax", sampling_coin="batch", init="normal", select_on="free_running_loss"),
}
# What fits this project's shared 2-core CPU: a quarter of the width, teacher forcing only (scheduled sampling runs
# the decoder step by step, output layer and sampling inside a lax.scan: 4-30 s per step here at width 256), less
# dropout for the smaller model, Adam 2e-3, 5 epochs (measured 2.4 s per step with the machine shared: 45 min).
PRESETS["bahdanau-small"] = dict(PRESETS["bahdanau"], embedding_size=128, hidden_size=128, dropout_rate=0.3,
                                 sampling_probability=0.0, learning_rate=2e-3, epochs=5, attention_style="luong",
                                 attention_size=0, sampled_token="sample", sampling_coin="example", init="default",
                                 select_on="loss")
QUICK = dict(dataset="cldr_dates", cldr_train_pairs=96, cldr_eval_pairs=32, embedding_size=8, hidden_size=8,
             epochs=1, batch_size=32, num_buckets=1, examples=2, log_every=10)


def make_model(config: Config, source_vocab_size: int, target_vocab_size: int) -> Seq2Seq:
    return Seq2Seq(
        src_vocab_size=source_vocab_size, tgt_vocab_size=target_vocab_size, embed_size=config.embedding_size,
        hidden_size=config.hidden_size, encoder_mode=config.encoder_cell, decoder_mode=config.decoder_cell,
        num_layers=config.num_layers, bidirectional=config.bidirectional,
        attention=None if config.attention == "none" else config.attention,
        attention_size=config.attention_size or None, attention_style=config.attention_style, bridge=config.bridge,
        context_every_step=config.context_every_step, dropout_rate=config.dropout_rate)


def init_params(model: Seq2Seq, key: jax.Array, init: str) -> dict:
    """`model.init(key)`, or with `init` "normal" tutorial 3's `init_weights`: every array named `bias*` zero, every
    other one (embeddings, weights, the attention's `v`) drawn from N(0, 0.01)."""
    params = model.init(key)
    if init == "default":
        return params
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(paths))
    leaves = []
    for (path, leaf), leaf_key in zip(paths, keys):
        last = path[-1]
        name = str(getattr(last, "key", getattr(last, "name", "")))
        leaves.append(jnp.zeros_like(leaf) if name.startswith("bias")
                      else 0.01 * jax.random.normal(leaf_key, leaf.shape, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def make_loss_fn(model: Seq2Seq, label_smoothing: float, sampling_probability: float,
                 sampled_token: str = "sample", sampling_coin: str = "example"):
    """The engine's loss function: the label-smoothed cross-entropy per target token (`sequence_loss`); metric
    `token_loss`, the unsmoothed one, whose exp is the training perplexity the engine logs."""

    def loss_fn(params, carry, batch, key):
        logits, _ = model.apply(params, batch["src"], batch["src_lengths"], batch["tgt_in"], batch["tgt_lengths"],
                                key=key, train=key is not None, sampling_probability=sampling_probability,
                                sampled_token=sampled_token, sampling_coin=sampling_coin)
        loss = sequence_loss(logits, batch["tgt_out"], batch["tgt_lengths"], label_smoothing=label_smoothing)
        token_loss = sequence_loss(logits, batch["tgt_out"], batch["tgt_lengths"]) if label_smoothing else loss
        return loss, (carry, {"token_loss": token_loss})

    return loss_fn


@functools.partial(jax.jit, static_argnums=0)
def _nll_sums(model, params, batch):
    logits, _ = model.apply(params, batch["src"], batch["src_lengths"], batch["tgt_in"], batch["tgt_lengths"])
    count = jnp.sum(batch["tgt_lengths"])
    return sequence_loss(logits, batch["tgt_out"], batch["tgt_lengths"]) * count, count


def teacher_forced_nll(model, params, batches) -> tuple[float, int]:
    """`(summed negative log-likelihood, target tokens)` of `batches`, teacher-forced, no dropout."""
    total, tokens = 0.0, 0
    for batch in batches:
        nll_sum, count = _nll_sums(model, params, {k: jnp.asarray(v) for k, v in batch.items() if k != "index"})
        total += float(nll_sum)
        tokens += int(count)
    return total, tokens


@functools.partial(jax.jit, static_argnums=0)
def _free_running_sums(model, params, batch):
    state = model.init_state(params, batch["src"], batch["src_lengths"])
    targets = batch["tgt_out"]

    def body(loop, t):
        state, previous = loop
        state, logits, _ = model.step(params, state, previous)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(log_probs, targets[:, t][:, None], axis=-1)[:, 0]
        return (state, jnp.argmax(logits, axis=-1).astype(jnp.int32)), nll

    bos = jnp.full((targets.shape[0],), BOS, jnp.int32)
    _, nll = jax.lax.scan(body, (state, bos), jnp.arange(targets.shape[1]))
    mask = jnp.arange(targets.shape[1])[:, None] < batch["tgt_lengths"][None, :]
    return jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(batch["tgt_lengths"])


def free_running_nll(model, params, batches) -> tuple[float, int]:
    """`(summed negative log-likelihood of the reference tokens, tokens)` when the decoder reads its own greedy
    (argmax) token at every step instead of the reference's: the "perplexity" bentrevett/pytorch-seq2seq reports
    (its `evaluate_fn` runs the model with teacher forcing ratio 0). Higher than the teacher-forced perplexity: one
    wrong word shifts the rest of the sentence against the reference."""
    total, tokens = 0.0, 0
    for batch in batches:
        nll_sum, count = _free_running_sums(model, params, {k: jnp.asarray(v) for k, v in batch.items()
                                                            if k != "index"})
        total += float(nll_sum)
        tokens += int(count)
    return total, tokens


def translate(model, params, sources: list[list[int]], *, batch_size: int, boundaries, max_length: int,
              beam_size: int = 1, length_penalty: float = 1.0) -> list[list[int]]:
    """The output ids (`<eos>` left out) for every source id list, in input order: `greedy_decode`, or
    `beam_search` when `beam_size` > 1."""
    outputs: list = [None] * len(sources)
    for batch in batching.pair_batches(sources, [[] for _ in sources], batch_size=batch_size, boundaries=boundaries):
        src, src_lengths = jnp.asarray(batch["src"]), jnp.asarray(batch["src_lengths"])
        if beam_size == 1:
            tokens, lengths, _ = decoding.greedy_decode(model, params, src, src_lengths, bos_id=BOS, eos_id=EOS,
                                                        max_length=max_length)
        else:
            tokens, lengths, _ = decoding.beam_search(model, params, src, src_lengths, beam_size=beam_size,
                                                      bos_id=BOS, eos_id=EOS, max_length=max_length,
                                                      length_penalty=length_penalty)
        tokens, lengths = np.asarray(tokens), np.asarray(lengths)
        for row, index in enumerate(batch["index"]):
            if index >= 0:
                outputs[index] = [int(t) for t in tokens[row, :int(lengths[row])]]
    return outputs


def output_attention(model, params, sources: list[list[int]], outputs: list[list[int]]) -> list[np.ndarray] | None:
    """Per pair, the attention `[len(output) + 1, len(source) + 1]` (`<eos>` on both sides) the decoder pays while
    producing `output` from `source`: the outputs fed back teacher-forced (one padded batch), which gives exactly
    the weights of the decoding that chose them (greedy, or the beam's winner); None without attention."""
    width = max(len(s) for s in sources) + 1
    steps = max(len(o) for o in outputs) + 1
    src = np.zeros((len(sources), width), np.int32)
    tgt_in = np.zeros((len(sources), steps), np.int32)
    for row, (source, output) in enumerate(zip(sources, outputs)):
        src[row, :len(source) + 1] = list(source) + [EOS]
        tgt_in[row, :len(output) + 1] = [BOS] + list(output)
    src_lengths = np.array([len(s) + 1 for s in sources], np.int32)
    tgt_lengths = np.array([len(o) + 1 for o in outputs], np.int32)
    _, weights = model.apply(params, jnp.asarray(src), jnp.asarray(src_lengths), jnp.asarray(tgt_in),
                             jnp.asarray(tgt_lengths))
    if weights is None:
        return None
    weights = np.asarray(weights)
    return [weights[row, :tgt_lengths[row], :src_lengths[row]] for row in range(len(sources))]


def decode_boundaries(sources: list[list[int]], num_buckets: int) -> tuple[int, ...]:
    return batching.pair_boundaries(sources, [[] for _ in sources], num_buckets)


def load_data(config: Config) -> tuple[dict, list[str], dict]:
    """`(splits, test split names, record)`: every split needed, `train` and `val` included."""
    if config.dataset == "cldr_dates":
        sizes = {"train": config.cldr_train_pairs, "val": config.cldr_eval_pairs, "test": config.cldr_eval_pairs}
        splits = translation_data.cldr_dates(config.src, config.tgt, sizes, seed=0)
        return splits, ["test"], {"name": "cldr_dates", "sizes": sizes, **translation_data.cldr_record()}
    tests = [translation_data.canonical_split(s.strip()) for s in config.test_splits.split(",") if s.strip()]
    names = list(dict.fromkeys(["train", "val", *tests]))
    splits = translation_data.load_multi30k(config.src, config.tgt, names, config.data_dir or None)
    record = {"name": "multi30k", "commit": translation_data.MULTI30K_COMMIT,
              "files": translation_data.files_record(config.src, config.tgt, names),
              "citation": translation_data.CITATION}
    return splits, tests, record


def corpus_scores(hypotheses: list[str], references: list[str], language: str, lowercase: bool) -> dict:
    """sacreBLEU (with its signature) and the tutorials' tokenised lower-cased BLEU of detokenised hypotheses."""
    sacre, signature = metrics.sacre_bleu(hypotheses, references, lowercase=lowercase)
    words = MosesTokenizer(language, lowercase=True)
    tokenised = metrics.tokenised_bleu([words.tokenize(h) for h in hypotheses], [words.tokenize(r) for r in references])
    return {"sacrebleu": round(sacre, 2), "sacrebleu_signature": signature,
            "tokenised_bleu": round(100 * tokenised["bleu"], 2),
            "tokenised_bleu_detail": {k: v for k, v in tokenised.items() if k != "bleu"}}


def train(config: Config) -> dict:
    started = time.perf_counter()
    splits, test_names, record = load_data(config)
    train_split = splits["train"].head(config.max_train_pairs) if config.max_train_pairs else splits["train"]
    run_dir = pathlib.Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizers = {side: make_tokenizer(config.tokenizer, language, config.lowercase, sentences, config.bpe_vocab_size)
                  for side, language, sentences in (("source", config.src, train_split.source),
                                                    ("target", config.tgt, train_split.target))}

    def tokenize(side, sentences):
        return [tokenizers[side].tokenize(s) for s in sentences]

    train_tokens = {"source": tokenize("source", train_split.source), "target": tokenize("target", train_split.target)}
    vocabularies = {side: Vocabulary.build(train_tokens[side], config.min_freq) for side in ("source", "target")}
    for side, vocabulary in vocabularies.items():
        vocabulary.save(run_dir / f"vocabulary.{side}.json")

    def encode(split):
        return ([vocabularies["source"].encode(t) for t in tokenize("source", split.source)],
                [vocabularies["target"].encode(t) for t in tokenize("target", split.target)])

    encoded = {"train": ([vocabularies["source"].encode(t) for t in train_tokens["source"]],
                         [vocabularies["target"].encode(t) for t in train_tokens["target"]])}
    for name in ["val", *test_names]:
        encoded[name] = encode(splits[name])
    # Buckets from the training pairs; the largest also covers the other splits (padding only, results unchanged).
    boundaries = batching.pair_boundaries(*encoded["train"], config.num_buckets)
    longest = max(batching.pair_length(s, t) for src, tgt in encoded.values() for s, t in zip(src, tgt))
    boundaries = boundaries[:-1] + (max(boundaries[-1], longest),)
    max_length = config.max_decode_length or max(len(t) for t in encoded["train"][1]) + 10
    model = make_model(config, len(vocabularies["source"]), len(vocabularies["target"]))
    init_key, state_key = jax.random.split(jax.random.key(config.seed))
    params = init_params(model, init_key, config.init)
    optimizer = rnnjax.train.make_optimizer(rnnjax.train.OptimizerConfig(
        optimizer=config.optimizer, learning_rate=config.learning_rate, max_grad_norm=config.max_grad_norm))
    state = rnnjax.train.create_train_state(params, optimizer, state_key)

    def epoch_batches(epoch):
        batches = batching.pair_batches(*encoded["train"], batch_size=config.batch_size, boundaries=boundaries,
                                        seed=[config.seed, epoch])
        return [{k: v for k, v in b.items() if k != "index"} for b in batches]

    eval_batches = {name: batching.pair_batches(*encoded[name], batch_size=config.batch_size, boundaries=boundaries)
                    for name in ["val", *test_names]}
    source_boundaries = {name: decode_boundaries(encoded[name][0], config.num_buckets)
                         for name in ["val", *test_names]}

    def decode_split(params, name, beam_size):
        outputs = translate(model, params, encoded[name][0], batch_size=config.batch_size,
                            boundaries=source_boundaries[name], max_length=max_length, beam_size=beam_size,
                            length_penalty=config.length_penalty)
        hypotheses = [tokenizers["target"].detokenize(vocabularies["target"].decode(ids)) for ids in outputs]
        return outputs, hypotheses

    def evaluate(params):
        nll, tokens = teacher_forced_nll(model, params, eval_batches["val"])
        # "valid_" names, so the run files' plots put the validation loss on the training token_loss curve.
        scores = {"valid_loss": nll / tokens, "valid_perplexity": metrics.perplexity(nll, tokens)}
        if config.select_on == "bleu":
            _, hypotheses = decode_split(params, "val", 1)
            scores["valid_sacrebleu"] = metrics.sacre_bleu(hypotheses, splits["val"].target, config.lowercase)[0]
        elif config.select_on == "free_running_loss":
            free_nll, _ = free_running_nll(model, params, eval_batches["val"])
            scores["valid_free_running_perplexity"] = metrics.perplexity(free_nll, tokens)
        return scores

    steps_per_epoch = len(epoch_batches(0))
    run_config = {"config": dataclasses.asdict(config), "dataset": record,
                  "tokenizers": {side: t.record() for side, t in tokenizers.items()},
                  "vocabulary": {side: {"size": len(v), "fingerprint": v.fingerprint}
                                 for side, v in vocabularies.items()},
                  "bucket_boundaries": list(boundaries), "max_decode_length": max_length,
                  "train_pairs": len(train_split), "parameters": int(sum(x.size for x in jax.tree.leaves(params)))}
    print(json.dumps({"data": run_config["vocabulary"], "train_pairs": len(train_split),
                      "parameters": run_config["parameters"], "steps_per_epoch": steps_per_epoch,
                      "bucket_boundaries": list(boundaries)}))
    trainer = rnnjax.train.TrainerConfig(run_dir=str(run_dir.absolute()), num_epochs=config.epochs,
                                         log_every=config.log_every, keep_checkpoints=1, quiet=config.quiet,
                                         checkpoint_every=steps_per_epoch * config.epochs + 1, perplexity=True,
                                         best_metric=SELECTED_METRIC[config.select_on][0],
                                         best_mode=SELECTED_METRIC[config.select_on][1])  # ties: the earlier epoch
    train_started = time.perf_counter()
    train_step = rnnjax.train.train_step_fn(make_loss_fn(model, config.label_smoothing, config.sampling_probability,
                                                          config.sampled_token, config.sampling_coin),
                                            optimizer)
    # cli.fit applies --resume/--overwrite/--tensorboard/--csv; every checkpoint records the best epoch so far, so a
    # resumed run chooses among all the epochs, those of the interrupted process included.
    state, fit_summary = cli.fit(trainer, state, train_step, epoch_batches, evaluate=evaluate,
                                 run_config=run_config, steps_per_epoch=steps_per_epoch)
    if fit_summary["best"] is None:  # no epoch scored a finite value: the final parameters
        best = {"epoch": config.epochs - 1, "params": jax.device_get(state.params)}
    else:
        best = {"epoch": fit_summary["best"]["epoch"],
                "params": rnnjax.train.load_best(run_dir.absolute(), state.params)[0]}
    train_seconds = time.perf_counter() - train_started
    decoder = "greedy" if config.beam_size == 1 else f"beam {config.beam_size}, length penalty {config.length_penalty}"
    results = {}
    written = {"summary.json": True, "attention.png": False, "translations.*.txt": True}  # the final line's list
    for name in test_names:
        nll, tokens = teacher_forced_nll(model, best["params"], eval_batches[name])
        outputs, hypotheses = decode_split(best["params"], name, config.beam_size)
        write_text_atomic(run_dir / f"translations.{name}.txt", "\n".join(hypotheses) + "\n")
        free_nll, _ = free_running_nll(model, best["params"], eval_batches[name])
        results[name] = {"perplexity": round(metrics.perplexity(nll, tokens), 2), "target_tokens": tokens,
                         "free_running_perplexity": round(metrics.perplexity(free_nll, tokens), 2),
                         "decoder": decoder,
                         **corpus_scores(hypotheses, list(splits[name].target), config.tgt, config.lowercase)}
        if name == test_names[0]:
            count = min(config.examples, len(outputs))
            sources, chosen = encoded[name][0][:count], outputs[:count]
            weights = output_attention(model, best["params"], sources, chosen) if count else None
            examples = []
            for index in range(count):
                example = {"source_text": splits[name].source[index], "reference": splits[name].target[index],
                           "output_text": hypotheses[index],
                           "source": [vocabularies["source"].tokens[i] for i in sources[index]] + ["<eos>"],
                           "output": [vocabularies["target"].tokens[i] for i in chosen[index]] + ["<eos>"]}
                if weights is not None:
                    example["attention"] = weights[index]
                examples.append(example)
            results[name]["examples"] = [{k: v for k, v in e.items() if k != "attention"} for e in examples]
            if examples and "attention" in examples[0]:
                written["attention.png"] = True
                plots.plot_attention(examples, run_dir / "attention.png",
                                     f"{record['name']} {name} {config.src}->{config.tgt}: attention of "
                                     f"{decoder} output (epoch {best['epoch']})")
    summary = {"config": dataclasses.asdict(config), "dataset": record, "best_epoch": best["epoch"],
               "select_on": config.select_on, "train_seconds": round(train_seconds, 1),
               "wall_seconds": round(time.perf_counter() - started, 1), "steps": fit_summary["steps"],
               "parameters": run_config["parameters"], "vocabulary": run_config["vocabulary"], "test": results}
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    for name, result in results.items():
        print(f"{name} ({decoder}, epoch {best['epoch']}): sacreBLEU {result['sacrebleu']:.2f} "
              f"[{result['sacrebleu_signature']}], tokenised lower-cased BLEU {result['tokenised_bleu']:.2f}, "
              f"perplexity {result['perplexity']:.2f} teacher-forced (free-running, the tutorials' protocol: "
              f"{result['free_running_perplexity']:.2f})")
        for example in result.get("examples", ()):
            print(f"  source:    {example['source_text']}\n  reference: {example['reference']}\n"
                  f"  output:    {example['output_text']}")
    print(f"train {train_seconds:.0f} s, total {summary['wall_seconds']:.0f} s; run directory: {run_dir} "
          f"({', '.join(name for name, done in written.items() if done)})")
    return summary


def validate(config: Config) -> None:
    """Raises a ValueError naming the first invalid field of `config`, before any data loads or file is written."""
    _checks.check_choice("dataset", config.dataset, DATASETS)
    _checks.check_choice("tokenizer", config.tokenizer, TOKENIZERS)
    _checks.check_choice("attention", config.attention, ATTENTIONS)
    _checks.check_choice("bridge", config.bridge, BRIDGES)
    _checks.check_choice("select_on", config.select_on, SELECT_ON)
    _checks.check_choice("sampled_token", config.sampled_token, SAMPLED_TOKENS)
    _checks.check_choice("sampling_coin", config.sampling_coin, SAMPLING_COINS)
    _checks.check_choice("init", config.init, INITS)
    _checks.check_choice("encoder_cell", config.encoder_cell, rnnjax.CELL_MODES)
    _checks.check_choice("decoder_cell", config.decoder_cell, rnnjax.CELL_MODES)
    for name in ("embedding_size", "hidden_size", "num_layers"):
        _checks.check_positive_int(name, getattr(config, name))
    _checks.check_rate("dropout_rate", config.dropout_rate)
    if config.attention == "dot" and config.bidirectional:
        raise ValueError("attention 'dot' scores q . k, so the memory (2 x hidden_size for a bidirectional encoder) "
                         "must be as wide as the decoder (hidden_size): pass --no-bidirectional, or attention "
                         "'general' or 'additive'")
    if config.bridge == "final" and config.encoder_cell != config.decoder_cell:
        raise ValueError(f"bridge 'final' copies the encoder's state, so encoder_cell and decoder_cell must match, "
                         f"got {config.encoder_cell!r} and {config.decoder_cell!r}")
    if config.dataset == "multi30k":
        for role, language in (("src", config.src), ("tgt", config.tgt)):
            if language not in translation_data.MULTI30K_LANGUAGES:
                raise ValueError(f"{role} must be one of {', '.join(translation_data.MULTI30K_LANGUAGES)} for "
                                 f"Multi30k, got {language!r}")
        splits = [s.strip() for s in config.test_splits.split(",") if s.strip()]
        if not splits:
            raise ValueError(f"test_splits must name at least one split, got {config.test_splits!r}")
        for split in splits:
            try:
                translation_data.canonical_split(split)
            except ValueError as error:
                raise ValueError(f"test_splits: {error}") from None
    else:
        translation_data.check_locale("src", config.src)
        translation_data.check_locale("tgt", config.tgt)
    if config.src == config.tgt:
        raise ValueError(f"src and tgt are both {config.src!r}; translation needs two languages")
    cli.check_directory("data_dir", config.data_dir)
    for name in ("cldr_train_pairs", "cldr_eval_pairs", "min_freq", "bpe_vocab_size", "batch_size", "num_buckets",
                 "epochs", "beam_size", "log_every"):
        _checks.check_positive_int(name, getattr(config, name))
    for name in ("max_train_pairs", "attention_size", "max_decode_length", "examples", "seed"):
        _checks.check_nonnegative_int(name, getattr(config, name))
    for name in ("label_smoothing", "sampling_probability"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(config, name)}")
    _checks.check_finite_float("length_penalty", config.length_penalty)
    make_model(config, 8, 8)  # cells, sizes, attention, bridge and rates, in the config's own field names
    rnnjax.train.OptimizerConfig(optimizer=config.optimizer, learning_rate=config.learning_rate,
                                 max_grad_norm=config.max_grad_norm)
    cli.check_run_dir(config.run_dir)


def parse_config(argv=None) -> Config:
    """A `Config` from a preset, `--quick` and `--field value` flags, validated (`validate`); a bad value exits with
    status 2 and one line naming its flag."""
    return parse_config_flags(Config, argv, __doc__.split("\n\n")[0], presets=PRESETS, quick=QUICK,
                              validate=validate, exit_on_error=True, run_flags=True,
                              choices={"dataset": DATASETS, "tokenizer": TOKENIZERS, "attention": ATTENTIONS,
                                       "attention_style": ATTENTION_STYLES,
                                       "bridge": BRIDGES, "select_on": SELECT_ON, "init": INITS,
                                       "sampled_token": SAMPLED_TOKENS, "sampling_coin": SAMPLING_COINS,
                                       "encoder_cell": rnnjax.CELL_MODES, "decoder_cell": rnnjax.CELL_MODES})


def main(argv=None):
    return cli.run_main(argv, parse_config, _cached_train)


def _cached_train(config: Config):
    if config.compilation_cache:
        cli.use_compilation_cache()
    return train(config)


if __name__ == "__main__":
    main()
