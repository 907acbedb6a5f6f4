"""The gradient-flow experiment: ∂L/∂h_t against an explicit reference, the task generators, the --quick run end to
end (files, repeatability), and rejected configuration."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gradient_flow as gf
from rnnjax import unroll

TINY = gf.Config(hidden_size=3, times="5", grad_time=5, explode_time=5)
# MinGRU/MinLSTM join every cell-parametrized test when rnnjax.minimal_cells imports.
CELLS = list(gf.CLASSIC_CELLS) + sorted(gf.minimal_cell_types())


def _tiny_model(cell_name, key, time=5, batch=2):
    cell = gf.config_cell(cell_name, TINY)
    task = gf.make_task(TINY, "adding", time)
    params = gf.init_model(cell, task, key)
    xs, targets = task.batch(jax.random.fold_in(key, 1), batch)
    return cell, task, params, xs, targets


@pytest.mark.parametrize("cell_name", CELLS)
def test_hidden_states_equal_unroll(cell_name, key):
    cell, _, params, xs, _ = _tiny_model(cell_name, key)
    ys, _ = unroll(cell, params["cell"], xs)
    np.testing.assert_allclose(gf.hidden_states(cell, params["cell"], xs), jnp.swapaxes(ys, 0, 1), atol=1e-6)


def _reference_norms(cell, params, xs, targets):
    """‖∂L_i/∂h_t‖ by explicit autodiff: for each t, run the cell step by step to t, then differentiate the loss
    of the remaining steps (a Python loop over `cell.step`) with respect to the h it starts from."""
    time = xs.shape[1]
    carries, carry = [], cell.initial_carry((xs.shape[0],))
    for t in range(time):
        carry, _ = cell.step(params["cell"], carry, xs[:, t])
        carries.append(carry)

    def loss_from(t, h):
        carry = carries[t]._replace(h=h) if hasattr(carries[t], "h") else h
        for s in range(t + 1, time):
            carry, _ = cell.step(params["cell"], carry, xs[:, s])
        last = carry.h if hasattr(carry, "h") else carry
        prediction = last @ params["readout"]["weight"][0] + params["readout"]["bias"][0]
        return jnp.sum(jnp.square(prediction - targets))

    norms = []
    for t in range(time):
        h = carries[t].h if hasattr(carries[t], "h") else carries[t]
        norms.append(jnp.mean(jnp.linalg.norm(jax.grad(loss_from, argnums=1)(t, h), axis=-1)))
    return jnp.stack(norms), loss_from, carries


@pytest.mark.parametrize("cell_name", CELLS)
def test_hidden_gradient_norms_equal_explicit_autodiff(cell_name, key):
    cell, task, params, xs, targets = _tiny_model(cell_name, key)
    expected, _, _ = _reference_norms(cell, params, xs, targets)
    actual = gf.hidden_gradient_norms(cell, params, task, xs, targets)
    assert actual.shape == (5,)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)


def test_hidden_gradient_equals_finite_differences(key):
    cell, task, params, xs, targets = _tiny_model("rnn_tanh", key, batch=1)
    _, loss_from, carries = _reference_norms(cell, params, xs, targets)

    def total_loss(perturbation):
        outputs = gf.apply_model(cell, params, xs, perturbation)
        return jnp.sum(jnp.square(outputs[-1, :, 0] - targets))

    grads = jax.grad(total_loss)(jnp.zeros((5, 1, 3)))
    delta = 1e-2
    for t in (0, 2, 4):
        for unit in range(3):
            bump = jnp.zeros((1, 3)).at[0, unit].set(delta)
            numeric = (loss_from(t, carries[t] + bump) - loss_from(t, carries[t] - bump)) / (2 * delta)
            np.testing.assert_allclose(grads[t, 0, unit], numeric, rtol=2e-2, atol=1e-4)


def test_gradient_norms_need_a_last_step_loss(key):
    cell = gf.config_cell("gru", TINY)
    task = gf.make_task(TINY, "copy", 2)
    with pytest.raises(ValueError, match="last step"):
        gf.hidden_gradient_norms(cell, None, task, None, None)


def test_adding_batches_have_two_markers_and_sum_targets(key):
    task = gf.make_task(TINY, "adding", 9)
    xs, targets = task.batch(key, 32)
    assert xs.shape == (32, 9, 2) and targets.shape == (32,)
    markers = xs[..., 1]
    np.testing.assert_array_equal(markers.sum(axis=1), 2)
    assert set(np.unique(markers).tolist()) == {0.0, 1.0}
    np.testing.assert_allclose(targets, jnp.sum(xs[..., 0] * markers, axis=1), rtol=1e-6)


def test_copy_task_inputs_and_targets(key):
    length, time, categories = 4, 6, 5
    xs, targets = gf.copy_task(key, 16, time, length, categories)
    total = time + 2 * length
    assert xs.shape == (16, total, categories + 2) and targets.shape == (16, total)
    assert xs.dtype == jnp.float32 and targets.dtype == jnp.int32
    np.testing.assert_array_equal(xs.sum(axis=-1), 1)  # one-hot
    ids = np.asarray(jnp.argmax(xs, axis=-1))
    symbols = ids[:, :length]
    assert symbols.min() >= 1 and symbols.max() <= categories
    np.testing.assert_array_equal(ids[:, length:length + time - 1], 0)  # T - 1 blanks
    np.testing.assert_array_equal(ids[:, length + time - 1], categories + 1)  # the delimiter
    np.testing.assert_array_equal(ids[:, length + time:], 0)
    np.testing.assert_array_equal(targets[:, :time + length], 0)
    np.testing.assert_array_equal(targets[:, -length:], symbols)  # recall the symbols, in order


def test_copy_task_trivial_baseline_scores_one_over_categories(key):
    # Blanks, then a random symbol: accuracy ≈ 1/categories on the copied positions.
    task = gf.make_task(gf.Config(), "copy", 3)
    xs, targets = task.batch(key, 4096)
    guesses = jax.random.randint(jax.random.key(1), (4096, 10), 1, 9)
    logits = jax.nn.one_hot(jnp.concatenate([jnp.zeros((4096, 13), jnp.int32), guesses], axis=1), 10).swapaxes(0, 1)
    _, accuracy = task.loss(logits, targets)
    assert abs(float(accuracy) - 1 / 8) < 0.01


def test_quick_run_writes_its_files_and_repeats_bit_for_bit(tmp_path, capsys):
    argv = ["--quick", "--cells", "rnn_relu", "--times", "4", "--run-dir", str(tmp_path / "a")]
    results = gf.main(argv)
    output = capsys.readouterr().out
    assert re.search(r"^seed +0$", output, re.M) and re.search(r"^cells +rnn_relu$", output, re.M)
    names = {path.name for path in (tmp_path / "a").iterdir()}
    assert {"config.json", "results.json", "results.md", "success.png", "exploding.png",
            "grad_flow_rnn_relu.png", "grad_flow_all.png"} <= names
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [(row["task"], row["time"]) for row in saved["sweep"]] == [("adding", 4), ("copy", 4)]
    assert len(saved["gradient_flow"]["rnn_relu"]["init"]) == 6  # grad_time steps
    assert set(saved["exploding"]) == {"clipped", "unclipped"}
    assert len(saved["exploding"]["clipped"]["grad_norm"]) == 6  # every step recorded
    assert "| rnn_relu |" in (tmp_path / "a" / "results.md").read_text()
    again = gf.main(["--quick", "--cells", "rnn_relu", "--times", "4", "--tasks", "adding", "--sections", "sweep",
                     "--run-dir", str(tmp_path / "b"), "--no-plots"])
    assert again["sweep"][0]["metric"] == results["sweep"][0]["metric"]
    assert again["sweep"][0]["history"] == results["sweep"][0]["history"]
    # A re-run into a directory that holds a run is one line and exit 2, unless --overwrite says to replace it.
    with pytest.raises(SystemExit) as exit_info:
        gf.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and "holds a previous run (config.json); pass --overwrite" in error
    assert "--resume" not in error


def test_default_cells_are_the_classic_four_and_mingru():
    assert gf.Config().cell_names == gf.CLASSIC_CELLS + ("mingru",)


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--cells", "transformer"], "unknown cell 'transformer'"),
        (["--tasks", "sorting"], "unknown task 'sorting'"),
        (["--times", "0"], "must be >= 2"),
        (["--times", "50,-3"], "must be >= 2"),
        (["--tasks", "copy", "--times", "0"], "must be >= 1"),
        (["--times", "ten"], "comma-separated ints"),
        (["--times", ""], "non-empty"),
        (["--cells", "lstm,lstm"], "twice"),
        (["--sections", "sweep,plots"], "unknown section"),
        (["--num-seeds", "0"], "--num-seeds must be >= 1"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--initializer", "xavier"], "--initializer must be one of"),
        (["--learning-rate", "-1"], "--learning-rate must be > 0"),
        (["--copy-success-accuracy", "1.5"], "--copy-success-accuracy"),
    ],
)
def test_bad_config_raises_a_clear_error(argv, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gf.parse_config(argv)
    assert exit_info.value.code == 2 and error in capsys.readouterr().err


def test_unknown_flags_are_rejected():
    with pytest.raises(SystemExit):
        gf.parse_config(["--hidden", "8"])
