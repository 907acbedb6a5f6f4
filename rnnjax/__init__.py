"""rnnjax: recurrent sequence models in JAX — pure-function cells, a `lax.scan` time loop, layers, PyTorch interop.

Read this file as the table of contents of the public API.
"""

from rnnjax.cells import GRU
from rnnjax.cells import GRUParams
from rnnjax.cells import LSTM
from rnnjax.cells import LSTMParams
from rnnjax.cells import LSTMState
from rnnjax.cells import SimpleRNN
from rnnjax.cells import SimpleRNNParams
from rnnjax.initializers import INITIALIZERS
from rnnjax.interop import from_torch_state_dict
from rnnjax.interop import to_torch_state_dict
from rnnjax.layers import MERGES
from rnnjax.layers import Bidirectional
from rnnjax.layers import BidirectionalCarry
from rnnjax.layers import BidirectionalParams
from rnnjax.layers import Recurrent
from rnnjax.layers import Stack
from rnnjax.layers import dropout
from rnnjax.rnn import MODES
from rnnjax.rnn import RNN
from rnnjax.rnn import make_cell
from rnnjax.time_loop import unroll

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUParams",
    "INITIALIZERS",
    "LSTM",
    "LSTMParams",
    "LSTMState",
    "MERGES",
    "MODES",
    "RNN",
    "Bidirectional",
    "BidirectionalCarry",
    "BidirectionalParams",
    "Recurrent",
    "SimpleRNN",
    "SimpleRNNParams",
    "Stack",
    "dropout",
    "from_torch_state_dict",
    "make_cell",
    "to_torch_state_dict",
    "unroll",
]
