"""Every task model takes every core cell (`rnnjax.CELL_MODES`): shapes, finite outputs and gradients."""

import jax
import jax.numpy as jnp
import pytest

from rnnjax import CELL_MODES
from rnnjax.models import DirectForecaster, LanguageModel, Seq2SeqForecaster, SequenceClassifier


def finite_tree(tree) -> bool:
    return all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("mode", CELL_MODES)
def test_every_model_runs_every_cell(mode, key):
    tokens = jnp.array([[1, 2, 3, 0], [4, 5, 6, 7]], jnp.int32)
    language_model = LanguageModel(vocab_size=8, embedding_size=4, hidden_size=5, mode=mode)
    params = language_model.init(key)
    logits, _ = language_model.apply(params, tokens)
    assert logits.shape == (2, 4, 8)
    assert finite_tree(jax.grad(lambda p: jnp.sum(language_model.apply(p, tokens)[0] ** 2))(params))

    classifier = SequenceClassifier(vocab_size=8, num_classes=3, embedding_size=4, hidden_size=5, mode=mode,
                                    bidirectional=True)
    params = classifier.init(key)
    assert classifier.apply(params, tokens, jnp.array([3, 4])).shape == (2, 3)

    series = jax.random.normal(key, (2, 6, 2))
    for forecaster in (DirectForecaster(num_series=2, lookback=6, horizon=3, hidden_size=5, mode=mode),
                       Seq2SeqForecaster(num_series=2, lookback=6, horizon=3, hidden_size=5, mode=mode)):
        params = forecaster.init(key)
        forecast = forecaster.apply(params, series)
        assert forecast.shape == (2, 3, 2) and finite_tree(forecast)
