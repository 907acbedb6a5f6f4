"""Sequential MNIST: the pixel orders (the permutation fixed by its seed), the IRNN init, the MinGRU on the
parallel path, and a --quick run end to end on a 100-image IDX fixture."""

import json

import jax
import numpy as np
import pytest

import rnnjax
from helpers import CLASSIC_PATH
from helpers import write_mnist_fixture
from experiments.sequential_mnist import train as smnist


def test_the_permutation_is_fixed_by_its_seed():
    first, again, other = smnist.pixel_permutation(0), smnist.pixel_permutation(0), smnist.pixel_permutation(1)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert sorted(first.tolist()) == list(range(784))
    # The recorded seed's order itself: changing NumPy's generator or the seed's use would change results.
    assert first[:8].tolist() == np.random.default_rng(0).permutation(784)[:8].tolist()


def test_sequences_per_task():
    images = np.arange(2 * 784, dtype=np.int64).reshape(2, 28, 28) % 256
    images = images.astype(np.uint8)
    rows = smnist.to_sequences(images, "row")
    pixels = smnist.to_sequences(images, "pixel")
    order = smnist.pixel_permutation(3)
    permuted = smnist.to_sequences(images, "permuted", order)
    assert rows.shape == (2, 28, 28) and pixels.shape == permuted.shape == (2, 784, 1)
    assert pixels.max() <= 1.0 and pixels[0, 29, 0] == pytest.approx(images[0, 1, 1] / 255)
    np.testing.assert_array_equal(permuted[:, :, 0], pixels[:, order, 0])
    with pytest.raises(ValueError, match="needs its pixel permutation"):
        smnist.to_sequences(images, "permuted")


def test_irnn_starts_at_the_identity_and_mingru_runs_in_parallel():
    config = smnist.Config(task="pixel", hidden_size=6)
    model = smnist.make_model(config, "irnn")
    params = smnist.init_params(config, "irnn", model, jax.random.key(0))
    layer = params["rnn"][0]
    np.testing.assert_array_equal(layer.weight_hh, np.eye(6))
    assert not np.any(layer.bias_hh) and not np.any(layer.bias_ih) and np.any(layer.weight_ih)
    assert model.cell.activation == "relu"
    mingru = smnist.make_model(config, "mingru")
    shapes = jax.eval_shape(lambda: mingru.init(jax.random.key(0))["rnn"][0])
    xs = jax.ShapeDtypeStruct((8, 784, 1), "float32")
    assert rnnjax.unroll_path(mingru.cell, shapes, xs) == "parallel"
    assert smnist.make_model(config, "lstm").cell.forget_bias == 1.0


def test_quick_run_on_a_fixture(tmp_path, monkeypatch):
    write_mnist_fixture(tmp_path / "mnist", monkeypatch)
    summary = smnist.main(["--quick", "--cells", "irnn", "--task", "permuted", "--permutation-seed", "5",
                           "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")])
    (result,) = summary["results"]
    assert result["cell"] == "irnn" and result["steps"] == 4 and 0.0 <= result["test_accuracy"] <= 1.0
    assert summary["permutation_seed"] == 5
    assert summary["permutation_head"] == smnist.pixel_permutation(5)[:8].tolist()
    run = tmp_path / "run"
    assert {"accuracy.png", "gradient_norms.png"} <= {p.name for p in run.iterdir()}
    saved = json.loads((run / "irnn" / "result.json").read_text())
    assert len(saved["gradient_norms"]["trained"]) == 784 and saved["path"] == CLASSIC_PATH
    assert json.loads((run / "irnn" / "config.json").read_text())["run"]["train_examples"] == 32


def test_command_line(capsys):
    config = smnist.parse_config(["--preset", "pixel", "--cells", "lstm,mingru"])
    assert (config.task, config.time_steps, config.input_size, config.cell_names) == ("pixel", 784, 1,
                                                                                       ("lstm", "mingru"))
    assert smnist.parse_config([]).time_steps == 28
    for argv, message in [(["--cells", "lstm,transformer"], "--cells must be one of"),
                          (["--cells", "lstm,lstm"], "distinct names"),
                          (["--task", "column"], "--task must be one of"),
                          (["--dropout-rate", "1.5"], "--dropout-rate"),
                          (["--no-such-flag", "1"], "unrecognized arguments")]:
        with pytest.raises(SystemExit) as exit_info:
            smnist.parse_config(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
