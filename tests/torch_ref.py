"""Run torch.nn.RNN/LSTM/GRU on the same weights and inputs as an rnn_scratch layer (rnn_scratch.testing's helper)."""

import torch

from rnn_scratch.testing.torch_reference import torch_reference

TORCH_CLS = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

__all__ = ["DEVICE", "TORCH_CLS", "torch_reference"]
