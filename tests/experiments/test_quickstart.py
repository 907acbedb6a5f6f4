"""The quickstart experiment: task construction, repeatability, and rejected configuration."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import quickstart


def test_adding_problem_marks_one_step_in_each_half():
    xs, targets = quickstart.adding_problem(jax.random.key(0), 16, 10)
    assert xs.shape == (16, 10, 2) and targets.shape == (16,)
    markers = xs[..., 1]
    np.testing.assert_array_equal(markers[:, :5].sum(axis=1), 1)
    np.testing.assert_array_equal(markers[:, 5:].sum(axis=1), 1)
    np.testing.assert_allclose(targets, jnp.sum(xs[..., 0] * markers, axis=1))


def test_runs_are_bit_for_bit_repeatable_and_print_the_config(capsys, tmp_path):
    argv = ["--steps", "3", "--time", "6", "--hidden-size", "4", "--batch-size", "2", "--test-size", "4",
            "--log-every", "1", "--mode", "gru", "--quiet", "--run-dir", str(tmp_path / "run")]
    first = quickstart.main(argv)
    output = capsys.readouterr().out
    assert re.search(r"^== config ==$", output, re.M) and re.search(r"^mode +gru$", output, re.M)
    assert re.search(r"^seed +0$", output, re.M) and re.search(r"^== result ==\ntest_mse +0\.\d+$", output, re.M)
    second = quickstart.main(argv + ["--overwrite"])  # the same run directory: replaced, never silently
    assert first["test_mse"] == second["test_mse"]
    third = quickstart.main(argv + ["--seed", "1", "--overwrite"])
    assert third["test_mse"] != first["test_mse"]
    assert first["steps"] == 3 and (tmp_path / "run" / "metrics.jsonl").exists()


def test_rejects_unknown_flags_and_modes(capsys):
    for argv, message in ((["--hidden", "8"], "unrecognized arguments"), (["--mode", "transformer"],
                                                                          "--mode must be one of")):
        with pytest.raises(SystemExit) as exit_info:
            quickstart.parse_config(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
