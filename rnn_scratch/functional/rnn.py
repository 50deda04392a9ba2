r"""Vanilla (Elman) RNN cell, as in ``torch.nn.RNN``.

Sizes: B batch rows, I input features, H hidden units, T steps. The state is the tuple ``(h,)``.

Forward, one step::

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          a_t (B, H)
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

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from ..backend import array_module, fused_enabled, launch
from ._common import Cell, SequenceCache, backward_setup, forward_setup, rejoin_padded, split_padded, unpack
from ._cuda import fused_loop, ints, run_time_loop
from ._gemm import RecurrentWeight, input_gradient, input_projection, weight_gradients
from ._parallel import batch_blocks

NONLINEARITIES = ("tanh", "relu")


def _activate(xp, a, nonlinearity, out=None):
    """phi(a): tanh or relu."""
    if nonlinearity == "tanh":
        return xp.tanh(a, out=out)
    return xp.maximum(a, 0, out=out)


def _activation_grad(xp, h, nonlinearity):
    """phi'(a) written through the output h = phi(a)."""
    if nonlinearity == "tanh":
        return 1 - h * h
    return (h > 0).astype(h.dtype)


class RNNStepCache(NamedTuple):
    """What one step's backward needs: x_t (B, I), h_{t-1} and h_t (B, H), the params, phi."""

    x: object
    h_prev: object
    h: object
    params: dict
    nonlinearity: str


def rnn_step_forward(x_t, state, params, nonlinearity="tanh"):
    """One step: ``h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    x_t (B, I); state = (h_{t-1},) with h_{t-1} (B, H); params: weight_ih (H, I), weight_hh (H, H),
    bias_ih and bias_hh (H,) or None. Returns ((h_t,), cache).
    """
    xp = array_module(x_t)
    (h_prev,) = state
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    a = x_t @ w_ih.T + h_prev @ w_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    h = _activate(xp, a, nonlinearity)
    return (h,), RNNStepCache(x_t, h_prev, h, params, nonlinearity)


def rnn_step_backward(dstate, cache: RNNStepCache):
    """One step back. dstate = (dL/dh_t,), (B, H). Returns (dx_t (B, I), (dL/dh_{t-1},), dparams)."""
    xp = array_module(dstate[0])
    (dh,) = dstate
    w_ih, w_hh, b_ih, _ = unpack(cache.params)
    da = dh * _activation_grad(xp, cache.h, cache.nonlinearity)
    dparams = {"weight_ih": da.T @ cache.x, "weight_hh": da.T @ cache.h_prev}
    if b_ih is not None:
        dparams["bias_ih"] = da.sum(axis=0)
        dparams["bias_hh"] = da.sum(axis=0)
    return da @ w_ih, (da @ w_hh,), dparams


@dataclass(frozen=True, eq=False)
class RNNCache(SequenceCache):
    """What the whole-sequence backward needs: :class:`SequenceCache`'s fields, and h_cell (T, B, H):
    phi(a_t) at every step (h_t at valid steps), and phi's name."""

    h_cell: object = None
    nonlinearity: str = "tanh"


_RNN_CUDA = r"""
// The RNN step, fused: the NumPy loops of rnn_forward / rnn_backward, one thread per (row b, unit j).
extern "C" __global__ void rnn_forward_step(
    real* h_cell, const real* a_hh,           // (B, H): in W_ih x_t + b, W_hh h_{t-1}; h_cell out phi(a_t)
    const real* h_prev, real* h_new,          // (B, H)
    const bool* valid, int has_mask, int relu, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H;
    real a = h_cell[k] + a_hh[k];                                // a_t = W_ih x_t + b + W_hh h_{t-1}
    real h = relu ? (a > 0 ? a : 0) : tanh(a);                   // h_t = phi(a_t)
    h_cell[k] = h;
    h_new[k] = (!has_mask || valid[b]) ? h : h_prev[k];          // padded steps carry the state through
}

extern "C" __global__ void rnn_backward_step(
    const real* h_cell, const real* dout_t,   // (B, H); dout or a dummy (has_dout = 0)
    real* dh_carry, const real* dh_gemm,      // dh = dh_carry + dh_gemm (+ dout); carry out
    real* da,                                 // (B, H) out
    const bool* valid, int has_mask, int has_dout, int relu, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H;
    real dh = dh_carry[k] + dh_gemm[k] + (has_dout ? dout_t[k] : 0);
    if (has_mask && !valid[b]) {                                // padded: the gradient passes straight through
        da[k] = 0;
        dh_carry[k] = dh;
        return;
    }
    real h = h_cell[k];
    da[k] = dh * (relu ? (real)(h > 0) : 1 - h * h);            // da_t = dh * phi'(a_t)
    dh_carry[k] = 0;                                            // dh_{t-1} = da_t W_hh: the next GEMM
}
"""


