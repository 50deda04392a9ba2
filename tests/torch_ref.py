"""Run a cell's torch reference on the same weights and inputs as an rnn_scratch layer (rnn_scratch.testing's
helper): torch's own class where torch has the cell, else the cell's torch step looped and differentiated by
autograd."""

import torch

from rnn_scratch.testing.torch_reference import torch_module, torch_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

__all__ = ["DEVICE", "torch_module", "torch_reference"]
