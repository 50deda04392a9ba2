"""Pure functional core: cells, their step functions, and whole sequences through one time-loop driver.

- :data:`CELLS` maps each cell name to its :class:`Cell` record (:mod:`.cell`); a cell module (``rnn.py``,
  ``lstm.py``, ``gru.py``, ...) holds its equations and its record, :func:`register_cell` adds your own;
- :func:`sequence_forward` / :func:`sequence_backward`: a whole sequence for any cell (:mod:`.driver`; full or
  checkpointed BPTT, :mod:`.recompute`); :func:`reference_forward` / :func:`reference_backward`: the readable
  step functions looped over time, the specification (:mod:`.reference`);
- :func:`stack_forward` / :func:`stack_backward`: layers x directions (:mod:`.stack`).

Every cell's state is a tuple, ``(h,)`` or ``(h, c)``.
"""

from ._common import ImmediateTerm, StepDerivatives, TimeSlots
from .cell import TORCH_PARAMS, Cell, FastPath, Kernel, Param, Prepared, TorchModule, TorchStep, param_name
from .driver import LoopCache, sequence_backward, sequence_forward
from .gru import GRU_CELL, GRUStepCache, gru_step_backward, gru_step_forward
from .lstm import LSTM_CELL, LSTMStepCache, lstm_step_backward, lstm_step_forward
from .recompute import CheckpointedCache, checkpointed_backward, checkpointed_forward, default_every
from .reference import ReferenceCache, reference_backward, reference_forward
from .register import register_cell, unregister_cell
from .registry import ALIASES, CELLS, canonical_cell_name, cell_choices, cell_names, get_cell
from .rnn import RNN_RELU_CELL, RNN_TANH_CELL, RNNStepCache, rnn_step_backward, rnn_step_forward
from .stack import stack_backward, stack_forward

__all__ = [
    "ALIASES", "CELLS", "Cell", "FastPath", "Kernel", "Param", "Prepared", "TORCH_PARAMS", "TorchModule", "TorchStep",
    "canonical_cell_name", "cell_choices", "cell_names", "get_cell", "param_name", "register_cell", "unregister_cell",
    "ImmediateTerm", "StepDerivatives", "TimeSlots",
    "GRU_CELL", "GRUStepCache", "gru_step_backward", "gru_step_forward",
    "LSTM_CELL", "LSTMStepCache", "lstm_step_backward", "lstm_step_forward",
    "RNN_RELU_CELL", "RNN_TANH_CELL", "RNNStepCache", "rnn_step_backward", "rnn_step_forward",
    "LoopCache", "ReferenceCache", "reference_backward", "reference_forward", "sequence_backward", "sequence_forward",
    "CheckpointedCache", "checkpointed_backward", "checkpointed_forward", "default_every",
    "stack_backward", "stack_forward",
]
