"""CS231n's RNN and LSTM functions, with their signatures and layouts, computed by rnn_scratch's own step functions.

This is the reference the conformance kit (:func:`rnn_scratch.testing.check_implementation`) compares a
learner's module with, and a module the kit itself passes. The layouts are CS231n's: x (N, D) for a step
and (N, T, D) for a sequence, hidden states (N, H), weights Wx (D, H) and Wh (H, H) (LSTM: (D, 4H) and
(H, 4H) with the gate columns in the order i, f, o, g), one bias b. rnn_scratch's functions use torch's
layout (W_ih (G H, D), gate rows i, f, g, o, two biases): the conversion is here and nowhere else.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F

LSTM_GATES = ("i", "f", "o", "g")  # CS231n's column blocks of Wx, Wh and b
_TORCH_FROM_CS = [0, 1, 3, 2]  # torch's row blocks (i, f, g, o) taken from CS231n's column blocks (i, f, o, g)


def _blocks(a, order, axis):
    H = a.shape[axis] // 4
    return np.concatenate([np.take(a, np.arange(k * H, (k + 1) * H), axis=axis) for k in order], axis=axis)


def _params(Wx, Wh, b, lstm):
    """CS231n's (Wx, Wh, b) as rnn_scratch params (bias_hh zero: CS231n has one bias)."""
    if lstm:
        Wx, Wh, b = (_blocks(a, _TORCH_FROM_CS, axis=-1) for a in (Wx, Wh, b))
    return {"weight_ih": Wx.T, "weight_hh": Wh.T, "bias_ih": b, "bias_hh": np.zeros_like(b)}


def _grads(g, lstm):
    """rnn_scratch's parameter gradients as CS231n's (dWx, dWh, db)."""
    dWx, dWh, db = g["weight_ih"].T, g["weight_hh"].T, g["bias_ih"]
    if lstm:
        dWx, dWh, db = (_blocks(a, _TORCH_FROM_CS, axis=-1) for a in (dWx, dWh, db))  # the swap is its own inverse
    return dWx, dWh, db


# -- vanilla RNN (tanh) -----------------------------------------------------------------------------
def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """next_h = tanh(prev_h Wh + x Wx + b). x (N, D), prev_h (N, H). Returns (next_h, cache)."""
    (next_h,), cache = F.rnn_step_forward(x, (prev_h,), _params(Wx, Wh, b, False))
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    """Returns (dx, dprev_h, dWx, dWh, db)."""
    dx, (dprev_h,), g = F.rnn_step_backward((dnext_h,), cache)
    return (dx, dprev_h, *_grads(g, False))


def rnn_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H). Returns (h (N, T, H), cache)."""
    out, _, cache = F.reference_forward("rnn_tanh", x.transpose(1, 0, 2), (h0,), _params(Wx, Wh, b, False))
    return out.transpose(1, 0, 2), cache


def rnn_backward(dh, cache):
    """dh (N, T, H): the upstream gradient of every hidden state. Returns (dx, dh0, dWx, dWh, db)."""
    dx, (dh0,), g = F.reference_backward("rnn_tanh", dh.transpose(1, 0, 2), None, cache)
    return (dx.transpose(1, 0, 2), dh0, *_grads(g, False))


# -- LSTM -------------------------------------------------------------------------------------------
def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """a = x Wx + prev_h Wh + b, columns (i, f, o, g). Returns (next_h, next_c, cache)."""
    (next_h, next_c), cache = F.lstm_step_forward(x, (prev_h, prev_c), _params(Wx, Wh, b, True))
    return next_h, next_c, cache


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Returns (dx, dprev_h, dprev_c, dWx, dWh, db)."""
    dx, (dprev_h, dprev_c), g = F.lstm_step_backward((dnext_h, dnext_c), cache)
    return (dx, dprev_h, dprev_c, *_grads(g, True))


def lstm_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H); the initial cell state is zero. Returns (h (N, T, H), cache)."""
    c0 = np.zeros_like(h0)
    out, _, cache = F.reference_forward("lstm", x.transpose(1, 0, 2), (h0, c0), _params(Wx, Wh, b, True))
    return out.transpose(1, 0, 2), cache


def lstm_backward(dh, cache):
    """dh (N, T, H). Returns (dx, dh0, dWx, dWh, db) (no gradient for the zero initial cell state)."""
    dx, (dh0, _), g = F.reference_backward("lstm", dh.transpose(1, 0, 2), None, cache)
    return (dx.transpose(1, 0, 2), dh0, *_grads(g, True))
