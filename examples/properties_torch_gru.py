"""Properties any RNN must satisfy, checked on torch.nn.GRU: no reference implementation needed.

rnn_scratch.testing.properties draws small cases with hypothesis and checks relations that hold for every correct
recurrent layer whatever its conventions: batch rows are independent, a split sequence with the state carried
equals the whole, padding changes nothing, the reverse direction mirrors the forward one, relabelling hidden
units only permutes the states, the backward is linear and matches a directional derivative, zero input weights
give the bias-only response, float32 stays within its rule of float64.

First torch's own GRU (two bidirectional layers, batch_first), which holds every property that applies. Then a
GRU with a mistake torch users make: it unpacks a packed batch and runs every row to the full length, so padded
steps change the state and the reverse direction starts in the padding. The suite finds it, shrinks the case,
and says which relation broke.

The same from the command line:  python -m rnn_scratch properties torch.nn:GRU --adapter torch

Run:  python examples/properties_torch_gru.py [--max-examples 25]
"""

import argparse

import torch

from rnn_scratch.testing.properties import check_properties

parser = argparse.ArgumentParser()
parser.add_argument("--max-examples", type=int, default=25, help="cases searched per property (default 25)")
args = parser.parse_args()
torch.set_num_threads(1)  # the cases are tiny: threads only add overhead


def gru(input_size, hidden_size):
    """The factory: sizes in, layer out. The structure (layers, directions, layout) is the factory's choice."""
    return torch.nn.GRU(input_size, hidden_size, num_layers=2, bidirectional=True, batch_first=True)


class UnpackingGRU(torch.nn.GRU):
    """The mistake: a packed batch is unpacked and run as if every row had the full length."""

    def forward(self, input, hx=None):
        if isinstance(input, torch.nn.utils.rnn.PackedSequence):
            padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(input, batch_first=self.batch_first)
            out, h = super().forward(padded, hx)
            return torch.nn.utils.rnn.pack_padded_sequence(out, lengths, batch_first=self.batch_first,
                                                           enforce_sorted=False), h
        return super().forward(input, hx)


def unpacking_gru(input_size, hidden_size):
    return UnpackingGRU(input_size, hidden_size, bidirectional=True)


print(check_properties(gru, adapter="torch", max_examples=args.max_examples, label="torch.nn.GRU"))
print()
print(check_properties(unpacking_gru, adapter="torch", max_examples=args.max_examples,
                       properties=["padding", "bidirectional"], label="UnpackingGRU"))
