r"""LSTM cell, as in ``torch.nn.LSTM`` (gate order i, f, g, o in the weights).

Sizes: B batch rows, I input features, H hidden units, T steps. The state is the tuple ``(h, c)``.

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
- sigma(a) = 1 / (1 + exp(-a)): the rows of the weights and biases of the three sigmoid gates are
  pre-scaled once by -1, so one in-place ``exp``, ``+ 1`` and ``reciprocal`` over their block give
  o, i and f; g = tanh(a_g) and tanh(c_t) are NumPy's ``tanh``, accurate to the last place near 0
  (``2 sigma(2a) - 1`` was not: its relative error grows as eps/|a|, 1e-4 relative error in a float32
  LSTM's outputs from small pre-activations);
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

from dataclasses import dataclass
from typing import NamedTuple

from ..backend import array_module, fused_enabled, launch
from ._common import (
    Cell,
    SequenceCache,
    backward_setup,
    backward_time_chunks,
    forward_setup,
    rejoin_padded,
    span,
    split_padded,
    unpack,
)
from ._cuda import fused_loop, ints, run_time_loop
from ._gates import quiet_overflow, sigmoid, sigmoid_from_negated_
from ._gemm import RecurrentWeight, input_gradient, input_projection, weight_gradients
from ._parallel import batch_blocks


class LSTMStepCache(NamedTuple):
    """What one step's backward needs: x_t (B, I); h_{t-1}, c_{t-1}, the gates i, f, g, o and tanh(c_t),
    each (B, H); the params."""

    x: object
    h_prev: object
    c_prev: object
    i: object
    f: object
    g: object
    o: object
    tanh_c: object
    params: dict


def lstm_step_forward(x_t, state, params):
    """One step. x_t (B, I); state = (h_{t-1}, c_{t-1}), each (B, H); params: weight_ih (4H, I),
    weight_hh (4H, H), bias_ih and bias_hh (4H,) or None. Returns ((h_t, c_t), cache)."""
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
    return (h, c), LSTMStepCache(x_t, h_prev, c_prev, i, f, g, o, tanh_c, params)


def lstm_step_backward(dstate, cache: LSTMStepCache):
    """One step back. dstate = (dL/dh_t, dL/dc_t), each (B, H).

    Returns (dx_t (B, I), (dL/dh_{t-1}, dL/dc_{t-1}), dparams)."""
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


def _gate_blocks(gates, H):
    """The (o, i, f, g) blocks of the last axis of a gate buffer (views)."""
    return gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H : 3 * H], gates[..., 3 * H :]


_LSTM_CUDA = r"""
// The LSTM step, fused: the NumPy loops of lstm_forward / lstm_backward, one thread per (row b, unit j).
// Gate rows in the fast path's order (o, i, f, g); the sigmoid rows hold -a (weights pre-scaled by -1).
extern "C" __global__ void lstm_forward_step(
    real* gates, const real* a_hh,            // (B, 4H): -a (o, i, f), a (g) of x and of h_{t-1}; out o, i, f, g
    const real* c_prev, const real* h_prev,   // (B, H)
    real* c_new, real* h_new, real* tanh_c,   // (B, H)
    const bool* valid, int has_mask, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    real* gates_t = gates + (size_t)b * 4 * H;
    const real* a_hh_t = a_hh + (size_t)b * 4 * H;
    real o = 1 / (1 + exp(gates_t[j] + a_hh_t[j]));             // sigma(a) = 1 / (1 + exp(-a))
    real i = 1 / (1 + exp(gates_t[H + j] + a_hh_t[H + j]));
    real f = 1 / (1 + exp(gates_t[2 * H + j] + a_hh_t[2 * H + j]));
    real g = tanh(gates_t[3 * H + j] + a_hh_t[3 * H + j]);
    real c = f * c_prev[k] + i * g;                               // c_t = f * c_{t-1} + i * g
    real tc = tanh(c);
    gates_t[j] = o; gates_t[H + j] = i; gates_t[2 * H + j] = f; gates_t[3 * H + j] = g;
    tanh_c[k] = tc;
    bool keep = !has_mask || valid[b];                            // padded steps carry the state through
    c_new[k] = keep ? c : c_prev[k];
    h_new[k] = keep ? o * tc : h_prev[k];                         // h_t = o * tanh(c_t)
}

