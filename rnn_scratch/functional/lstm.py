r"""LSTM cell, as in ``torch.nn.LSTM`` (gate order i, f, g, o in the weights).

Forward, one step (sigma = logistic sigmoid, * = elementwise)::

    [a_i, a_f, a_g, a_o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    i = sigma(a_i)   f = sigma(a_f)   g = tanh(a_g)   o = sigma(a_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Backward, one step. Given dh = dL/dh_t and dc = dL/dc_t arriving from step t+1::

    do      = dh * tanh(c_t)
    dc     += dh * o * (1 - tanh(c_t)^2)          (total gradient reaching c_t)
    di = dc * g     df = dc * c_{t-1}     dg = dc * i
    dc_{t-1} = dc * f                             (the "constant error carousel")
    da_i = di * i(1-i)   da_f = df * f(1-f)   da_g = dg * (1-g^2)   da_o = do * o(1-o)
    dx_t = da W_ih       dh_{t-1} = da W_hh       dW_ih += da^T x_t    dW_hh += da^T h_{t-1}

Fast path details (same mathematics):
- the gate rows are reordered once to (i, f, o, g) so the three sigmoid gates are one
  contiguous block;
- sigma(a) = 1 / (1 + exp(-a)) and tanh(a) = 2 sigma(2a) - 1: the rows of the weights and biases
  are pre-scaled once by -1 (sigmoid gates) and -2 (g), so one in-place ``exp``, ``+ 1`` and
  ``reciprocal`` over the whole gate block give all four gates (g then takes ``* 2 - 1``).
"""

from __future__ import annotations

from ..backend import array_module
from ._common import (
    input_gradient,
    input_projection,
    quiet_overflow,
    sigmoid,
    sigmoid_from_negated_,
    state_slots,
    tanh_,
    tanh_from_sigmoid_,
    time_order,
    unpack,
    weight_gradients,
)


def lstm_step_forward(x_t, state, params):
    """One step. state = (h_{t-1}, c_{t-1}). Returns ((h_t, c_t), cache)."""
    xp = array_module(x_t)
    h_prev, c_prev = state
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    a = x_t @ w_ih.T + h_prev @ w_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    a_i, a_f, a_g, a_o = xp.split(a, 4, axis=1)
    i, f, g, o = sigmoid(xp, a_i), sigmoid(xp, a_f), xp.tanh(a_g), sigmoid(xp, a_o)
    c = f * c_prev + i * g
    tanh_c = xp.tanh(c)
    h = o * tanh_c
    return (h, c), (x_t, h_prev, c_prev, i, f, g, o, tanh_c, params)


def lstm_step_backward(dstate, cache):
    """One step back. dstate = (dL/dh_t, dL/dc_t). Returns (dx_t, (dh_{t-1}, dc_{t-1}), dparams)."""
    xp = array_module(dstate[0])
    dh, dc = dstate
    x_t, h_prev, c_prev, i, f, g, o, tanh_c, params = cache
    w_ih, w_hh, b_ih, _ = unpack(params)
    do = dh * tanh_c
    dc = dc + dh * o * (1 - tanh_c**2)
    di, df, dg = dc * g, dc * c_prev, dc * i
    da = xp.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=1)
    dparams = {"weight_ih": da.T @ x_t, "weight_hh": da.T @ h_prev}
    if b_ih is not None:
        dparams["bias_ih"] = da.sum(axis=0)
        dparams["bias_hh"] = da.sum(axis=0)
    return da @ w_ih, (da @ w_hh, dc * f), dparams


def _gate_permutation(xp, H):
    """Row order (i, f, o, g) from torch's (i, f, g, o), and its inverse."""
    i, f, g, o = (xp.arange(k * H, (k + 1) * H) for k in range(4))
    perm = xp.concatenate([i, f, o, g])
    return perm, xp.argsort(perm)


