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
- the gate rows are reordered once to (o, i, f, g): the three sigmoid gates are one contiguous
  block, and so are the three gates whose gradient is a multiple of dc (i, f, g);
- sigma(a) = 1 / (1 + exp(-a)) and tanh(a) = 2 sigma(2a) - 1: the rows of the weights and biases
  are pre-scaled once by -1 (sigmoid gates) and -2 (g), so one in-place ``exp``, ``+ 1`` and
  ``reciprocal`` over the whole gate block give all four gates (g then takes ``* 2 - 1``);
- the backward splits each gate gradient into a factor known from the forward pass and the
  incoming dh or dc::

      da_o = dh * [tanh(c_t) o(1-o)]      da_i = dc * [g i(1-i)]
      da_f = dc * [c_{t-1} f(1-f)]        da_g = dc * [i (1-g^2)]     dc += dh * [o (1-tanh(c_t)^2)]

  The backward loop computes the bracketed factors for a cache-sized run of steps at a time
  (``backward_time_chunks``), in a few passes over the whole run, and is then left with a handful of
  multiplies and the GEMM per step: for short, narrow problems (tiny row: 20 steps, B=1) this
  turns ~17 ufunc calls per step into ~6;
- batch rows are independent, so both time loops run on row blocks in parallel (``_parallel``).
"""

from __future__ import annotations

from ..backend import array_module
from ._common import (
    backward_time_chunks,
    input_gradient,
    input_projection,
    quiet_overflow,
    sigmoid,
    sigmoid_from_negated_,
    span,
    state_slots,
    tanh_,
    tanh_from_sigmoid_,
    time_order,
    unpack,
    weight_gradients,
)
from ._parallel import batch_blocks, for_each_block


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
    """Row order (o, i, f, g) from torch's (i, f, g, o), and its inverse."""
    i, f, g, o = (xp.arange(k * H, (k + 1) * H) for k in range(4))
    perm = xp.concatenate([o, i, f, g])
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
    hbuf = xp.empty((T + 1, B, H), dtype=x.dtype)
    cbuf = xp.empty((T + 1, B, H), dtype=x.dtype)
    tanh_c = xp.empty((T, B, H), dtype=x.dtype)
    first, prev, new, after, before = state_slots(T, reverse)
    hbuf[first], cbuf[first] = state

    def recur(rows):
        """The time loop for the batch rows ``rows`` (rows evolve independently), in place."""
        g_all, h_all, c_all, tc_all = gates[:, rows], hbuf[:, rows], cbuf[:, rows], tanh_c[:, rows]
        skip = None if mask is None else ~mask[:, rows]
        rec = xp.empty((g_all.shape[1], 4 * H), dtype=x.dtype)
        ig = xp.empty((g_all.shape[1], H), dtype=x.dtype)
        with quiet_overflow(xp):
            for t in time_order(T, reverse):
                h_prev, c_prev, h_new, c_new = h_all[prev(t)], c_all[prev(t)], h_all[new(t)], c_all[new(t)]
                gt, tc = g_all[t], tc_all[t]
                xp.matmul(h_prev, w_hh_s_t, out=rec)
                gt += rec
                sigmoid_from_negated_(xp, gt)
                o, i, f, g = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H : 3 * H], gt[:, 3 * H :]
                tanh_from_sigmoid_(g)
                xp.multiply(f, c_prev, out=c_new)  # c_t = f * c_{t-1} + i * g
                xp.multiply(i, g, out=ig)
                c_new += ig
                tanh_(xp, c_new, out=tc)
                xp.multiply(o, tc, out=h_new)  # h_t = o * tanh(c_t)
                if skip is not None:  # padded steps carry the state through unchanged
                    xp.copyto(h_new, h_prev, where=skip[t])
                    xp.copyto(c_new, c_prev, where=skip[t])

    with batch_blocks(xp, B, 4 * H) as row_blocks:  # batch-row blocks run in parallel (see _parallel)
        gates = input_projection(x, w_ih_s, bias_s, parts=len(row_blocks))  # overwritten by (o, i, f, g)
        for_each_block(recur, row_blocks)
    if mask is None:
        out = hbuf[after]
    else:  # output o * tanh(c) at valid steps, zero at padded ones
        out = xp.where(mask, gates[:, :, :H] * tanh_c, 0)
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
    _, _, _, _, before = state_slots(T, reverse)
    c_before = cbuf[before]  # c_{t-1} of step t, in time order
    dh_n, dc_n = dstate_n if dstate_n is not None else (None, None)
    dh = xp.zeros((B, H), dtype=x.dtype) if dh_n is None else dh_n.copy()
    dc = xp.zeros((B, H), dtype=x.dtype) if dc_n is None else dc_n.copy()
    if dout is not None and mask is not None:
        dout = xp.where(mask, dout, 0)
    dgates = xp.empty((T, B, 4 * H), dtype=x.dtype)  # (o, i, f, g); first the factors, then da
    dc_factor = xp.empty((T, B, H), dtype=x.dtype)  # o (1 - tanh(c)^2)

    def factors(steps, rows):
        """The bracketed factors (module docstring) of ``steps`` x ``rows``, a few passes over the block."""
        gt, p, tc, q = gates[steps, rows], dgates[steps, rows], tanh_c[steps, rows], dc_factor[steps, rows]
        o, i, g = gt[..., :H], gt[..., H : 2 * H], gt[..., 3 * H :]
        xp.subtract(1, gt[..., : 3 * H], out=p[..., : 3 * H])
        p[..., : 3 * H] *= gt[..., : 3 * H]  # s(1-s) for o, i, f
        p[..., :H] *= tc
        p[..., H : 2 * H] *= g
        p[..., 2 * H : 3 * H] *= c_before[steps, rows]
        p_g = p[..., 3 * H :]
        xp.multiply(g, g, out=p_g)
        xp.subtract(1, p_g, out=p_g)
        p_g *= i
        xp.multiply(tc, tc, out=q)
        xp.subtract(1, q, out=q)
        q *= o

    def recur(rows):
        """BPTT for the batch rows ``rows``: da into dgates[:, rows]; dh, dc end as dL/dh_0, dL/dc_0 there."""
        da_all, q_all, g_all = dgates[:, rows], dc_factor[:, rows], gates[:, rows]
        dout_all = None if dout is None else dout[:, rows]
        valid = None if mask is None else mask[:, rows]
        dh_r, dc_r = dh[rows], dc[rows]
        b = dh_r.shape[0]
        tmp, dh_skip, dc_skip = (xp.empty((b, H), dtype=x.dtype) for _ in range(3))
        for steps in backward_time_chunks(T, reverse, b * 5 * H):
            factors(span(steps), rows)
            for t in steps:
                if dout_all is not None:
                    dh_r += dout_all[t]
                if valid is not None:  # padded steps: gradients pass straight through to step t-1
                    m = valid[t]
                    xp.multiply(dh_r, ~m, out=dh_skip)
                    xp.multiply(dc_r, ~m, out=dc_skip)
                    dh_r *= m
                    dc_r *= m
                da = da_all[t]
                xp.multiply(dh_r, q_all[t], out=tmp)
                dc_r += tmp  # dc += dh * o (1 - tanh(c)^2)
                da[:, :H] *= dh_r  # da_o
                da.reshape(b, 4, H)[:, 1:] *= dc_r[:, None, :]  # da_i, da_f, da_g
                dc_r *= g_all[t][:, 2 * H : 3 * H]  # dc_{t-1} = dc * f
                xp.matmul(da, w_hh_p, out=dh_r)
                if valid is not None:
                    dh_r += dh_skip
                    dc_r += dc_skip

    with batch_blocks(xp, B, 4 * H) as row_blocks:
        for_each_block(recur, row_blocks)
        grads = weight_gradients(dgates, x, hbuf[before], has_bias=b_ih is not None, parts=len(row_blocks))
        dx = input_gradient(dgates, w_ih[perm], parts=len(row_blocks))
    grads = {name: grad[inv] for name, grad in grads.items()}  # rows back to (i, f, g, o)
    return dx, (dh, dc), grads
