"""Data parallelism: on 4 simulated CPU devices a sharded train step equals the single-device step, and a batch
that does not split evenly is a clear error. Runs in a subprocess: the device count is fixed when JAX starts."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from rnnjax.train.parallel import data_mesh, replicate, shard_batch

ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, optax
    import toy_training
    from rnnjax.train.parallel import data_mesh, replicate, shard_batch
    from rnnjax.train.step import train_step_fn

    assert jax.device_count() == 4, jax.devices()
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    step = jax.jit(train_step_fn(toy_training.loss_fn, optimizer))
    batches = list(toy_training.batches(0, 0))[:3]

    single = toy_training.make_state(0, optimizer)
    for batch in batches:
        single, single_metrics = step(single, batch)

    mesh = data_mesh()
    sharded = replicate(toy_training.make_state(0, optimizer), mesh)
    for batch in batches:
        placed = shard_batch(batch, mesh)
        assert len(placed["xs"].sharding.device_set) == 4
        sharded, sharded_metrics = step(sharded, placed)

    np.testing.assert_allclose(sharded_metrics["loss"], single_metrics["loss"], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    try:
        shard_batch({"xs": np.ones((6, 2), np.float32)}, mesh)
    except ValueError as error:
        assert "batch size 6" in str(error) and "not divisible by the 4 devices" in str(error), error
    else:
        raise AssertionError("an uneven batch was accepted")
    # the whole training loop, data-parallel, checkpoints included, against the same loop on one device
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        parallel_state, _ = toy_training.run(directory + "/parallel", epochs=1,
                                             place_batch=lambda batch: shard_batch(batch, mesh),
                                             state_transform=lambda state: replicate(state, mesh))
        plain_state, _ = toy_training.run(directory + "/plain", epochs=1)
    for a, b in zip(jax.tree.leaves(parallel_state.params), jax.tree.leaves(plain_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    print("DATA PARALLEL OK", float(sharded_metrics["loss"]))
    """
)


def test_sharded_step_equals_single_device_step_on_four_devices():
    environment = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "train")]),
    )
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DATA PARALLEL OK" in result.stdout


def test_single_device_mesh_and_clear_errors():
    mesh = data_mesh(jax.devices()[:1])
    assert mesh.axis_names == ("data",)
    placed = shard_batch({"xs": np.ones((3, 2), np.float32)}, mesh)
    np.testing.assert_array_equal(placed["xs"], np.ones((3, 2)))
    np.testing.assert_array_equal(replicate({"w": np.arange(3.0)}, mesh)["w"], np.arange(3.0))
    with pytest.raises(ValueError, match="scalar: it has no batch axis"):
        shard_batch({"count": np.float32(1.0)}, mesh)
    with pytest.raises(ValueError, match="at least one device"):
        data_mesh([])
