"""rnnjax.train: the training engine — optimizers, the jitted step, the fit loop, checkpoints, data parallelism.

Any model is trained through one loss function `loss_fn(params, carry, batch, key) -> (loss, (carry, metrics))`
(`carry`: the truncated-BPTT state or None; `key`: for dropout, None in evaluation).
"""

# Optimizers: optax, always behind clip_by_global_norm.
from rnnjax.train.optimizer import OptimizerConfig
from rnnjax.train.optimizer import global_norm
from rnnjax.train.optimizer import make_optimizer
from rnnjax.train.optimizer import make_schedule

# One jitted step over a TrainState.
from rnnjax.train.step import TrainState
from rnnjax.train.step import create_train_state
from rnnjax.train.step import make_train_step
from rnnjax.train.step import train_step_fn

# The loop: epochs, logging, plots, checkpoints, resume, the best epoch's params.
from rnnjax.train.loop import NonFiniteError
from rnnjax.train.loop import TrainerConfig
from rnnjax.train.loop import fit
from rnnjax.train.loop import load_best

# The run directory's files: written atomically (RunFileWriteError names a failed one); a previous run is never
# replaced silently (PreviousRunError).
from rnnjax.train.run_files import PreviousRunError
from rnnjax.train.run_files import RunFileWriteError

# Metric writers beside metrics.jsonl.
from rnnjax.train.writers import CSVWriter
from rnnjax.train.writers import TensorBoardWriter

# Checkpoints on orbax-checkpoint (CheckpointDirectory drives an orbax.checkpoint.CheckpointManager).
from rnnjax.train.checkpoint import CheckpointDirectory
from rnnjax.train.checkpoint import CheckpointError
from rnnjax.train.checkpoint import CheckpointWriteError
from rnnjax.train.checkpoint import CorruptCheckpointError
from rnnjax.train.checkpoint import load_checkpoint
from rnnjax.train.checkpoint import save_checkpoint

# Data parallelism on a jax.sharding.Mesh.
from rnnjax.train.parallel import data_mesh
from rnnjax.train.parallel import replicate
from rnnjax.train.parallel import shard_batch

# Host memory (process-wide malloc settings; never applied on import).
from rnnjax.train.host_memory import retain_freed_memory

__all__ = [
    "CSVWriter",
    "CheckpointDirectory",
    "CheckpointError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "NonFiniteError",
    "OptimizerConfig",
    "PreviousRunError",
    "RunFileWriteError",
    "TensorBoardWriter",
    "TrainState",
    "TrainerConfig",
    "create_train_state",
    "data_mesh",
    "fit",
    "global_norm",
    "load_best",
    "load_checkpoint",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "replicate",
    "retain_freed_memory",
    "save_checkpoint",
    "shard_batch",
    "train_step_fn",
]


def __getattr__(name: str):
    # The checkpoint manager was renamed so that it never shadows orbax's class of the same name and another API.
    if name == "CheckpointManager":
        raise AttributeError("rnnjax.train.CheckpointManager is now rnnjax.train.CheckpointDirectory (save(step, "
                             "state, metadata), restore_latest(target)); it is not orbax.checkpoint.CheckpointManager, "
                             "which it drives: CheckpointDirectory(...).orbax_manager")
    raise AttributeError(f"module 'rnnjax.train' has no attribute {name!r}")
