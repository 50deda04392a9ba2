"""Check your own LSTM: a learner's CS231n-style LSTM with one planted mistake, the kit's report on it, then
the fixed version passing.

The kit (rnn_scratch.testing.check_implementation, or, from a CS231n assignment folder, `python -m rnn_scratch
check cs231n/rnn_layers.py --convention cs231n --cell lstm`) runs your functions in a child process, searches
for inputs where they disagree with rnn_scratch's reference, shrinks the failing case to the smallest one, and
says which gradient is wrong and why. Here the functions exist only in this script (closures), so the kit's child
is a fork of this process; a file is imported afresh in a new interpreter.

Run:  python examples/check_your_lstm.py [--max-examples 60]
"""

import argparse
import types

import numpy as np

from rnn_scratch.testing import check_implementation

parser = argparse.ArgumentParser()
parser.add_argument("--max-examples", type=int, default=60)
args = parser.parse_args()


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def learner_lstm(fixed):
    """The learner's four functions. The mistake: the tanh'(next_c) factor is left out where dnext_h reaches the
    cell state (the usual slip when deriving dc by hand)."""

    def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
        H = prev_h.shape[1]
        a = x @ Wx + prev_h @ Wh + b
        i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
        next_c = f * prev_c + i * g
        next_h = o * np.tanh(next_c)
        return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)

    def lstm_step_backward(dnext_h, dnext_c, cache):
        x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
        tanh_c = np.tanh(next_c)
        if fixed:
            dc = dnext_c + dnext_h * o * (1 - tanh_c**2)
        else:
            dc = dnext_c + dnext_h * o  # <- the planted mistake
        da = np.hstack([dc * g * i * (1 - i), dc * prev_c * f * (1 - f), dnext_h * tanh_c * o * (1 - o),
                        dc * i * (1 - g**2)])
        return da @ Wx.T, da @ Wh.T, f * dc, x.T @ da, prev_h.T @ da, da.sum(axis=0)

    def lstm_forward(x, h0, Wx, Wh, b):
        N, T, _ = x.shape
        h, c, caches = h0, np.zeros_like(h0), []
        hs = np.zeros((N, T, h0.shape[1]))
        for t in range(T):
            h, c, cache = lstm_step_forward(x[:, t], h, c, Wx, Wh, b)
            hs[:, t] = h
            caches.append(cache)
        return hs, caches

    def lstm_backward(dh, caches):
        N, T, H = dh.shape
        x0, _, _, Wx, Wh = caches[0][:5]
        dx = np.zeros((N, T, x0.shape[1]))
        dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wx.shape[1])
        dh_next, dc_next = np.zeros((N, H)), np.zeros((N, H))
        for t in reversed(range(T)):
            dx[:, t], dh_next, dc_next, dWx_t, dWh_t, db_t = lstm_step_backward(dh[:, t] + dh_next, dc_next,
                                                                                caches[t])
            dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
        return dx, dh_next, dWx, dWh, db

    return types.SimpleNamespace(lstm_step_forward=lstm_step_forward, lstm_step_backward=lstm_step_backward,
                                 lstm_forward=lstm_forward, lstm_backward=lstm_backward, __name__="learner_lstm")


print("=== the learner's first attempt ===")
report = check_implementation(learner_lstm(fixed=False), convention="cs231n", cell="lstm",
                              max_examples=args.max_examples)
print(report)
print("\n=== after the fix: dc = dnext_c + dnext_h * o * (1 - tanh(next_c)^2) ===")
fixed = check_implementation(learner_lstm(fixed=True), convention="cs231n", cell="lstm", max_examples=args.max_examples)
print(fixed)
assert not report.ok and fixed.ok
