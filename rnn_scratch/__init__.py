"""rnn_scratch: recurrent networks from scratch on NumPy/CuPy, with hand-written BPTT.

>>> import numpy as np, rnn_scratch as rs
>>> lstm = rs.LSTM(3, 5, num_layers=2, dtype="float64", backend="numpy", seed=0)
>>> out, (h_n, c_n) = lstm(np.ones((7, 2, 3)))
>>> dx, (dh0, dc0) = lstm.backward(np.ones_like(out))
>>> out.shape, h_n.shape, dx.shape
((7, 2, 5), (2, 2, 5), (7, 2, 3))
"""

from . import backend, functional
from .backend import BackendUnavailableError, get_xp, to_backend, to_numpy
from .functional._parallel import get_num_threads, set_num_threads
from .layers import GRU, LSTM, RNN, Embedding, Linear, Module, RNNBase

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "RNN", "BackendUnavailableError", "Embedding", "Linear", "Module", "RNNBase",
    "backend", "functional", "get_num_threads", "get_xp", "set_num_threads", "to_backend", "to_numpy",
    "__version__",
]
