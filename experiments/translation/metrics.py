"""Translation metrics: sacreBLEU on detokenised text, the tokenised BLEU of the reference tutorials, perplexity.

- `sacre_bleu(hypotheses, references, lowercase)` -> `(score, signature)`: sacreBLEU's corpus BLEU of detokenised
  sentences against the raw references (its own 13a tokenisation, exponential smoothing), and the signature
  string that says exactly how (`nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`). Rows with
  different signatures are not comparable.
- `tokenised_bleu(hypotheses, references)` over token lists: corpus BLEU-4 with uniform weights, no smoothing and
  the brevity penalty `exp(1 - r/c)` for `c < r` (Papineni et al. 2002), computed exactly as tensorflow/nmt's
  `compute_bleu`, which Hugging Face `evaluate.load("bleu")` wraps. bentrevett/pytorch-seq2seq reports that metric
  on spaCy-tokenised, lower-cased hypotheses and references; here the tokeniser is Moses (sacremoses), so the
  numbers are comparable up to the two tokenisers' differences (both split punctuation off words).
- `perplexity(nll_sum, tokens)`: `exp(total negative log-likelihood / target tokens)`, `<eos>` counted as a token.

>>> result = tokenised_bleu([["a", "cat", "sat", "on", "the", "mat"]], [["a", "cat", "sat", "on", "a", "mat"]])
>>> round(result["bleu"], 4), result["precisions"][0]
(0.5373, 0.8333333333333334)
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence


def _ngrams(tokens: Sequence[str], order: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i:i + order]) for i in range(len(tokens) - order + 1))


def tokenised_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]],
                   max_order: int = 4) -> dict:
    """Corpus BLEU of token lists, one reference each (module docstring). Returns `bleu` in [0, 1],
    `precisions` (clipped n-gram precision per order), `brevity_penalty`, `length_ratio`, and the two lengths."""
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} references")
    matches, possible = [0] * max_order, [0] * max_order
    hypothesis_length = reference_length = 0
    for hypothesis, reference in zip(hypotheses, references):
        hypothesis_length += len(hypothesis)
        reference_length += len(reference)
        for order in range(1, max_order + 1):
            counts, reference_counts = _ngrams(hypothesis, order), _ngrams(reference, order)
            matches[order - 1] += sum((counts & reference_counts).values())  # clipped by the reference counts
            possible[order - 1] += max(len(hypothesis) - order + 1, 0)
    precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    if min(precisions) > 0:
        geometric_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    else:
        geometric_mean = 0.0
    ratio = hypothesis_length / reference_length if reference_length else 0.0
    if ratio > 1.0:
        penalty = 1.0
    else:
        penalty = math.exp(1 - 1.0 / ratio) if ratio > 0 else 0.0
    return {"bleu": geometric_mean * penalty, "precisions": precisions, "brevity_penalty": penalty,
            "length_ratio": ratio, "translation_length": hypothesis_length, "reference_length": reference_length}


def sacre_bleu(hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False) -> tuple[float, str]:
    """`(BLEU in 0..100, signature)` of detokenised `hypotheses` against raw `references` with sacreBLEU.
    `lowercase` scores case-insensitively (for a lower-cased model; the signature then says `case:lc`)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} references")
    metric = sacrebleu.metrics.BLEU(lowercase=lowercase)
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


def perplexity(nll_sum: float, tokens: int) -> float:
    """`exp(nll_sum / tokens)`, the per-token perplexity (`inf` past float range)."""
    if tokens <= 0:
        raise ValueError(f"perplexity needs at least one target token, got {tokens}")
    mean = nll_sum / tokens
    return math.exp(mean) if mean < 700 else math.inf
