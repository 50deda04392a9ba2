"""A learner's torch-shaped LSTM layer that reads its weight rows in the order (i, f, o, g) (CS231n's column
order) where torch's is (i, f, g, o): the layer convention must name the order it uses."""

import numpy as np

import rnn_scratch as rs

ORDER = [0, 1, 3, 2]  # the learner's row block j is torch's block ORDER[j] (a swap: its own inverse)


def _reorder(a):
    a = np.asarray(a)
    H = a.shape[0] // 4
    return np.concatenate([a[k * H:(k + 1) * H] for k in ORDER])


class SwappedLSTM:
    batch_first = False

    def __init__(self, input_size, hidden_size):
        self.inner = rs.LSTM(input_size, hidden_size, dtype="float64")

    def state_dict(self):
        return {k: _reorder(v) for k, v in self.inner.state_dict().items()}

    def load_state_dict(self, weights):
        self.inner.load_state_dict({k: _reorder(v) for k, v in weights.items()})

    def __call__(self, x, state=None):
        return self.inner(x, state)

    def backward(self, dout, dstate=None):
        return self.inner.backward(dout, dstate)

    @property
    def grads(self):
        return {k: _reorder(v) for k, v in self.inner.grads.items()}
