"""Pure functional core: per-step forward/backward with named caches, and whole sequences.

Every cell's state is a tuple, ``(h,)`` or ``(h, c)``; :data:`CELLS` maps each cell name to its
:class:`Cell` record (gate count, state names, the four functions).
"""

from ._common import PARAM_NAMES, Cell, ImmediateTerm, StepDerivatives, TimeSlots, param_name
from .gru import GRU_CELL, GRUCache, GRUStepCache, gru_backward, gru_forward, gru_step_backward, gru_step_forward
from .lstm import (
    LSTM_CELL,
    LSTMCache,
    LSTMStepCache,
    lstm_backward,
    lstm_forward,
    lstm_step_backward,
    lstm_step_forward,
)
from .recompute import CheckpointedCache, checkpointed_backward, checkpointed_forward, default_every
from .rnn import (
    RNN_RELU_CELL,
    RNN_TANH_CELL,
    RNNCache,
    RNNStepCache,
    rnn_backward,
    rnn_forward,
    rnn_step_backward,
    rnn_step_forward,
)
from .sequence import (
    ALIASES,
    CELL_CHOICES,
    CELL_NAMES,
    CELLS,
    ReferenceCache,
    canonical_cell_name,
    get_cell,
    reference_backward,
    reference_forward,
    sequence_backward,
    sequence_forward,
)

__all__ = [
    "ALIASES", "CELL_CHOICES", "CELL_NAMES", "CELLS", "Cell", "ImmediateTerm", "PARAM_NAMES", "ReferenceCache",
    "StepDerivatives", "TimeSlots",
    "canonical_cell_name", "get_cell", "param_name",
    "GRU_CELL", "GRUCache", "GRUStepCache", "gru_backward", "gru_forward", "gru_step_backward", "gru_step_forward",
    "LSTM_CELL", "LSTMCache", "LSTMStepCache", "lstm_backward", "lstm_forward", "lstm_step_backward",
    "lstm_step_forward",
    "RNN_RELU_CELL", "RNN_TANH_CELL", "RNNCache", "RNNStepCache", "rnn_backward", "rnn_forward",
    "rnn_step_backward", "rnn_step_forward",
    "reference_backward", "reference_forward", "sequence_backward", "sequence_forward",
    "CheckpointedCache", "checkpointed_backward", "checkpointed_forward", "default_every",
]
