"""rnnjax: recurrent sequence models in JAX — pure-function cells, a `lax.scan` time loop, layers, PyTorch interop.

Read this file as the table of contents of the recurrent core. Two topic namespaces sit beside it:
`rnnjax.train` (optimizers, the jitted step, the fit loop, checkpoints, data parallelism) and `rnnjax.models`
(task models over arrays: language model, classifier, forecasters). Dataset readers live with their experiments.
"""

# Cells: immutable specs with init / initial_carry / step (the contract is stated in rnnjax.cells).
from rnnjax.cells import GRU
from rnnjax.cells import GRUParams
from rnnjax.cells import LSTM
from rnnjax.cells import LSTMParams
from rnnjax.cells import LSTMState
from rnnjax.cells import SimpleRNN
from rnnjax.cells import SimpleRNNParams
from rnnjax.minimal_cells import MinGRU
from rnnjax.minimal_cells import MinGRUParams
from rnnjax.minimal_cells import MinLSTM
from rnnjax.minimal_cells import MinLSTMParams
from rnnjax.initializers import INITIALIZERS

# The time loop.
from rnnjax.time_loop import SCANS
from rnnjax.time_loop import parallel_memory_bytes
from rnnjax.time_loop import unroll
from rnnjax.time_loop import unroll_path

# Layers that compose, and the PyTorch-shaped convenience built from them.
from rnnjax.layers import MERGES
from rnnjax.layers import Bidirectional
from rnnjax.layers import BidirectionalCarry
from rnnjax.layers import BidirectionalParams
from rnnjax.layers import Recurrent
from rnnjax.layers import Stack
from rnnjax.layers import dropout
from rnnjax.rnn import CELL_MODES
from rnnjax.rnn import MODES
from rnnjax.rnn import RNN
from rnnjax.rnn import make_cell

# PyTorch state dicts.
from rnnjax.interop import from_torch_state_dict
from rnnjax.interop import to_torch_state_dict

# Losses and metrics over valid (unmasked) positions.
from rnnjax.losses import accuracy
from rnnjax.losses import cross_entropy
from rnnjax.losses import masked_mean
from rnnjax.losses import mean_absolute_error
from rnnjax.losses import mean_squared_error

# The error a value check (ids, labels, lengths out of range) raises from inside a jitted step.
from rnnjax._checks import InvalidInputError

# Topic namespaces, and the switch of the native CPU loop (`rnnjax.native`, as `torch.backends.mkldnn`).
from rnnjax import models
from rnnjax import native
from rnnjax import train

__version__ = "0.1.0"

__all__ = [
    "Bidirectional",
    "BidirectionalCarry",
    "BidirectionalParams",
    "CELL_MODES",
    "GRU",
    "GRUParams",
    "INITIALIZERS",
    "InvalidInputError",
    "LSTM",
    "LSTMParams",
    "LSTMState",
    "MERGES",
    "MODES",
    "MinGRU",
    "MinGRUParams",
    "MinLSTM",
    "MinLSTMParams",
    "RNN",
    "Recurrent",
    "SCANS",
    "SimpleRNN",
    "SimpleRNNParams",
    "Stack",
    "accuracy",
    "cross_entropy",
    "dropout",
    "from_torch_state_dict",
    "make_cell",
    "masked_mean",
    "mean_absolute_error",
    "mean_squared_error",
    "models",
    "native",
    "parallel_memory_bytes",
    "to_torch_state_dict",
    "train",
    "unroll",
    "unroll_path",
]
