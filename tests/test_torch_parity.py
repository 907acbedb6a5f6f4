"""Parity with PyTorch 2.13 `nn.RNN/LSTM/GRU`: outputs, final states and gradients of a scalar loss.

The golden files in `tests/golden/torch/` were written by `tests/make_torch_golden.py` (weights with non-zero,
distinct biases; variable lengths through `pack_padded_sequence`), so these tests need no torch. When torch is
importable, `test_live_torch_parity` regenerates every case and compares again."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import make_torch_golden as golden
from rnnjax import RNN, LSTMState, from_torch_state_dict, to_torch_state_dict

OUTPUT_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4
CASE_NAMES = [golden.case_name(*case) for case in golden.CASES]


def rnnjax_case(case: dict, mode: str, num_layers: int, bidirectional: bool, variable_lengths: bool) -> dict:
    """Runs the golden case through rnnjax: outputs, final states, loss and gradients, keyed like the golden file."""
    model = RNN(mode, golden.INPUT_SIZE, golden.HIDDEN_SIZE, num_layers=num_layers, bidirectional=bidirectional)
    params = from_torch_state_dict({k: v for k, v in case.items() if k.startswith(("weight_", "bias_"))},
                                   mode, num_layers, bidirectional)
    carry = LSTMState(jnp.asarray(case["h0"]), jnp.asarray(case["c0"])) if mode == "lstm" else jnp.asarray(case["h0"])
    lengths = jnp.asarray(case["lengths"], jnp.int32) if variable_lengths else None

    def loss_fn(params, xs, carry):
        ys, final = model.apply(params, xs, carry=carry, lengths=lengths)
        loss = jnp.sum(ys * case["loss_output_weight"])
        if mode == "lstm":
            loss += jnp.sum(final.h * case["loss_h_weight"]) + jnp.sum(final.c * case["loss_c_weight"])
        else:
            loss += jnp.sum(final * case["loss_h_weight"])
        return loss, (ys, final)

    (loss, (ys, final)), (grad_params, grad_x, grad_carry) = jax.value_and_grad(
        loss_fn, argnums=(0, 1, 2), has_aux=True
    )(params, jnp.asarray(case["x"]), carry)
    result = {"output": ys, "loss": loss, "grad_x": grad_x}
    if mode == "lstm":
        result.update(h_n=final.h, c_n=final.c, grad_h0=grad_carry.h, grad_c0=grad_carry.c)
    else:
        result.update(h_n=final, grad_h0=grad_carry)
    result.update({f"grad_{k}": v for k, v in to_torch_state_dict(grad_params).items()})
    return {k: np.asarray(v) for k, v in result.items()}


@functools.lru_cache(maxsize=None)
def rnnjax_golden_case(case_spec: tuple) -> dict:
    """rnnjax's results on a golden file's inputs, computed once per session (the live test reuses them)."""
    return rnnjax_case(golden.load_case(golden.case_name(*case_spec)), *case_spec)


def assert_parity(case: dict, result: dict) -> dict:
    """Asserts every rnnjax array matches its golden counterpart; returns the max abs error per key."""
    errors = {}
    for name, value in result.items():
        expected = case[name]
        assert value.shape == expected.shape, (name, value.shape, expected.shape)
        tolerance = GRADIENT_TOLERANCE if name.startswith("grad_") else OUTPUT_TOLERANCE
        if name == "loss":  # a sum over ~100 terms of magnitude ~1: compare relative to its size
            tolerance = OUTPUT_TOLERANCE * max(1.0, abs(float(expected)))
        np.testing.assert_allclose(value, expected, rtol=0, atol=tolerance, err_msg=name)
        errors[name] = float(np.max(np.abs(value - expected)))
    return errors


def test_golden_files_cover_every_case():
    assert len(CASE_NAMES) == 32
    for name in CASE_NAMES:
        assert (golden.GOLDEN_DIR / f"{name}.npz").is_file(), name


@pytest.mark.parametrize("case_spec", golden.CASES, ids=CASE_NAMES)
def test_golden_parity(case_spec):
    case = golden.load_case(golden.case_name(*case_spec))
    result = rnnjax_golden_case(case_spec)
    expected_keys = {k for k in case if k in ("output", "h_n", "c_n", "loss") or k.startswith("grad_")}
    assert set(result) == expected_keys
    assert_parity(case, result)


def test_state_dict_round_trip():
    case = golden.load_case("gru_l2_bi_varlen")
    state = {k: v for k, v in case.items() if k.startswith(("weight_", "bias_"))}
    back = to_torch_state_dict(from_torch_state_dict(state, "gru", 2, True))
    assert list(back) == list(state)  # PyTorch's key order too
    for name in state:
        np.testing.assert_array_equal(back[name], state[name])


def test_live_torch_parity():
    pytest.importorskip("torch")
    worst = {}
    for case_spec in golden.CASES:
        case = golden.make_case(*case_spec)
        stored = golden.load_case(golden.case_name(*case_spec))
        # Same inputs as the stored file (torch is deterministic here), so rnnjax's results on them are reused;
        # the live outputs and gradients are then compared afresh.
        for name in ("x", "lengths", "h0", "c0") + tuple(k for k in stored if k.startswith(("weight_", "bias_"))):
            if name in stored:
                np.testing.assert_array_equal(case[name], stored[name], err_msg=name)
        errors = assert_parity(case, rnnjax_golden_case(case_spec))
        for name, error in errors.items():
            kind = "gradient" if name.startswith("grad_") else "loss" if name == "loss" else "output"
            worst[kind] = max(worst.get(kind, 0.0), error)
    print(f"live torch parity, worst abs error: {worst}")
