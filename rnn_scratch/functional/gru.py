r"""GRU cell, as in ``torch.nn.GRU`` (gate order r, z, n in the weights).

Sizes: B batch rows, I input features, H hidden units, T steps. The state is the tuple ``(h,)``.

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

from dataclasses import dataclass
from typing import NamedTuple

from ..backend import array_module, fused_enabled, launch
from ._common import Cell, SequenceCache, backward_setup, forward_setup, rejoin_padded, split_padded, unpack
from ._cuda import fused_loop, ints, run_time_loop
from ._gates import quiet_overflow, sigmoid, sigmoid_from_negated_
from ._gemm import RecurrentWeight, input_gradient, input_projection, weight_gradients
from ._parallel import batch_blocks


class GRUStepCache(NamedTuple):
    """What one step's backward needs: x_t (B, I); h_{t-1}, r, z, n, m = W_hn h_{t-1} + b_hn, each (B, H);
    the params."""

    x: object
    h_prev: object
    r: object
    z: object
    n: object
    m: object
    params: dict


def gru_step_forward(x_t, state, params):
    """One step. x_t (B, I); state = (h_{t-1},) with h_{t-1} (B, H); params: weight_ih (3H, I),
    weight_hh (3H, H), bias_ih and bias_hh (3H,) or None. Returns ((h_t,), cache)."""
    xp = array_module(x_t)
    (h_prev,) = state
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
    return (h,), GRUStepCache(x_t, h_prev, r, z, n, m, params)


def gru_step_backward(dstate, cache: GRUStepCache):
    """One step back. dstate = (dL/dh_t,), (B, H). Returns (dx_t (B, I), (dL/dh_{t-1},), dparams)."""
    xp = array_module(dstate[0])
    (dh,) = dstate
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
    return dg_x @ w_ih, (dh * z + dg_h @ w_hh,), dparams


_GRU_CUDA = r"""
// The GRU step, fused: the NumPy loops of gru_forward / gru_backward, one thread per (row b, unit j).
extern "C" __global__ void gru_forward_step(
    real* gates, const real* a_hh,            // (B, 3H): -a_r, -a_z, W_in x + b_in | W_hh h_{t-1} (r, z negated)
    const real* b_hn,                         // (H,) or a dummy (has_bias = 0)
    const real* h_prev, real* h_new, real* m, // (B, H); m out: W_hn h_{t-1} + b_hn
    const bool* valid, int has_mask, int has_bias, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    real* gates_t = gates + (size_t)b * 3 * H;
    const real* a_hh_t = a_hh + (size_t)b * 3 * H;
    real r = 1 / (1 + exp(gates_t[j] + a_hh_t[j]));
    real z = 1 / (1 + exp(gates_t[H + j] + a_hh_t[H + j]));
    real m_t = a_hh_t[2 * H + j] + (has_bias ? b_hn[j] : 0);   // m = W_hn h_{t-1} + b_hn
    real n = tanh(gates_t[2 * H + j] + r * m_t);                 // n = tanh(W_in x_t + b_in + r * m)
    gates_t[j] = r; gates_t[H + j] = z; gates_t[2 * H + j] = n;
    m[k] = m_t;
    bool keep = !has_mask || valid[b];                           // padded steps carry the state through
    h_new[k] = keep ? n + z * (h_prev[k] - n) : h_prev[k];       // h_t = n + z (h_{t-1} - n)
}