extern "C" __global__ void lstm_backward_step(
    const real* gates, const real* tanh_c, const real* c_prev, // (B, 4H) o, i, f, g; (B, H); (B, H)
    const real* dout_t,                                         // (B, H) or a dummy (has_dout = 0)
    real* dh_carry, const real* dh_gemm,                        // dh = dh_carry + dh_gemm (+ dout); carry out
    real* dc,                                                   // in dL/dc_t, out dL/dc_{t-1}
    real* dgates,                                               // (B, 4H) out: da_o, da_i, da_f, da_g
    const bool* valid, int has_mask, int has_dout, int B, int H)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * H) return;
    int b = k / H, j = k % H;
    const real* gates_t = gates + (size_t)b * 4 * H;
    real* da = dgates + (size_t)b * 4 * H;
    real dh = dh_carry[k] + dh_gemm[k] + (has_dout ? dout_t[k] : 0);
    if (has_mask && !valid[b]) {                                // padded: gradients pass straight through
        da[j] = 0; da[H + j] = 0; da[2 * H + j] = 0; da[3 * H + j] = 0;
        dh_carry[k] = dh;
        return;
    }
    real o = gates_t[j], i = gates_t[H + j], f = gates_t[2 * H + j], g = gates_t[3 * H + j], tc = tanh_c[k];
    real dc_t = dc[k] + dh * o * (1 - tc * tc);                  // dc += dh * o (1 - tanh(c)^2)
    da[j] = dh * tc * o * (1 - o);                              // da_o
    da[H + j] = dc_t * g * i * (1 - i);                         // da_i
    da[2 * H + j] = dc_t * c_prev[k] * f * (1 - f);             // da_f
    da[3 * H + j] = dc_t * i * (1 - g * g);                     // da_g
    dc[k] = dc_t * f;                                           // dc_{t-1} = dc * f
    dh_carry[k] = 0;                                            // dh_{t-1} = da W_hh: the next GEMM
}
"""


@dataclass(frozen=True, eq=False)
class LSTMCache(SequenceCache):
    """What the whole-sequence backward needs: :class:`SequenceCache`'s fields, and c (T+1, B, H): the cell
    states, placed like h; gates (T, B, 4H): the activated gates in row order (o, i, f, g); tanh_c
    (T, B, H): tanh(c_t)."""

    c: object = None
    gates: object = None
    tanh_c: object = None

    @property
    def c_prev(self):
        """The cell state before each step, in time order (T, B, H)."""
        return self.c[self.slots.before]


def lstm_forward(x, state, params, *, reverse=False, mask=None):
    """Whole sequence, fast path. x (T, B, I), state = (h0, c0) each (B, H), mask None or bool (T, B, 1).

    Returns (out (T, B, H), (h_n, c_n), :class:`LSTMCache`).
    """
    xp, x, (T, B, _, H), (w_ih, w_hh, b_ih, b_hh), slots, (h, c) = forward_setup(x, state, params, reverse, mask)
    perm, _ = _gate_permutation(xp, H)
    scale = xp.full((4 * H, 1), -1.0, dtype=x.dtype)  # sigmoid rows: exp(-a)
    scale[3 * H :] = 1.0  # g rows: tanh(a)
    w_ih_s = w_ih[perm] * scale
    bias_s = None if b_ih is None else (b_ih + b_hh)[perm] * scale[:, 0]
    tanh_c = xp.empty((T, B, H), dtype=x.dtype)

    def recur(rows):
        """The time loop for the batch rows ``rows`` (rows evolve independently), in place."""
        gates_rows, h_rows, c_rows, tanh_c_rows = gates[:, rows], h[:, rows], c[:, rows], tanh_c[:, rows]
        skip = None if mask is None else ~mask[:, rows]
        w_hh_s = RecurrentWeight(xp, w_hh[perm] * scale, gates_rows.shape[1])
        scratch = w_hh_s.scratch(gates_rows.shape[1])
        i_times_g = xp.empty((gates_rows.shape[1], H), dtype=x.dtype)
        with quiet_overflow(xp):
            for t in slots.order:
                before, after = slots.slot_before(t), slots.slot_after(t)
                h_prev, c_prev, h_new, c_new = h_rows[before], c_rows[before], h_rows[after], c_rows[after]
                gates_t, tanh_c_t = gates_rows[t], tanh_c_rows[t]
                gates_t += w_hh_s.h_wt(h_prev, scratch)  # -a (sigmoid rows o, i, f), a (g rows)
                o, i, f, g = _gate_blocks(gates_t, H)
                sigmoid_from_negated_(xp, gates_t[:, : 3 * H])
                xp.tanh(g, out=g)
                xp.multiply(f, c_prev, out=c_new)  # c_t = f * c_{t-1} + i * g
                xp.multiply(i, g, out=i_times_g)
                c_new += i_times_g
                xp.tanh(c_new, out=tanh_c_t)
                xp.multiply(o, tanh_c_t, out=h_new)  # h_t = o * tanh(c_t)
                if skip is not None:  # padded steps carry the state through unchanged
                    xp.copyto(h_new, h_prev, where=skip[t])
                    xp.copyto(c_new, c_prev, where=skip[t])

    def recur_fused():
        """The same time loop on the GPU: per step one GEMM and one fused kernel (lstm_forward_step)."""
        loop = fused_loop(xp, _LSTM_CUDA, "lstm_forward_step", w_hh[perm] * scale, mask, T, B, x.dtype)

        def issue():
            for t in slots.order:
                before, after = slots.slot_before(t), slots.slot_after(t)
                a_hh = loop.w.h_wt(h[before], loop.scratch)  # W_hh h_{t-1}, scaled rows
                launch(loop.step, B * H, (gates[t], a_hh, c[before], h[before], c[after], h[after], tanh_c[t],
                                          loop.valid[t], loop.has_mask, *ints(B, H)))

        return run_time_loop("lstm_forward", (gates, h, c, tanh_c, loop.scratch, loop.w.w_t), issue)

    if fused_enabled(xp):
        gates = input_projection(x, w_ih_s, bias_s)
        recur_fused()
    else:
        with batch_blocks(xp, B, 4 * H) as blocks:  # batch-row blocks run in parallel (see _parallel)
            gates = input_projection(x, w_ih_s, bias_s, blocks)  # overwritten by the gates (o, i, f, g)
            blocks.map(recur)
    if mask is None:
        out = h[slots.after]
    else:  # output o * tanh(c) at valid steps, zero at padded ones
        out = xp.where(mask, gates[:, :, :H] * tanh_c, 0)
    final = slots.final
    cache = LSTMCache(x=x, h=h, params=params, slots=slots, mask=mask, c=c, gates=gates, tanh_c=tanh_c)
    return out, (h[final], c[final]), cache


def lstm_backward(dout, dstate_n, cache: LSTMCache):
    """Whole sequence backward (BPTT). dout (T, B, H) or None; dstate_n = (dh_n, dc_n) or None, parts
    (B, H) or None.

    Returns (dx (T, B, I), (dh0, dc0), dparams).
    """
    xp, (T, B, _, H), (w_ih, w_hh, b_ih, _), dout, (dh, dc) = backward_setup(cache, dout, dstate_n, 2)
    mask, slots, gates, tanh_c = cache.mask, cache.slots, cache.gates, cache.tanh_c
    perm, inv = _gate_permutation(xp, H)
    c_prev_all = cache.c_prev
    dgates = xp.empty((T, B, 4 * H), dtype=cache.x.dtype)  # (o, i, f, g); first the factors, then da
    dc_factor = xp.empty((T, B, H), dtype=cache.x.dtype)  # o (1 - tanh(c)^2)

    def factors(steps, rows):
        """The bracketed factors (module docstring) of ``steps`` x ``rows``, a few passes over the block."""
        gates_run, dgates_run = gates[steps, rows], dgates[steps, rows]
        tanh_c_run, dc_factor_run = tanh_c[steps, rows], dc_factor[steps, rows]
        o, i, _, g = _gate_blocks(gates_run, H)
        factor_o, factor_i, factor_f, factor_g = _gate_blocks(dgates_run, H)
        sigmoids, sigmoid_factors = gates_run[..., : 3 * H], dgates_run[..., : 3 * H]
        xp.subtract(1, sigmoids, out=sigmoid_factors)
        sigmoid_factors *= sigmoids  # s(1-s) for o, i, f
        factor_o *= tanh_c_run  # tanh(c) o(1-o)
        factor_i *= g  # g i(1-i)
        factor_f *= c_prev_all[steps, rows]  # c_{t-1} f(1-f)
        xp.multiply(g, g, out=factor_g)
        xp.subtract(1, factor_g, out=factor_g)
        factor_g *= i  # i (1-g^2)
        xp.multiply(tanh_c_run, tanh_c_run, out=dc_factor_run)
        xp.subtract(1, dc_factor_run, out=dc_factor_run)
        dc_factor_run *= o  # o (1 - tanh(c)^2)

    def recur(rows):
        """BPTT for the batch rows ``rows``: da into dgates[:, rows]; dh, dc end as dL/dh_0, dL/dc_0 there."""
        dgates_rows, dc_factor_rows, gates_rows = dgates[:, rows], dc_factor[:, rows], gates[:, rows]
        dout_rows = None if dout is None else dout[:, rows]
        valid = None if mask is None else mask[:, rows]
        dh_rows, dc_rows = dh[rows], dc[rows]
        b = dh_rows.shape[0]
        dh_times_factor, dh_carried, dc_carried = (xp.empty((b, H), dtype=dh.dtype) for _ in range(3))
        w_hh_p = RecurrentWeight(xp, w_hh[perm], b)
        scratch = w_hh_p.scratch(b, backward=True)
        for steps in backward_time_chunks(slots, b * 5 * H):
            factors(span(steps), rows)
            for t in steps:
                if dout_rows is not None:
                    dh_rows += dout_rows[t]
                if valid is not None:  # padded steps: gradients pass straight through to step t-1
                    split_padded(xp, dh_rows, valid[t], dh_carried)
                    split_padded(xp, dc_rows, valid[t], dc_carried)
                da = dgates_rows[t]
                xp.multiply(dh_rows, dc_factor_rows[t], out=dh_times_factor)
                dc_rows += dh_times_factor  # dc += dh * o (1 - tanh(c)^2)
                da[:, :H] *= dh_rows  # da_o
                da.reshape(b, 4, H)[:, 1:] *= dc_rows[:, None, :]  # da_i, da_f, da_g
                dc_rows *= gates_rows[t][:, 2 * H : 3 * H]  # dc_{t-1} = dc * f
                w_hh_p.product(dh_rows, da, scratch)  # dh_{t-1} = da W_hh
                if valid is not None:
                    rejoin_padded(dh_rows, dh_carried)
                    rejoin_padded(dc_rows, dc_carried)

    def recur_fused():
        """The same BPTT on the GPU: per step one fused kernel (lstm_backward_step) and one GEMM."""
        loop = fused_loop(xp, _LSTM_CUDA, "lstm_backward_step", w_hh[perm], mask, T, B, dh.dtype, dh, dout)

        def issue():
            for t in slots.backward_order:
                launch(loop.step, B * H, (gates[t], tanh_c[t], c_prev_all[t], loop.douts[t], dh, loop.dh_gemm, dc,
                                          dgates[t], loop.valid[t], loop.has_mask, loop.has_dout, *ints(B, H)))
                loop.w.product(loop.dh_gemm, dgates[t], loop.scratch)  # dh_{t-1} = da W_hh

        run_time_loop("lstm_backward", (gates, tanh_c, dgates, dh, loop.dh_gemm, dc, loop.w.w), issue)
        xp.add(dh, loop.dh_gemm, out=dh)  # dL/dh_0

    if fused_enabled(xp):
        recur_fused()
        grads = weight_gradients(dgates, cache.x, cache.h_prev, has_bias=b_ih is not None)
        dx = input_gradient(dgates, w_ih[perm])
    else:
        with batch_blocks(xp, B, 4 * H) as blocks:
            blocks.map(recur)
            grads = weight_gradients(dgates, cache.x, cache.h_prev, has_bias=b_ih is not None, blocks=blocks)
            dx = input_gradient(dgates, w_ih[perm], blocks)
    grads = {name: grad[inv] for name, grad in grads.items()}  # rows back to (i, f, g, o)
    return dx, (dh, dc), grads


# cache: h, c, the 4 gates, tanh c; backward: the 4 gate gradients, dc_factor
LSTM_CELL = Cell("lstm", 4, ("h", "c"), lstm_step_forward, lstm_step_backward, lstm_forward, lstm_backward,
                 memory=(7, 5))


# -- the step's Jacobians, factored per hidden unit (the forward-mode algorithms of rnn_scratch.online) --------
# (imported here, with the block they serve, so that the lines above keep the numbers docs/derivations.md quotes)
from dataclasses import replace  # noqa: E402

from ._common import ImmediateTerm, StepDerivatives  # noqa: E402


def lstm_step_derivatives(cache: LSTMStepCache) -> StepDerivatives:
    r"""The Jacobians of one step, per hidden unit: :class:`~rnn_scratch.functional.StepDerivatives`.

    State s = (h, c) (parts q = 0, 1); gates i, f, g, o (g = 0..3); every parameter acts through the
    pre-activations a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, row (gate, j) only on unit j. From
    c_t = f c_{t-1} + i g and h_t = o tanh(c_t), with k = dh_t/dc_t = o (1 - tanh(c_t)^2)::

        dc_t/da_i = g i(1-i)    dc_t/da_f = c_{t-1} f(1-f)    dc_t/da_g = i (1-g^2)    dc_t/da_o = 0
        dh_t/da_o = tanh(c_t) o(1-o)                            dh_t/da_{i,f,g} = k dc_t/da_{i,f,g}

    One Kronecker term: E[q, gate, j] as above (B, 2, 4, H), inputs x_t, h_{t-1}, 1, 1; the o rows do not
    reach c_t in one step (reach[1][3] False). What a unit's state does on its own, not through W_hh::

        dc_t/dc_{t-1} = f       dh_t/dc_{t-1} = k f       dc_t/dh_{t-1}, dh_t/dh_{t-1}: only through W_hh

    so local[:, 1, 1] = f, local[:, 0, 1] = k f, and d s_t/d h_{t-1} = E W_hh (term 0).
    """
    xp = array_module(cache.h_prev)
    x_t, h_prev, c_prev, i, f, g, o, tanh_c, params = cache
    B, H = h_prev.shape
    k = o * (1 - tanh_c**2)  # dh_t/dc_t
    E = xp.zeros((B, 2, 4, H), dtype=h_prev.dtype)
    E[:, 1, 0] = g * i * (1 - i)  # dc_t/da_i
    E[:, 1, 1] = c_prev * f * (1 - f)  # dc_t/da_f
    E[:, 1, 2] = i * (1 - g**2)  # dc_t/da_g
    E[:, 0, :3] = k[:, None] * E[:, 1, :3]  # dh_t/da_{i,f,g} = k dc_t/da
    E[:, 0, 3] = tanh_c * o * (1 - o)  # dh_t/da_o
    local = xp.zeros((B, 2, 2, H), dtype=h_prev.dtype)
    local[:, 1, 1] = f  # dc_t/dc_{t-1}
    local[:, 0, 1] = k * f  # dh_t/dc_{t-1}
    inputs = {"weight_ih": x_t, "weight_hh": h_prev}
    if params.get("bias_ih") is not None:
        inputs.update(bias_ih=None, bias_hh=None)
    term = ImmediateTerm(E, inputs, ((True, True, True, True), (True, True, True, False)))
    return StepDerivatives(local, ((False, True), (False, True)), (term,), 0, params["weight_hh"])


LSTM_CELL = replace(LSTM_CELL, step_derivatives=lstm_step_derivatives)
