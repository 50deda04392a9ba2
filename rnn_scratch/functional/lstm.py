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
- the time-loop driver runs :class:`LSTMFast` (batch-row blocks on threads, the GEMMs, padding); the same step
  as CUDA is ``kernels/lstm.cu``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module
from ._common import ImmediateTerm, StepDerivatives, unpack
from ._gates import sigmoid, sigmoid_from_negated_
from .cell import TORCH_PARAMS, Cell, FastPath, Kernel, Prepared, TorchModule, kernel_file


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


class LSTMFast(FastPath):
    """The fast path's step on one block of rows (module docstring): gate rows (o, i, f, g), the sigmoid rows of
    the forward weights negated; gates keeps o, i, f, g and the buffer tanh_c keeps tanh(c_t) for the backward,
    whose loop multiplies the bracketed factors (:meth:`factors`) by dh and dc."""

    order = ("o", "i", "f", "g")
    buffers = {"tanh_c": 1}
    backward_buffers = {"dc_factor": 1}  # o (1 - tanh(c_t)^2)
    kernel = Kernel(kernel_file(__file__, "lstm.cu"), "lstm_forward_step", "lstm_backward_step")

    def forward_weights(self, xp, params, H):
        w_ih, w_hh, b_ih, b_hh = unpack(params)
        perm, _ = _gate_permutation(xp, H)
        scale = xp.full((4 * H, 1), -1.0, dtype=w_ih.dtype)  # sigmoid rows: exp(-a)
        scale[3 * H :] = 1.0  # g rows: tanh(a)
        bias = None if b_ih is None else (b_ih + b_hh)[perm] * scale[:, 0]
        return Prepared(w_ih[perm] * scale, w_hh[perm] * scale, bias)

    def backward_weights(self, xp, params, H):
        w_ih, w_hh, b_ih, _ = unpack(params)
        perm, inv = _gate_permutation(xp, H)
        return Prepared(w_ih[perm], w_hh[perm], b_ih, extra=inv)

    def forward_step(self, xp, p, a, t, a_hh):
        gates, c_prev, h_new, c_new, tanh_c = a.gates[t], a.c_prev[t], a.h_new[t], a.c_new[t], a.tanh_c[t]
        H = c_new.shape[1]
        gates += a_hh  # -a (sigmoid rows o, i, f), a (g rows)
        o, i, f, g = _gate_blocks(gates, H)
        sigmoid_from_negated_(xp, gates[:, : 3 * H])
        xp.tanh(g, out=g)
        xp.multiply(f, c_prev, out=c_new)  # c_t = f * c_{t-1} + i * g
        xp.multiply(i, g, out=tanh_c)  # (i * g, until tanh_c is written)
        c_new += tanh_c
        xp.tanh(c_new, out=tanh_c)
        xp.multiply(o, tanh_c, out=h_new)  # h_t = o * tanh(c_t)

    def factors(self, xp, p, a, steps):
        """The bracketed factors (module docstring) of a run of steps, in a few passes over the run."""
        gates, tanh_c, dgates, dc_factor = a.gates[steps], a.tanh_c[steps], a.dgates[steps], a.dc_factor[steps]
        H = tanh_c.shape[-1]
        o, i, _, g = _gate_blocks(gates, H)
        factor_o, factor_i, factor_f, factor_g = _gate_blocks(dgates, H)
        sigmoids, sigmoid_factors = gates[..., : 3 * H], dgates[..., : 3 * H]
        xp.subtract(1, sigmoids, out=sigmoid_factors)
        sigmoid_factors *= sigmoids  # s(1-s) for o, i, f
        factor_o *= tanh_c  # tanh(c) o(1-o)
        factor_i *= g  # g i(1-i)
        factor_f *= a.c_prev[steps]  # c_{t-1} f(1-f)
        xp.multiply(g, g, out=factor_g)
        xp.subtract(1, factor_g, out=factor_g)
        factor_g *= i  # i (1-g^2)
        xp.multiply(tanh_c, tanh_c, out=dc_factor)
        xp.subtract(1, dc_factor, out=dc_factor)
        dc_factor *= o  # o (1 - tanh(c)^2)

    def backward_step(self, xp, p, a, t):
        dh, dc, da, dc_factor = a.dh, a.dc, a.dgates[t], a.dc_factor[t]
        b, H = dh.shape
        dc_factor *= dh
        dc += dc_factor  # dc += dh * o (1 - tanh(c)^2)
        da[:, :H] *= dh  # da_o
        da.reshape(b, 4, H)[:, 1:] *= dc[:, None, :]  # da_i, da_f, da_g
        dc *= a.gates[t][:, 2 * H : 3 * H]  # dc_{t-1} = dc * f

    def param_grads(self, xp, p, grads, run):
        return {name: grad[p.extra] for name, grad in grads.items()}  # rows back to (i, f, g, o)


# -- the step's Jacobians, factored per hidden unit (the forward-mode algorithms of rnn_scratch.online) --------
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


# cache: h, c, the 4 gates, tanh c; backward: the 4 gate gradients, dc_factor
LSTM_CELL = Cell("lstm", ("h", "c"), ("i", "f", "g", "o"), TORCH_PARAMS, lstm_step_forward, lstm_step_backward,
                 fast=LSTMFast(), memory=(7, 5), reference=TorchModule("LSTM"),
                 step_derivatives=lstm_step_derivatives)