def lstm_forward(x, state, params, *, reverse=False, mask=None):
    """Whole sequence, fast path. x: (T, B, I), state = (h0, c0) each (B, H), mask: None or (T, B, 1).

    Returns (out (T, B, H), (h_n, c_n), cache).
    """
    xp = array_module(x)
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    perm, _ = _gate_permutation(xp, H)
    scale = xp.full((4 * H, 1), -1.0, dtype=x.dtype)  # sigmoid rows: exp(-a)
    scale[3 * H :] = -2.0  # g rows: tanh(a) = 2 sigma(2a) - 1
    w_ih_s = w_ih[perm] * scale
    w_hh_s_t = (w_hh[perm] * scale).T.copy()
    bias_s = None if b_ih is None else (b_ih + b_hh)[perm] * scale[:, 0]
    gates = input_projection(x, w_ih_s, bias_s)  # overwritten in place by (i, f, o, g)
    hbuf = xp.empty((T + 1, B, H), dtype=x.dtype)
    cbuf = xp.empty((T + 1, B, H), dtype=x.dtype)
    tanh_c = xp.empty((T, B, H), dtype=x.dtype)
    first, prev, new, after, before = state_slots(T, reverse)
    hbuf[first], cbuf[first] = state
    rec = xp.empty((B, 4 * H), dtype=x.dtype)
    ig = xp.empty((B, H), dtype=x.dtype)

    def pointwise(t):
        """Gates, cell and hidden state of step t (pointwise, in place)."""
        h_prev, c_prev = hbuf[prev(t)], cbuf[prev(t)]
        h_new, c_new = hbuf[new(t)], cbuf[new(t)]
        gt, tc, ig_r = gates[t], tanh_c[t], ig
        gt += rec
        sigmoid_from_negated_(xp, gt)
        i, f, o, g = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H : 3 * H], gt[:, 3 * H :]
        tanh_from_sigmoid_(g)
        xp.multiply(f, c_prev, out=c_new)
        xp.multiply(i, g, out=ig_r)
        c_new += ig_r
        xp.copyto(tc, c_new)
        tanh_(xp, tc)
        xp.multiply(o, tc, out=h_new)
        if mask is not None:  # padded steps carry the state through unchanged
            m = ~mask[t]
            xp.copyto(h_new, h_prev, where=m)
            xp.copyto(c_new, c_prev, where=m)

    with quiet_overflow(xp):
        for t in time_order(T, reverse):
            xp.matmul(hbuf[prev(t)], w_hh_s_t, out=rec)
            pointwise(t)
    if mask is None:
        out = hbuf[after]
    else:  # output o * tanh(c) at valid steps, zero at padded ones
        out = xp.where(mask, gates[:, :, 2 * H : 3 * H] * tanh_c, 0)
    last = new(0 if reverse else T - 1)
    cache = (x, hbuf, cbuf, gates, tanh_c, params, reverse, mask)
    return out, (hbuf[last], cbuf[last]), cache


def lstm_backward(dout, dstate_n, cache):
    """Whole sequence backward (BPTT). dout: (T, B, H) or None; dstate_n = (dh_n, dc_n), parts may be None.

    Returns (dx (T, B, I), (dh0, dc0), dparams).
    """
    x, hbuf, cbuf, gates, tanh_c, params, reverse, mask = cache
    xp = array_module(x)
    w_ih, w_hh, b_ih, _ = unpack(params)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    perm, inv = _gate_permutation(xp, H)
    w_hh_p = w_hh[perm]
    _, prev, _, _, before = state_slots(T, reverse)
    dh_n, dc_n = dstate_n if dstate_n is not None else (None, None)
    dh = xp.zeros((B, H), dtype=x.dtype) if dh_n is None else dh_n.copy()
    dc = xp.zeros((B, H), dtype=x.dtype) if dc_n is None else dc_n.copy()
    if dout is not None and mask is not None:
        dout = xp.where(mask, dout, 0)
    dgates = xp.empty((T, B, 4 * H), dtype=x.dtype)  # (i, f, o, g) order
    tmp = xp.empty((B, H), dtype=x.dtype)
    tmp3 = xp.empty((B, 3 * H), dtype=x.dtype)
    dh_skip = xp.empty((B, H), dtype=x.dtype)
    dc_skip = xp.empty((B, H), dtype=x.dtype)

    def pointwise(t):
        """Gate gradients of step t into dgates[t]; leaves dc = dL/dc_{t-1} (cell-path part)."""
        dh_r, dc_r, tmp_r, tmp3_r = dh, dc, tmp, tmp3
        if dout is not None:
            dh_r += dout[t]
        gt, dgt, tc = gates[t], dgates[t], tanh_c[t]
        i, f, o, g = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H : 3 * H], gt[:, 3 * H :]
        di, df, do, dg = dgt[:, :H], dgt[:, H : 2 * H], dgt[:, 2 * H : 3 * H], dgt[:, 3 * H :]
        if mask is not None:
            m = mask[t]
            xp.multiply(dh_r, ~m, out=dh_skip)
            xp.multiply(dc_r, ~m, out=dc_skip)
            dh_r *= m
            dc_r *= m
        xp.multiply(dh_r, tc, out=do)
        # dc += dh * o * (1 - tanh(c)^2)
        xp.multiply(tc, tc, out=tmp_r)
        xp.subtract(1, tmp_r, out=tmp_r)
        tmp_r *= o
        tmp_r *= dh_r
        dc_r += tmp_r
        xp.multiply(dc_r, g, out=di)
        xp.multiply(dc_r, cbuf[prev(t)], out=df)
        xp.multiply(dc_r, i, out=dg)
        xp.multiply(g, g, out=tmp_r)
        xp.subtract(1, tmp_r, out=tmp_r)
        dg *= tmp_r
        sig = gt[:, : 3 * H]
        xp.multiply(sig, sig, out=tmp3_r)
        xp.subtract(sig, tmp3_r, out=tmp3_r)  # s(1-s)
        dgt[:, : 3 * H] *= tmp3_r
        dc_r *= f
        if mask is not None:
            dc_r += dc_skip

    for t in reversed(time_order(T, reverse)):
        pointwise(t)
        xp.matmul(dgates[t], w_hh_p, out=dh)
        if mask is not None:
            dh += dh_skip
    grads = weight_gradients(dgates, x, hbuf[before], has_bias=b_ih is not None)
    grads = {name: grad[inv] for name, grad in grads.items()}  # rows back to (i, f, g, o)
    return input_gradient(dgates, w_ih[perm]), (dh, dc), grads
