r"""GRU cell, as in ``torch.nn.GRU`` (gate order r, z, n in the weights).

Forward, one step::

    r = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    m = W_hn h_{t-1} + b_hn                       (kept: the reset gate multiplies it)
    n = tanh(W_in x_t + b_in + r * m)
    h_t = (1 - z) * n + z * h_{t-1}  =  n + z * (h_{t-1} - n)

Backward, one step. Given dh = dL/dh_t::

    dn = dh * (1 - z)        dz = dh * (h_{t-1} - n)
    da_n = dn * (1 - n^2)    dr = da_n * m
    da_r = dr * r(1-r)       da_z = dz * z(1-z)
    input side:     dG_x = [da_r, da_z, da_n]       dx_t = dG_x W_ih,   dW_ih += dG_x^T x_t
    recurrent side: dG_h = [da_r, da_z, da_n * r]   dW_hh += dG_h^T h_{t-1}
    dh_{t-1} = dh * z + dG_h W_hh

The two sides differ only in the n block because the reset gate sits *inside* the
recurrent term of n (torch's convention; the original GRU paper applies r before W_hn).
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
    time_order,
    unpack,
    weight_gradients,
)
from ._parallel import batch_blocks, for_each_block


def gru_step_forward(x_t, h_prev, params):
    """One step. Returns (h_t, cache)."""
    xp = array_module(x_t)
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    ax = x_t @ w_ih.T
    ah = h_prev @ w_hh.T
    if b_ih is not None:
        ax = ax + b_ih
        ah = ah + b_hh
    ax_r, ax_z, ax_n = xp.split(ax, 3, axis=1)
    ah_r, ah_z, m = xp.split(ah, 3, axis=1)
    r = sigmoid(xp, ax_r + ah_r)
    z = sigmoid(xp, ax_z + ah_z)
    n = xp.tanh(ax_n + r * m)
    h = n + z * (h_prev - n)
    return h, (x_t, h_prev, r, z, n, m, params)


def gru_step_backward(dh, cache):
    """One step back. Returns (dx_t, dh_{t-1}, dparams)."""
    xp = array_module(dh)
    x_t, h_prev, r, z, n, m, params = cache
    w_ih, w_hh, b_ih, _ = unpack(params)
    dn = dh * (1 - z)
    dz = dh * (h_prev - n)
    da_n = dn * (1 - n**2)
    da_r = da_n * m * r * (1 - r)
    da_z = dz * z * (1 - z)
    dg_x = xp.concatenate([da_r, da_z, da_n], axis=1)
    dg_h = xp.concatenate([da_r, da_z, da_n * r], axis=1)
    dparams = {"weight_ih": dg_x.T @ x_t, "weight_hh": dg_h.T @ h_prev}
    if b_ih is not None:
        dparams["bias_ih"] = dg_x.sum(axis=0)
        dparams["bias_hh"] = dg_h.sum(axis=0)
    return dg_x @ w_ih, dh * z + dg_h @ w_hh, dparams


def gru_forward(x, h0, params, *, reverse=False, mask=None):
    """Whole sequence, fast path. x: (T, B, I), h0: (B, H), mask: None or bool (T, B, 1).

    r and z use sigma(a) = 1 / (1 + exp(-a)) on weights pre-scaled by -1 (one exp for both gates).
    Returns (out (T, B, H), h_n, cache).
    """
    xp = array_module(x)
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    scale = xp.ones((3 * H, 1), dtype=x.dtype)
    scale[: 2 * H] = -1.0
    w_hh_s_t = (w_hh * scale).T.copy()
    if b_ih is None:
        bias_x, b_hn = None, None
    else:
        bias_x = b_ih.copy()
        bias_x[: 2 * H] += b_hh[: 2 * H]  # r, z biases fold into the input projection
        bias_x *= scale[:, 0]
        b_hn = b_hh[2 * H :]
    mbuf = xp.empty((T, B, H), dtype=x.dtype)  # m_t = W_hn h_{t-1} + b_hn
    hbuf = xp.empty((T + 1, B, H), dtype=x.dtype)
    first, prev, new, after, before = state_slots(T, reverse)
    hbuf[first] = h0

    def recur(rows):
        """The time loop for the batch rows ``rows`` (rows evolve independently), in place."""
        g_all, h_all, m_all = gates[:, rows], hbuf[:, rows], mbuf[:, rows]
        skip = None if mask is None else ~mask[:, rows]
        rec = xp.empty((g_all.shape[1], 3 * H), dtype=x.dtype)
        with quiet_overflow(xp):
            for t in time_order(T, reverse):
                h_prev, h_new, gt, m = h_all[prev(t)], h_all[new(t)], g_all[t], m_all[t]
                xp.matmul(h_prev, w_hh_s_t, out=rec)
                rz = gt[:, : 2 * H]
                rz += rec[:, : 2 * H]
                sigmoid_from_negated_(xp, rz)
                r, z, n = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H :]
                if b_hn is None:
                    xp.copyto(m, rec[:, 2 * H :])
                else:
                    xp.add(rec[:, 2 * H :], b_hn, out=m)
                xp.multiply(r, m, out=h_new)  # h_new as scratch
                n += h_new
                tanh_(xp, n)
                xp.subtract(h_prev, n, out=h_new)  # h_t = n + z (h_{t-1} - n)
                h_new *= z
                h_new += n
                if skip is not None:
                    xp.copyto(h_new, h_prev, where=skip[t])

    with batch_blocks(xp, B, 3 * H) as row_blocks:  # batch-row blocks run in parallel (see _parallel)
        gates = input_projection(x, w_ih * scale, bias_x, parts=len(row_blocks))  # overwritten by (r, z, n)
        for_each_block(recur, row_blocks)
    if mask is None:
        out = hbuf[after]
    else:  # the cell output n + z (h_prev - n) at valid steps, zero at padded ones
        n, z = gates[:, :, 2 * H :], gates[:, :, H : 2 * H]
        out = xp.where(mask, n + z * (hbuf[before] - n), 0)
    last = new(0 if reverse else T - 1)
    cache = (x, hbuf, gates, mbuf, params, reverse, mask)
    return out, hbuf[last], cache


def gru_backward(dout, dh_n, cache):
    """Whole sequence backward (BPTT). Returns (dx (T, B, I), dh0 (B, H), dparams)."""
    x, hbuf, gates, mbuf, params, reverse, mask = cache
    xp = array_module(x)
    w_ih, w_hh, b_ih, _ = unpack(params)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    _, prev, _, _, before = state_slots(T, reverse)
    dh = xp.zeros((B, H), dtype=x.dtype) if dh_n is None else dh_n.copy()
    if dout is not None and mask is not None:
        dout = xp.where(mask, dout, 0)
    dg_x = xp.empty((T, B, 3 * H), dtype=x.dtype)
    dg_h = xp.empty((T, B, 3 * H), dtype=x.dtype)

    def recur(rows):
        """BPTT for the batch rows ``rows``: into dg_x, dg_h [:, rows]; dh ends as dL/dh_0 there."""
        g_all, dgx_all, dgh_all = gates[:, rows], dg_x[:, rows], dg_h[:, rows]
        m_all, h_all = mbuf[:, rows], hbuf[:, rows]
        dout_all = None if dout is None else dout[:, rows]
        valid = None if mask is None else mask[:, rows]
        dh_r = dh[rows]
        b = dh_r.shape[0]
        tmp, rec = xp.empty((b, H), dtype=x.dtype), xp.empty((b, H), dtype=x.dtype)
        tmp2 = xp.empty((b, 2 * H), dtype=x.dtype)
        for t in reversed(time_order(T, reverse)):
            if dout_all is not None:
                dh_r += dout_all[t]
            if valid is not None:
                dh_skip = xp.where(valid[t], 0, dh_r)
                dh_r *= valid[t]
            gt, dgx, dgh = g_all[t], dgx_all[t], dgh_all[t]
            r, z, n = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H :]
            da_r, da_z, da_n = dgx[:, :H], dgx[:, H : 2 * H], dgx[:, 2 * H :]
            # da_n = dh * (1 - z) * (1 - n^2)
            xp.subtract(1, z, out=da_n)
            da_n *= dh_r
            xp.multiply(n, n, out=tmp)
            xp.subtract(1, tmp, out=tmp)
            da_n *= tmp
            # da_r = da_n * m  (times r(1-r) below);  da_z = dh * (h_prev - n)  (times z(1-z) below)
            xp.multiply(da_n, m_all[t], out=da_r)
            xp.subtract(h_all[prev(t)], n, out=da_z)
            da_z *= dh_r
            rz = gt[:, : 2 * H]
            xp.multiply(rz, rz, out=tmp2)
            xp.subtract(rz, tmp2, out=tmp2)
            dgx[:, : 2 * H] *= tmp2
            dgh[:, : 2 * H] = dgx[:, : 2 * H]
            xp.multiply(da_n, r, out=dgh[:, 2 * H :])
            # dh_{t-1} = dh * z + dG_h W_hh
            xp.matmul(dgh, w_hh, out=rec)
            dh_r *= z
            dh_r += rec
            if valid is not None:
                dh_r += dh_skip

    with batch_blocks(xp, B, 3 * H) as row_blocks:
        for_each_block(recur, row_blocks)
        grads = weight_gradients(dg_x, x, hbuf[before], dgates_hh=dg_h, has_bias=b_ih is not None,
                                 parts=len(row_blocks))
        dx = input_gradient(dg_x, w_ih, parts=len(row_blocks))
    return dx, dh, grads