extern "C" __global__ void gru_backward_step(
    const real* gates, const real* m, const real* h_prev,       // (B, 3H) r, z, n; (B, H); (B, H)
    const real* dout_t,                                         // (B, H) or a dummy (has_dout = 0)
    real* dh_carry, const real* dh_gemm,                        // dh = dh_carry + dh_gemm (+ dout); carry out
    real* dgates_x, real* dgates_h,                             // (B, 3H) out: [da_r, da_z, da_n], [.., da_n r]
    const bool* valid, int has_mask, int has_dout, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    const real* gates_t = gates + (size_t)b * 3 * H;
    real* dgx = dgates_x + (size_t)b * 3 * H;
    real* dgh = dgates_h + (size_t)b * 3 * H;
    real dh = dh_carry[k] + dh_gemm[k] + (has_dout ? dout_t[k] : 0);
    if (has_mask && !valid[b]) {                                // padded: the gradient passes straight through
        dgx[j] = 0; dgx[H + j] = 0; dgx[2 * H + j] = 0;
        dgh[j] = 0; dgh[H + j] = 0; dgh[2 * H + j] = 0;
        dh_carry[k] = dh;
        return;
    }
    real r = gates_t[j], z = gates_t[H + j], n = gates_t[2 * H + j];
    real da_n = dh * (1 - z) * (1 - n * n);                     // da_n = dh (1 - z) (1 - n^2)
    real da_r = da_n * m[k] * r * (1 - r);                      // da_r = da_n m r (1 - r)
    real da_z = dh * (h_prev[k] - n) * z * (1 - z);             // da_z = dh (h_{t-1} - n) z (1 - z)
    dgx[j] = da_r; dgx[H + j] = da_z; dgx[2 * H + j] = da_n;
    dgh[j] = da_r; dgh[H + j] = da_z; dgh[2 * H + j] = da_n * r;
    dh_carry[k] = dh * z;                                       // dh_{t-1} = dh z + dG_h W_hh (the next GEMM)
}
"""


@dataclass(frozen=True, eq=False)
class GRUCache(SequenceCache):
    """What the whole-sequence backward needs: :class:`SequenceCache`'s fields, and gates (T, B, 3H): r, z, n;
    m (T, B, H): W_hn h_{t-1} + b_hn."""

    gates: object = None
    m: object = None


def gru_forward(x, state, params, *, reverse=False, mask=None):
    """Whole sequence, fast path. x (T, B, I), state = (h0,) with h0 (B, H), mask None or bool (T, B, 1).

    r and z use sigma(a) = 1 / (1 + exp(-a)) on weights pre-scaled by -1 (one exp for both gates).
    Returns (out (T, B, H), (h_n,), :class:`GRUCache`).
    """
    xp, x, (T, B, _, H), (w_ih, w_hh, b_ih, b_hh), slots, (h,) = forward_setup(x, state, params, reverse, mask)
    scale = xp.ones((3 * H, 1), dtype=x.dtype)
    scale[: 2 * H] = -1.0
    if b_ih is None:
        bias_x, b_hn = None, None
    else:
        bias_x = b_ih.copy()
        bias_x[: 2 * H] += b_hh[: 2 * H]  # r, z biases fold into the input projection
        bias_x *= scale[:, 0]
        b_hn = b_hh[2 * H :]
    m = xp.empty((T, B, H), dtype=x.dtype)  # m_t = W_hn h_{t-1} + b_hn

    def recur(rows):
        """The time loop for the batch rows ``rows`` (rows evolve independently), in place."""
        gates_rows, h_rows, m_rows = gates[:, rows], h[:, rows], m[:, rows]
        skip = None if mask is None else ~mask[:, rows]
        w_hh_s = RecurrentWeight(xp, w_hh * scale, gates_rows.shape[1])  # r and z rows negated
        scratch = w_hh_s.scratch(gates_rows.shape[1])
        with quiet_overflow(xp):
            for t in slots.order:
                h_prev, h_new = h_rows[slots.slot_before(t)], h_rows[slots.slot_after(t)]
                gates_t, m_t = gates_rows[t], m_rows[t]
                a_hh = w_hh_s.h_wt(h_prev, scratch)  # W_hh h_{t-1}
                rz = gates_t[:, : 2 * H]
                rz += a_hh[:, : 2 * H]
                sigmoid_from_negated_(xp, rz)
                r, z, n = gates_t[:, :H], gates_t[:, H : 2 * H], gates_t[:, 2 * H :]
                if b_hn is None:
                    xp.copyto(m_t, a_hh[:, 2 * H :])
                else:
                    xp.add(a_hh[:, 2 * H :], b_hn, out=m_t)
                xp.multiply(r, m_t, out=h_new)  # h_new as scratch for r * m
                n += h_new
                xp.tanh(n, out=n)  # n = tanh(W_in x_t + b_in + r * m)
                xp.subtract(h_prev, n, out=h_new)  # h_t = n + z (h_{t-1} - n)
                h_new *= z
                h_new += n
                if skip is not None:  # padded steps carry the state through unchanged
                    xp.copyto(h_new, h_prev, where=skip[t])

    def recur_fused():
        """The same time loop on the GPU: per step one GEMM and one fused kernel (gru_forward_step)."""
        loop = fused_loop(xp, _GRU_CUDA, "gru_forward_step", w_hh * scale, mask, T, B, x.dtype)
        b_hn_arg = xp.zeros(1, dtype=x.dtype) if b_hn is None else xp.ascontiguousarray(b_hn)

        def issue():
            for t in slots.order:
                before, after = slots.slot_before(t), slots.slot_after(t)
                a_hh = loop.w.h_wt(h[before], loop.scratch)  # W_hh h_{t-1}, r and z rows negated
                launch(loop.step, B * H, (gates[t], a_hh, b_hn_arg, h[before], h[after], m[t], loop.valid[t],
                                          loop.has_mask, *ints(b_hn is not None, B, H)))

        return run_time_loop("gru_forward", (gates, h, m, loop.scratch, loop.w.w_t, b_hn_arg), issue)

    if fused_enabled(xp):
        gates = input_projection(x, w_ih * scale, bias_x)
        recur_fused()
    else:
        with batch_blocks(xp, B, 3 * H) as blocks:  # batch-row blocks run in parallel (see _parallel)
            gates = input_projection(x, w_ih * scale, bias_x, blocks)  # overwritten by the gates (r, z, n)
            blocks.map(recur)
    if mask is None:
        out = h[slots.after]
    else:  # the cell output n + z (h_prev - n) at valid steps, zero at padded ones
        n, z = gates[:, :, 2 * H :], gates[:, :, H : 2 * H]
        out = xp.where(mask, n + z * (h[slots.before] - n), 0)
    return out, (h[slots.final],), GRUCache(x=x, h=h, params=params, slots=slots, mask=mask, gates=gates, m=m)


def gru_backward(dout, dstate_n, cache: GRUCache):
    """Whole sequence backward (BPTT). dout (T, B, H) or None; dstate_n = (dh_n,) or None, dh_n (B, H).

    Returns (dx (T, B, I), (dh0,), dparams).
    """
    xp, (T, B, _, H), (w_ih, w_hh, b_ih, _), dout, (dh,) = backward_setup(cache, dout, dstate_n, 1)
    mask, slots, gates = cache.mask, cache.slots, cache.gates
    dgates_x = xp.empty((T, B, 3 * H), dtype=cache.x.dtype)  # dG_x = [da_r, da_z, da_n]
    dgates_h = xp.empty((T, B, 3 * H), dtype=cache.x.dtype)  # dG_h = [da_r, da_z, da_n * r]

    def recur(rows):
        """BPTT for the batch rows ``rows``: into dgates_x, dgates_h [:, rows]; dh ends as dL/dh_0 there."""
        gates_rows, dgates_x_rows, dgates_h_rows = gates[:, rows], dgates_x[:, rows], dgates_h[:, rows]
        m_rows, h_rows = cache.m[:, rows], cache.h[:, rows]
        dout_rows = None if dout is None else dout[:, rows]
        valid = None if mask is None else mask[:, rows]
        dh_rows = dh[rows]
        b = dh_rows.shape[0]
        one_minus_n2, dh_hh, dh_carried = (xp.empty((b, H), dtype=dh.dtype) for _ in range(3))
        w = RecurrentWeight(xp, w_hh, b)
        scratch = w.scratch(b, backward=True)
        sigmoid_grads = xp.empty((b, 2 * H), dtype=dh.dtype)
        for t in slots.backward_order:
            if dout_rows is not None:
                dh_rows += dout_rows[t]
            if valid is not None:  # padded steps: the gradient passes straight through to step t-1
                split_padded(xp, dh_rows, valid[t], dh_carried)
            gates_t, dgx, dgh = gates_rows[t], dgates_x_rows[t], dgates_h_rows[t]
            r, z, n = gates_t[:, :H], gates_t[:, H : 2 * H], gates_t[:, 2 * H :]
            da_r, da_z, da_n = dgx[:, :H], dgx[:, H : 2 * H], dgx[:, 2 * H :]
            # da_n = dh * (1 - z) * (1 - n^2)
            xp.subtract(1, z, out=da_n)
            da_n *= dh_rows
            xp.multiply(n, n, out=one_minus_n2)
            xp.subtract(1, one_minus_n2, out=one_minus_n2)
            da_n *= one_minus_n2
            # da_r = da_n * m  (times r(1-r) below);  da_z = dh * (h_prev - n)  (times z(1-z) below)
            xp.multiply(da_n, m_rows[t], out=da_r)
            xp.subtract(h_rows[slots.slot_before(t)], n, out=da_z)
            da_z *= dh_rows
            rz = gates_t[:, : 2 * H]
            xp.multiply(rz, rz, out=sigmoid_grads)
            xp.subtract(rz, sigmoid_grads, out=sigmoid_grads)  # r(1-r), z(1-z)
            dgx[:, : 2 * H] *= sigmoid_grads
            dgh[:, : 2 * H] = dgx[:, : 2 * H]
            xp.multiply(da_n, r, out=dgh[:, 2 * H :])
            # dh_{t-1} = dh * z + dG_h W_hh
            w.product(dh_hh, dgh, scratch)
            dh_rows *= z
            dh_rows += dh_hh
            if valid is not None:
                rejoin_padded(dh_rows, dh_carried)

    def recur_fused():
        """The same BPTT on the GPU: per step one fused kernel (gru_backward_step) and one GEMM."""
        loop = fused_loop(xp, _GRU_CUDA, "gru_backward_step", w_hh, mask, T, B, dh.dtype, dh, dout)
        h_prev_all = cache.h_prev

        def issue():
            for t in slots.backward_order:
                launch(loop.step, B * H, (gates[t], cache.m[t], h_prev_all[t], loop.douts[t], dh, loop.dh_gemm,
                                          dgates_x[t], dgates_h[t], loop.valid[t], loop.has_mask, loop.has_dout,
                                          *ints(B, H)))
                loop.w.product(loop.dh_gemm, dgates_h[t], loop.scratch)  # dG_h W_hh

        run_time_loop("gru_backward", (gates, cache.m, dgates_x, dgates_h, dh, loop.dh_gemm, loop.w.w), issue)
        xp.add(dh, loop.dh_gemm, out=dh)  # dL/dh_0

    if fused_enabled(xp):
        recur_fused()
        grads = weight_gradients(dgates_x, cache.x, cache.h_prev, dgates_hh=dgates_h, has_bias=b_ih is not None)
        dx = input_gradient(dgates_x, w_ih)
    else:
        with batch_blocks(xp, B, 3 * H) as blocks:
            blocks.map(recur)
            grads = weight_gradients(dgates_x, cache.x, cache.h_prev, dgates_hh=dgates_h,
                                     has_bias=b_ih is not None, blocks=blocks)
            dx = input_gradient(dgates_x, w_ih, blocks)
    return dx, (dh,), grads


# cache: h, the 3 gates, m; backward: dG_x and dG_h (3 each)
GRU_CELL = Cell("gru", 3, ("h",), gru_step_forward, gru_step_backward, gru_forward, gru_backward, memory=(5, 6))


# -- the step's Jacobians, factored per hidden unit (the forward-mode algorithms of rnn_scratch.online) --------
# (imported here, with the block they serve, so that the lines above keep the numbers docs/derivations.md quotes)
from dataclasses import replace  # noqa: E402

from ._common import ImmediateTerm, StepDerivatives  # noqa: E402


def gru_step_derivatives(cache: GRUStepCache) -> StepDerivatives:
    r"""The Jacobians of one step, per hidden unit: :class:`~rnn_scratch.functional.StepDerivatives`.

    h_t = (1 - z) n + z h_{t-1}, with the input side a^x = W_ih x_t + b_ih and the recurrent side
    a^h = W_hh h_{t-1} + b_hh (gates r, z, n; m = a^h_n): r = sigma(a^x_r + a^h_r), z = sigma(a^x_z + a^h_z),
    n = tanh(a^x_n + r m). With dn = dh_t/d(a^x_n) = (1 - z)(1 - n^2)::

        dh_t/da^x_r = dh_t/da^h_r = dn m r(1-r)
        dh_t/da^x_z = dh_t/da^h_z = (h_{t-1} - n) z(1-z)
        dh_t/da^x_n = dn            dh_t/da^h_n = dn r        (the reset gate sits inside the recurrent term)

    Two Kronecker terms, since the n rows of the two sides see different sensitivities: E_x with inputs
    x_t, 1 (W_ih, b_ih) and E_h with inputs h_{t-1}, 1 (W_hh, b_hh), each (B, 1, 3, H). A unit keeps z of
    its own state (local = z) and the rest reaches it through W_hh::

        dh_t/dh_{t-1} = diag(z) + E_h W_hh                 (term 1)
    """
    xp = array_module(cache.h_prev)
    x_t, h_prev, r, z, n, m, params = cache
    dn = (1 - z) * (1 - n**2)  # dh_t / d(pre-activation of n)
    e_r = dn * m * r * (1 - r)
    e_z = (h_prev - n) * z * (1 - z)
    E_x = xp.stack([e_r, e_z, dn], axis=1)[:, None]
    E_h = xp.stack([e_r, e_z, dn * r], axis=1)[:, None]
    with_bias = params.get("bias_ih") is not None
    inputs_x = {"weight_ih": x_t, **({"bias_ih": None} if with_bias else {})}
    inputs_h = {"weight_hh": h_prev, **({"bias_hh": None} if with_bias else {})}
    reach = ((True, True, True),)
    terms = (ImmediateTerm(E_x, inputs_x, reach), ImmediateTerm(E_h, inputs_h, reach))
    return StepDerivatives(z[:, None, None, :], ((True,),), terms, 1, params["weight_hh"])


GRU_CELL = replace(GRU_CELL, step_derivatives=gru_step_derivatives)
