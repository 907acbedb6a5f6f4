"""A PyTorch word LM (`nn.Embedding -> nn.LSTM -> nn.Linear`) loads into `rnnjax.models.LanguageModel` and gives
the same logits; the state dict round-trips without torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_trees_close
from rnnjax.models import LanguageModel


@pytest.mark.parametrize("tie_weights", [False, True])
def test_state_dict_round_trip(tie_weights, key):
    model = LanguageModel(vocab_size=9, embedding_size=6, hidden_size=6, num_layers=2, tie_weights=tie_weights)
    params = model.init(key)
    state = model.to_torch_state_dict(params)
    assert {"embedding.weight", "rnn.weight_hh_l1", "decoder.weight", "decoder.bias"} <= set(state)
    assert_trees_close(model.from_torch_state_dict(state), params, atol=0, rtol=0)


def test_mismatched_sizes_and_minimal_cells_are_named(key):
    model = LanguageModel(vocab_size=9, embedding_size=6, hidden_size=5)
    state = model.to_torch_state_dict(model.init(key))
    with pytest.raises(ValueError, match=r"state_dict\['embedding.weight'\] must have shape \(10, 6\)"):
        LanguageModel(vocab_size=10, embedding_size=6, hidden_size=5).from_torch_state_dict(state)
    with pytest.raises(ValueError, match="PyTorch has no minimal cells"):
        LanguageModel(vocab_size=9, embedding_size=6, hidden_size=5, mode="mingru").from_torch_state_dict(state)


def test_torch_word_lm_gives_the_same_logits():
    torch = pytest.importorskip("torch")

    class WordLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(13, 8)
            self.rnn = torch.nn.LSTM(8, 7, num_layers=2, batch_first=True)
            self.decoder = torch.nn.Linear(7, 13)

        def forward(self, tokens):
            return self.decoder(self.rnn(self.embedding(tokens))[0])

    torch.manual_seed(0)
    lm = WordLM().eval()
    tokens = np.random.default_rng(0).integers(0, 13, (3, 11))
    with torch.no_grad():
        expected = lm(torch.from_numpy(tokens)).numpy()
    model = LanguageModel(vocab_size=13, embedding_size=8, hidden_size=7, num_layers=2)
    params = model.from_torch_state_dict(lm.state_dict())
    logits, _ = jax.jit(model.apply)(params, jnp.asarray(tokens, jnp.int32))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=1e-5)
    exported = model.to_torch_state_dict(params)
    lm.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()})  # strict: every key, right shapes
