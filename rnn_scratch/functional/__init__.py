"""Pure functional core: per-step forward/backward with explicit caches, and whole sequences."""

from .gru import gru_backward, gru_forward, gru_step_backward, gru_step_forward
from .lstm import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from .rnn import rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward
from .sequence import (
    CELLS,
    Cell,
    get_cell,
    reference_backward,
    reference_forward,
    sequence_backward,
    sequence_forward,
)

__all__ = [
    "CELLS", "Cell", "get_cell",
    "gru_backward", "gru_forward", "gru_step_backward", "gru_step_forward",
    "lstm_backward", "lstm_forward", "lstm_step_backward", "lstm_step_forward",
    "reference_backward", "reference_forward",
    "rnn_backward", "rnn_forward", "rnn_step_backward", "rnn_step_forward",
    "sequence_backward", "sequence_forward",
]