def rnn_forward(x, state, params, nonlinearity="tanh", *, reverse=False, mask=None):
    """Whole sequence, fast path. x (T, B, I), state = (h0,) with h0 (B, H), mask None or bool (T, B, 1).

    The input projection of all steps is one GEMM; each step adds one GEMM (W_hh h_{t-1}) in place,
    then phi in place. Returns (out (T, B, H), (h_n,), :class:`RNNCache`).
    """
    xp, x, (T, B, _, H), (w_ih, w_hh, b_ih, b_hh), slots, (h,) = forward_setup(x, state, params, reverse, mask)

    def recur(rows):
        """The time loop for the batch rows ``rows`` (rows evolve independently), in place."""
        h_cell_rows, h_rows = h_cell[:, rows], h[:, rows]
        skip = None if mask is None else ~mask[:, rows]
        w = RecurrentWeight(xp, w_hh, h_rows.shape[1])
        scratch = w.scratch(h_rows.shape[1])
        for t in slots.order:
            h_prev, h_new, h_cell_t = h_rows[slots.slot_before(t)], h_rows[slots.slot_after(t)], h_cell_rows[t]
            h_cell_t += w.h_wt(h_prev, scratch)  # a_t = W_ih x_t + b + W_hh h_{t-1}
            _activate(xp, h_cell_t, nonlinearity, out=h_cell_t)  # h_t = phi(a_t)
            xp.copyto(h_new, h_cell_t)
            if skip is not None:  # padded steps carry the state through unchanged
                xp.copyto(h_new, h_prev, where=skip[t])

    def recur_fused():
        """The same time loop on the GPU: per step one GEMM and one fused kernel (rnn_forward_step)."""
        loop = fused_loop(xp, _RNN_CUDA, "rnn_forward_step", w_hh, mask, T, B, x.dtype)

        def issue():
            for t in slots.order:
                before, after = slots.slot_before(t), slots.slot_after(t)
                a_hh = loop.w.h_wt(h[before], loop.scratch)  # W_hh h_{t-1}
                launch(loop.step, B * H, (h_cell[t], a_hh, h[before], h[after], loop.valid[t], loop.has_mask,
                                          *ints(nonlinearity == "relu", B, H)))

        return run_time_loop("rnn_forward", (h_cell, h, loop.scratch, loop.w.w_t), issue)

    bias = None if b_ih is None else b_ih + b_hh
    if fused_enabled(xp):
        h_cell = input_projection(x, w_ih, bias)
        recur_fused()
    else:
        with batch_blocks(xp, B, H) as blocks:  # batch-row blocks run in parallel (see _parallel)
            h_cell = input_projection(x, w_ih, bias, blocks)  # becomes phi(a_t)
            blocks.map(recur)
    out = h[slots.after] if mask is None else xp.where(mask, h_cell, 0)
    cache = RNNCache(x=x, h=h, params=params, slots=slots, mask=mask, h_cell=h_cell, nonlinearity=nonlinearity)
    return out, (h[slots.final],), cache


