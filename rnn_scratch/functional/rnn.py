r"""Vanilla (Elman) RNN cell, as in ``torch.nn.RNN``.

Forward, one step::

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    h_t = phi(a_t)                 phi = tanh  or  relu

Backward, one step. Given g_t = dL/dh_t (from the output at t *and* from step t+1)::

    da_t      = g_t * phi'(a_t)     tanh' = 1 - h_t^2,  relu' = [h_t > 0]
    dx_t      = da_t W_ih
    dh_{t-1}  = da_t W_hh           (added to dL/dout_{t-1} to form g_{t-1})
    dW_ih    += da_t^T x_t,   dW_hh += da_t^T h_{t-1},   db_ih += sum_b da_t,  db_hh += sum_b da_t

Unrolling the recursion gives the BPTT sum dL/dW_hh = sum_t da_t^T h_{t-1}: the fast path
collects every da_t and does that sum as one GEMM after the time loop.
"""

from __future__ import annotations

from ..backend import array_module
from ._common import input_gradient, input_projection, state_slots, time_order, unpack, weight_gradients

NONLINEARITIES = ("tanh", "relu")


def _activate(xp, a, nonlinearity, out=None):
    if nonlinearity == "tanh":
        return xp.tanh(a, out=out)
    return xp.maximum(a, 0, out=out)


def _activation_grad(xp, h, nonlinearity):
    """phi'(a) written through the output h = phi(a)."""
    if nonlinearity == "tanh":
        return 1 - h * h
    return (h > 0).astype(h.dtype)


def rnn_step_forward(x_t, h_prev, params, nonlinearity="tanh"):
    """One step: ``h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``. Returns (h_t, cache)."""
    xp = array_module(x_t)
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    a = x_t @ w_ih.T + h_prev @ w_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    h = _activate(xp, a, nonlinearity)
    return h, (x_t, h_prev, h, params, nonlinearity)


def rnn_step_backward(dh, cache):
    """One step back. ``dh`` = dL/dh_t. Returns (dx_t, dh_{t-1}, dparams)."""
    x_t, h_prev, h, params, nonlinearity = cache
    xp = array_module(dh)
    w_ih, w_hh, b_ih, _ = unpack(params)
    da = dh * _activation_grad(xp, h, nonlinearity)
    dparams = {"weight_ih": da.T @ x_t, "weight_hh": da.T @ h_prev}
    if b_ih is not None:
        dparams["bias_ih"] = da.sum(axis=0)
        dparams["bias_hh"] = da.sum(axis=0)
    return da @ w_ih, da @ w_hh, dparams


def rnn_forward(x, h0, params, nonlinearity="tanh", *, reverse=False, mask=None):
    """Whole sequence, fast path. x: (T, B, I), h0: (B, H), mask: None or bool (T, B, 1).

    The input projection of all steps is one GEMM; each step is one GEMM (h @ W_hh^T)
    added in place, then phi in place. Returns (out (T, B, H), h_n, cache).
    """
    xp = array_module(x)
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    a = input_projection(x, w_ih, None if b_ih is None else b_ih + b_hh)  # becomes h_t in place
    hbuf = xp.empty((T + 1, B, H), dtype=x.dtype)
    first, prev, new, after, before = state_slots(T, reverse)
    hbuf[first] = h0
    w_hh_t = w_hh.T
    rec = xp.empty((B, H), dtype=x.dtype)
    for t in time_order(T, reverse):
        h_prev = hbuf[prev(t)]
        xp.matmul(h_prev, w_hh_t, out=rec)
        a_t = a[t]
        a_t += rec
        _activate(xp, a_t, nonlinearity, out=a_t)  # a[t] now holds the cell output
        if mask is None:
            hbuf[new(t)] = a_t
        else:
            xp.copyto(hbuf[new(t)], xp.where(mask[t], a_t, h_prev))
    out = hbuf[after] if mask is None else xp.where(mask, a, 0)
    h_n = hbuf[new(T - 1 if not reverse else 0)]
    cache = (x, hbuf, a, params, nonlinearity, reverse, mask)
    return out, h_n, cache


def rnn_backward(dout, dh_n, cache):
    """Whole sequence backward (BPTT). dout: (T, B, H) or None, dh_n: (B, H) or None.

    Returns (dx (T, B, I), dh0 (B, H), dparams).
    """
    x, hbuf, h_cell, params, nonlinearity, reverse, mask = cache
    xp = array_module(x)
    w_ih, w_hh, b_ih, _ = unpack(params)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    _, _, _, _, before = state_slots(T, reverse)
    da = xp.empty((T, B, H), dtype=x.dtype)
    dh = xp.zeros((B, H), dtype=x.dtype) if dh_n is None else dh_n.copy()
    if dout is not None and mask is not None:
        dout = xp.where(mask, dout, 0)  # outputs at padded steps are constant zeros
    for t in reversed(time_order(T, reverse)):  # reverse of the order the forward visited
        if dout is not None:
            dh += dout[t]
        da_t = da[t]
        h_t = h_cell[t]
        if nonlinearity == "tanh":
            xp.multiply(h_t, h_t, out=da_t)
            xp.subtract(1, da_t, out=da_t)
            da_t *= dh
        else:
            xp.multiply(dh, h_t > 0, out=da_t)
        if mask is None:
            xp.matmul(da_t, w_hh, out=dh)
        else:
            da_t *= mask[t]  # padded steps pass dh straight through to the previous step
            dh = xp.where(mask[t], da_t @ w_hh, dh)
    grads = weight_gradients(da, x, hbuf[before], has_bias=b_ih is not None)
    return input_gradient(da, w_ih), dh, grads
