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
from rnnjax.losses import accuracy
from rnnjax.losses import cross_entropy
from rnnjax.losses import masked_mean
from rnnjax.losses import mean_absolute_error
from rnnjax.losses import mean_squared_error
from rnnjax.rnn import MODES
from rnnjax.rnn import RNN
from rnnjax.rnn import make_cell
from rnnjax.time_loop import unroll
from rnnjax.host_memory import retain_freed_memory
from rnnjax.corpora import CORPORA
from rnnjax.corpora import CorpusText
from rnnjax.corpora import DownloadError
from rnnjax.corpora import cache_dir
from rnnjax.corpora import download
from rnnjax.corpora import load_corpus
from rnnjax.language_model import LanguageModel
from rnnjax.language_model import sample
from rnnjax.language_model import zaremba_loss
from rnnjax.text import CharTokenizer
from rnnjax.text import Vocabulary
from rnnjax.text import WordTokenizer
from rnnjax.text import batchify
from rnnjax.text import num_windows
from rnnjax.text import read_text
from rnnjax.text import stream_windows
from rnnjax.checkpoint import CheckpointError
from rnnjax.checkpoint import CheckpointManager
from rnnjax.checkpoint import load_checkpoint
from rnnjax.checkpoint import save_checkpoint
from rnnjax.optim import OptimizerConfig
from rnnjax.optim import global_norm
from rnnjax.optim import make_optimizer
from rnnjax.optim import make_schedule
from rnnjax.parallel import data_mesh
from rnnjax.parallel import replicate
from rnnjax.parallel import shard_batch
from rnnjax.trainer import NonFiniteError
from rnnjax.trainer import TrainerConfig
from rnnjax.trainer import fit
from rnnjax.training import TrainState
from rnnjax.training import create_train_state
from rnnjax.training import make_eval_step
from rnnjax.training import make_train_step
from rnnjax.training import train_step_fn
from rnnjax.minimal_cells import MinGRU
from rnnjax.minimal_cells import MinGRUParams
from rnnjax.minimal_cells import MinLSTM
from rnnjax.minimal_cells import MinLSTMParams
from rnnjax.rnn import CELL_MODES
from rnnjax.time_loop import UNROLL_MODES
from rnnjax.time_loop import parallel_memory_bytes
from rnnjax.time_loop import unroll_path
from rnnjax.bucketing import batch_shapes
from rnnjax.bucketing import bucket_batches
from rnnjax.bucketing import bucket_boundaries
from rnnjax.bucketing import pad_sequences
from rnnjax.classifier import POOLINGS
from rnnjax.classifier import SequenceClassifier
from rnnjax.classifier import classification_loss_fn
from rnnjax.classifier import masked_pool
from rnnjax.classifier import variational_dropout
from rnnjax.sentence_encoding import SentenceEncoder
from rnnjax.sentiment_data import LabelledTexts
from rnnjax.sentiment_data import SentimentDataset
from rnnjax.sentiment_data import cross_validation_folds
from rnnjax.sentiment_data import load_sentiment
from rnnjax.word_vectors import load_word_vectors
from rnnjax.series import SERIES
from rnnjax.series import TimeSeries
from rnnjax.series import load_series
from rnnjax.series import read_series_csv
from rnnjax.windows import count_windows
from rnnjax.windows import gather_windows
from rnnjax.windows import split_ranges
from rnnjax.windows import window_starts
from rnnjax.scaling import fit_scaler
from rnnjax.scaling import scale
from rnnjax.scaling import unscale
from rnnjax.scaling import revin_normalize
from rnnjax.scaling import revin_denormalize
from rnnjax.forecasters import DirectForecaster
from rnnjax.forecasters import Seq2SeqForecaster
from rnnjax.baselines import fit_linear
from rnnjax.baselines import linear_forecast
from rnnjax.baselines import repeat_last
from rnnjax.baselines import seasonal_naive
from rnnjax.calendar_features import calendar_features

__version__ = "0.1.0"

__all__ = [
    "Bidirectional",
    "BidirectionalCarry",
    "BidirectionalParams",
    "CELL_MODES",
    "CORPORA",
    "CharTokenizer",
    "CheckpointError",
    "CheckpointManager",
    "CorpusText",
    "DirectForecaster",
    "DownloadError",
    "GRU",
    "GRUParams",
    "INITIALIZERS",
    "LSTM",
    "LSTMParams",
    "LSTMState",
    "LabelledTexts",
    "LanguageModel",
    "MERGES",
    "MODES",
    "MinGRU",
    "MinGRUParams",
    "MinLSTM",
    "MinLSTMParams",
    "NonFiniteError",
    "OptimizerConfig",
    "POOLINGS",
    "RNN",
    "Recurrent",
    "SERIES",
    "SentenceEncoder",
    "SentimentDataset",
    "Seq2SeqForecaster",
    "SequenceClassifier",
    "SimpleRNN",
    "SimpleRNNParams",
    "Stack",
    "TimeSeries",
    "TrainState",
    "TrainerConfig",
    "UNROLL_MODES",
    "Vocabulary",
    "WordTokenizer",
    "accuracy",
    "batch_shapes",
    "batchify",
    "bucket_batches",
    "bucket_boundaries",
    "cache_dir",
    "calendar_features",
    "classification_loss_fn",
    "count_windows",
    "create_train_state",
    "cross_entropy",
    "cross_validation_folds",
    "data_mesh",
    "download",
    "dropout",
    "fit",
    "fit_linear",
    "fit_scaler",
    "from_torch_state_dict",
    "gather_windows",
    "global_norm",
    "linear_forecast",
    "load_checkpoint",
    "load_corpus",
    "load_sentiment",
    "load_series",
    "load_word_vectors",
    "make_cell",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "masked_mean",
    "masked_pool",
    "mean_absolute_error",
    "mean_squared_error",
    "num_windows",
    "pad_sequences",
    "parallel_memory_bytes",
    "read_series_csv",
    "read_text",
    "repeat_last",
    "replicate",
    "retain_freed_memory",
    "revin_denormalize",
    "revin_normalize",
    "sample",
    "save_checkpoint",
    "scale",
    "seasonal_naive",
    "shard_batch",
    "split_ranges",
    "stream_windows",
    "to_torch_state_dict",
    "train_step_fn",
    "unroll",
    "unroll_path",
    "unscale",
    "variational_dropout",
    "window_starts",
    "zaremba_loss",
]
