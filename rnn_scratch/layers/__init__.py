"""Stateful layers on top of the functional core: the module base (:mod:`.module`), the recurrent layers
(:mod:`.recurrent`: ``RNNBase``, ``RNN``, ``LSTM``, ``GRU``, :func:`make_layer`) and the simple layers
(:mod:`.simple`: ``Linear``, ``Embedding``)."""

from .module import IncompatibleKeys, Module
from .recurrent import GRU, LSTM, MEMORY_MODES, RNN, RNNBase, layer_call, make_layer
from .simple import Embedding, Linear

__all__ = ["GRU", "LSTM", "MEMORY_MODES", "RNN", "Embedding", "IncompatibleKeys", "Linear", "Module", "RNNBase",
           "layer_call", "make_layer"]