def rnn_backward(dout, dstate_n, cache: RNNCache):
    """Whole sequence backward (BPTT). dout (T, B, H) or None; dstate_n = (dh_n,) or None, dh_n (B, H).

    Returns (dx (T, B, I), (dh0,), dparams).
    """
    xp, (T, B, _, H), (w_ih, w_hh, b_ih, _), dout, (dh,) = backward_setup(cache, dout, dstate_n, 1)
    mask, slots = cache.mask, cache.slots
    da = xp.empty((T, B, H), dtype=cache.x.dtype)

    def recur(rows):
        """BPTT for the batch rows ``rows``: da_t into da[:, rows]; dh ends as dL/dh_0 there."""
        da_rows, h_cell_rows, dh_rows = da[:, rows], cache.h_cell[:, rows], dh[rows]
        dout_rows = None if dout is None else dout[:, rows]
        valid = None if mask is None else mask[:, rows]
        dh_carried = xp.empty_like(dh_rows)
        w = RecurrentWeight(xp, w_hh, dh_rows.shape[0])
        scratch = w.scratch(dh_rows.shape[0], backward=True)
        for t in slots.backward_order:
            if dout_rows is not None:
                dh_rows += dout_rows[t]
            if valid is not None:
                split_padded(xp, dh_rows, valid[t], dh_carried)
            da_t, h_t = da_rows[t], h_cell_rows[t]
            if cache.nonlinearity == "tanh":  # da_t = dh * (1 - h_t^2)
                xp.multiply(h_t, h_t, out=da_t)
                xp.subtract(1, da_t, out=da_t)
                da_t *= dh_rows
            else:  # da_t = dh * [h_t > 0]
                xp.multiply(dh_rows, h_t > 0, out=da_t)
            w.product(dh_rows, da_t, scratch)  # dh_{t-1} = da_t W_hh
            if valid is not None:
                rejoin_padded(dh_rows, dh_carried)

    def recur_fused():
        """The same BPTT on the GPU: per step one fused kernel (rnn_backward_step) and one GEMM."""
        loop = fused_loop(xp, _RNN_CUDA, "rnn_backward_step", w_hh, mask, T, B, dh.dtype, dh, dout)

        def issue():
            for t in slots.backward_order:
                launch(loop.step, B * H, (cache.h_cell[t], loop.douts[t], dh, loop.dh_gemm, da[t], loop.valid[t],
                                          loop.has_mask, loop.has_dout, *ints(cache.nonlinearity == "relu", B, H)))
                loop.w.product(loop.dh_gemm, da[t], loop.scratch)  # da_t W_hh

        run_time_loop("rnn_backward", (cache.h_cell, da, dh, loop.dh_gemm, loop.w.w), issue)
        xp.add(dh, loop.dh_gemm, out=dh)  # dL/dh_0

    if fused_enabled(xp):
        recur_fused()
        grads = weight_gradients(da, cache.x, cache.h_prev, has_bias=b_ih is not None)
        dx = input_gradient(da, w_ih)
    else:
        with batch_blocks(xp, B, H) as blocks:
            blocks.map(recur)
            grads = weight_gradients(da, cache.x, cache.h_prev, has_bias=b_ih is not None, blocks=blocks)
            dx = input_gradient(da, w_ih, blocks)
    return dx, (dh,), grads


# cache: h, h_cell; backward: da
RNN_TANH_CELL = Cell("rnn_tanh", 1, ("h",), partial(rnn_step_forward, nonlinearity="tanh"), rnn_step_backward,
                     partial(rnn_forward, nonlinearity="tanh"), rnn_backward, memory=(2, 1))
RNN_RELU_CELL = Cell("rnn_relu", 1, ("h",), partial(rnn_step_forward, nonlinearity="relu"), rnn_step_backward,
                     partial(rnn_forward, nonlinearity="relu"), rnn_backward, memory=(2, 1))


# -- the step's Jacobians, factored per hidden unit (the forward-mode algorithms of rnn_scratch.online) --------
# (imported here, with the block they serve, so that the lines above keep the numbers docs/derivations.md quotes)
from dataclasses import replace  # noqa: E402

from ._common import ImmediateTerm, StepDerivatives  # noqa: E402


def rnn_step_derivatives(cache: RNNStepCache) -> StepDerivatives:
    r"""The Jacobians of one step, per hidden unit: :class:`~rnn_scratch.functional.StepDerivatives`.

    Every parameter reaches h_t through a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, and row j of each
    parameter only through a_t[j]; so, with phi'(a_t) written through the output (tanh: 1 - h_t^2,
    relu: [h_t > 0])::

        d h_t[j] / d W_ih[j', k] = delta_jj' phi'(a_t[j]) x_t[k]
        d h_t[j] / d W_hh[j', k] = delta_jj' phi'(a_t[j]) h_{t-1}[k]
        d h_t[j] / d b_ih[j']    = d h_t[j] / d b_hh[j'] = delta_jj' phi'(a_t[j])

    one Kronecker term, E[0, 0, j] = phi'(a_t[j]) (B, 1, 1, H), inputs x_t, h_{t-1}, 1, 1. A unit has no state
    of its own besides what W_hh carries (local = 0)::

        d h_t / d h_{t-1} = diag(phi'(a_t)) W_hh          (E times W_rec = W_hh, term 0)
    """
    xp = array_module(cache.h)
    B, H = cache.h.shape
    dphi = _activation_grad(xp, cache.h, cache.nonlinearity)  # phi'(a_t)
    inputs = {"weight_ih": cache.x, "weight_hh": cache.h_prev}
    if cache.params.get("bias_ih") is not None:
        inputs.update(bias_ih=None, bias_hh=None)
    term = ImmediateTerm(dphi[:, None, None, :], inputs, ((True,),))
    local = xp.zeros((B, 1, 1, H), dtype=cache.h.dtype)
    return StepDerivatives(local, ((False,),), (term,), 0, cache.params["weight_hh"])


RNN_TANH_CELL = replace(RNN_TANH_CELL, step_derivatives=rnn_step_derivatives)
RNN_RELU_CELL = replace(RNN_RELU_CELL, step_derivatives=rnn_step_derivatives)
