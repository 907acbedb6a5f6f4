"""rnnjax.models: task models over arrays (ids, features, lengths in; logits or forecasts out), never files.

Each is a frozen dataclass spec with `init(key)` and `apply(params, ...)`, any core cell inside.
"""

# Language modeling.
from rnnjax.models.language_model import LanguageModel
from rnnjax.models.language_model import sample
from rnnjax.models.language_model import zaremba_loss

# Sequence classification.
from rnnjax.models.classifier import POOLINGS
from rnnjax.models.classifier import SequenceClassifier
from rnnjax.models.classifier import classification_loss_fn
from rnnjax.models.classifier import masked_pool
from rnnjax.models.classifier import variational_dropout

# Frame models (real-valued inputs: audio features, pixels) and CTC.
from rnnjax.models.frames import FrameClassifier
from rnnjax.models.frames import FrameTagger
from rnnjax.models.frames import frame_classification_loss_fn
from rnnjax.models.ctc import ctc_greedy_decode
from rnnjax.models.ctc import ctc_loss
from rnnjax.models.ctc import ctc_loss_fn
from rnnjax.models.ctc import ctc_prefix_beam_search
from rnnjax.models.ctc import edit_distance

# Forecasting.
from rnnjax.models.forecasters import DirectForecaster
from rnnjax.models.forecasters import Seq2SeqForecaster
from rnnjax.models.segrnn import SegmentForecaster
from rnnjax.models.revin import revin_denormalize
from rnnjax.models.revin import revin_init
from rnnjax.models.revin import revin_normalize

# Sequence to sequence: attention, the encoder-decoder, a vector/grid-conditioned decoder, decoding.
from rnnjax.models.attention import ATTENTIONS
from rnnjax.models.attention import attend
from rnnjax.models.attention import attention_init
from rnnjax.models.attention import project_keys
from rnnjax.models.decoder import ATTENTION_STYLES
from rnnjax.models.decoder import DecoderCarry
from rnnjax.models.decoder import DecoderCell
from rnnjax.models.decoder import DecoderParams
from rnnjax.models.seq2seq import BRIDGES
from rnnjax.models.seq2seq import DecodeState
from rnnjax.models.seq2seq import SAMPLED_TOKENS
from rnnjax.models.seq2seq import SAMPLING_COINS
from rnnjax.models.seq2seq import Seq2Seq
from rnnjax.models.seq2seq import feed_back_tokens
from rnnjax.models.seq2seq import seq2seq_loss_fn
from rnnjax.models.seq2seq import sequence_loss
from rnnjax.models.captioner import CaptionDecoder
from rnnjax.models.decoding import beam_search
from rnnjax.models.decoding import greedy_decode
from rnnjax.models.decoding import sample_decode

__all__ = [
    "ATTENTIONS",
    "ATTENTION_STYLES",
    "BRIDGES",
    "CaptionDecoder",
    "DecodeState",
    "DecoderCarry",
    "DecoderCell",
    "DecoderParams",
    "DirectForecaster",
    "FrameClassifier",
    "FrameTagger",
    "LanguageModel",
    "POOLINGS",
    "SAMPLED_TOKENS",
    "SAMPLING_COINS",
    "SegmentForecaster",
    "Seq2Seq",
    "Seq2SeqForecaster",
    "SequenceClassifier",
    "attend",
    "attention_init",
    "beam_search",
    "classification_loss_fn",
    "ctc_greedy_decode",
    "ctc_loss",
    "ctc_loss_fn",
    "ctc_prefix_beam_search",
    "edit_distance",
    "feed_back_tokens",
    "frame_classification_loss_fn",
    "greedy_decode",
    "masked_pool",
    "project_keys",
    "revin_denormalize",
    "revin_init",
    "revin_normalize",
    "sample",
    "sample_decode",
    "seq2seq_loss_fn",
    "sequence_loss",
    "variational_dropout",
    "zaremba_loss",
]
