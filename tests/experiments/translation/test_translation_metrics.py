"""Translation metrics: the tokenised BLEU equals sacreBLEU's unsmoothed, untokenised BLEU (the nmt/Hugging Face
formula), sacreBLEU's signature records the case, perplexity is per token."""

import math

import numpy as np
import pytest
import sacrebleu

from experiments.translation import metrics


def test_tokenised_bleu_matches_sacrebleu_without_tokenisation_or_smoothing():
    rng = np.random.default_rng(0)
    words = ["a", "man", "dog", "runs", "in", "the", "park", "."]
    references = [" ".join(rng.choice(words, rng.integers(4, 12))) for _ in range(40)]
    hypotheses = [" ".join(r.split()[:-1] + list(rng.choice(words, 2))) for r in references]
    ours = metrics.tokenised_bleu([h.split() for h in hypotheses], [r.split() for r in references])
    theirs = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none").corpus_score(hypotheses, [references])
    assert 100 * ours["bleu"] == pytest.approx(theirs.score, abs=1e-9)
    assert [100 * p for p in ours["precisions"]] == pytest.approx(theirs.precisions, abs=1e-9)


def test_tokenised_bleu_edge_cases():
    perfect = metrics.tokenised_bleu([["a", "b", "c", "d"]], [["a", "b", "c", "d"]])
    assert perfect["bleu"] == 1.0 and perfect["brevity_penalty"] == 1.0
    short = metrics.tokenised_bleu([["a", "b", "c", "d"]], [["a", "b", "c", "d", "e", "f", "g", "h"]])
    assert short["brevity_penalty"] == pytest.approx(math.exp(1 - 2)) and short["bleu"] == pytest.approx(math.exp(-1))
    assert metrics.tokenised_bleu([["a", "b"]], [["c", "d"]])["bleu"] == 0.0  # no smoothing: a zero precision is 0
    with pytest.raises(ValueError, match="got 1 hypotheses but 2 references"):
        metrics.tokenised_bleu([["a"]], [["a"], ["b"]])


def test_sacre_bleu_signature_says_how_case_was_treated():
    score, signature = metrics.sacre_bleu(["A dog runs in the park."], ["a dog runs in the park."])
    assert score < 100 and "case:mixed" in signature and "tok:13a" in signature
    score, signature = metrics.sacre_bleu(["A dog runs in the park."], ["a dog runs in the park."], lowercase=True)
    assert score == pytest.approx(100.0) and "case:lc" in signature


def test_perplexity_is_per_token():
    assert metrics.perplexity(2 * math.log(5.0), 2) == pytest.approx(5.0)
    assert metrics.perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="at least one target token"):
        metrics.perplexity(1.0, 0)
