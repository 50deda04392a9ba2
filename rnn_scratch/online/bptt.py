r"""Backpropagation through time, full and truncated, for L = sum_t <dout_t, h_t>.

Full BPTT (the layers' own backward, the cell's fast path): the gradient reaching h_t collects the
output's and the next step's, then each step's backward adds its share of every parameter gradient::

    dL/ds_t = [dout_t, 0] + D_{t+1}^T dL/ds_{t+1}          dL/dtheta = sum_t I_t^T dL/ds_t

Truncated BPTT(k) (Williams and Peng 1990): each output's gradient travels at most k steps back, so
step t's output reaches the immediate terms of steps t-k+1 .. t only::

    dL/dtheta ~ sum_t sum_{s = max(0, t-k+1)}^{t} I_s^T D_{s+1}^T ... D_t^T [dout_t, 0]

k = 1 keeps each output's immediate term alone; k >= T is full BPTT. Cost: k step backwards per output
(O(k G H^2) time per step) and the last k step caches (O(k G H) memory). The chunked variant -- cut the
sequence into windows of k steps, the gradient stopping at each window's start
(:func:`rnn_scratch.training.tbptt_gradients`) -- is what the online learner's ``bptt`` runs, one update
per window.
"""

from __future__ import annotations

from ..backend import array_module
from ..functional import sequence_backward, sequence_forward


def bptt(cell, x, state, params, dout):
    """Full BPTT with the cell's fast path: {kind: dL/dp}. x, dout time-major (T, B, .); state a tuple."""
    _, _, cache = sequence_forward(cell.name, x, state, params)
    _, _, grads = sequence_backward(cell.name, dout, None, cache)
    return grads


def backprop_through(cell, caches, dh):
    """The gradient of <dh, h_t> through the step caches ``caches`` (oldest first, the newest being step t):
    {kind: sum over those steps of I_s^T dL/ds_s}; the gradient stops before the oldest."""
    xp = array_module(dh)
    dstate = (dh,) + tuple(xp.zeros_like(dh) for _ in range(cell.num_states - 1))
    total = None
    for cache in reversed(caches):
        _, dstate, dparams = cell.step_backward(dstate, cache)
        total = dparams if total is None else {kind: total[kind] + g for kind, g in dparams.items()}
    return total


def tbptt(cell, x, state, params, dout, k):
    """Truncated BPTT(k), each output reaching k steps back: {kind: gradient}. Cost O(T k) step backwards."""
    caches, total = [], None
    for t in range(x.shape[0]):
        state, cache = cell.step_forward(x[t], state, params)
        caches.append(cache)
        grads = backprop_through(cell, caches[max(0, t - k + 1):], dout[t])
        total = grads if total is None else {kind: total[kind] + g for kind, g in grads.items()}
    return total
