"""Data parallelism on JAX's own machinery: one `Mesh` axis "data", the batch sharded along it, params replicated.

The train step needs no change: `jit` follows the shardings of its arguments (GSPMD), splits the batch across
devices, and inserts the gradient all-reduce itself. The same code runs on one CPU, several GPUs, a TPU slice, or
several hosts. On a cluster, each host runs the same script after

    jax.distributed.initialize()   # on Cloud TPU / SLURM / Open MPI the coordinator is found automatically, else:
    jax.distributed.initialize(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=RANK)

and `data_mesh()` then spans every device of every host (`jax.devices()` is global after initialization); each
host feeds its own slice of the global batch with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh named "data" over `devices` (default: all devices, of all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shard_batch(batch, mesh: Mesh):
    """Places every leaf of `batch` with its leading (batch) axis split across the mesh's "data" axis.

    Raises a ValueError naming the leaf when its batch size is not divisible by the device count: an uneven
    split would silently change the effective batch on some devices.
    """
    num_devices = mesh.shape[DATA_AXIS]
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def place(path, leaf):
        if np.ndim(leaf) == 0:
            raise ValueError(f"batch leaf {jax.tree_util.keystr(path)} is a scalar: it has no batch axis to shard")
        if np.shape(leaf)[0] % num_devices:
            raise ValueError(
                f"batch size {np.shape(leaf)[0]} (leaf {jax.tree_util.keystr(path) or 'batch'}) is not divisible by "
                f"the {num_devices} devices of the data mesh; use a multiple of {num_devices}"
            )
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map_with_path(place, batch)


def replicate(tree, mesh: Mesh):
    """Places a full copy of every leaf of `tree` (params, optimizer state) on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
