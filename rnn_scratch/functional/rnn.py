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
(:class:`RNNFast`, run by the time-loop driver) collects every da_t and does that sum as one GEMM after
the time loop; its CUDA kernel is ``kernels/rnn.cu``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

from ..backend import array_module
from ._common import ImmediateTerm, StepDerivatives, unpack
from .cell import TORCH_PARAMS, Cell, FastPath, Kernel, Prepared, TorchModule, kernel_file

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


class RNNFast(FastPath):
    """The fast path's step: the driver's projection ``W_ih x_t + b`` (in ``gates``, one row block (B, H)) plus
    its product ``W_hh h_{t-1}``, then phi in place; gates keeps h_t = phi(a_t) for the backward."""

    order = ("a",)
    kernel = Kernel(kernel_file(__file__, "rnn.cu"), "rnn_forward_step", "rnn_backward_step")

    def __init__(self, nonlinearity):
        self.nonlinearity = nonlinearity

    def forward_weights(self, xp, params, H):
        w_ih, w_hh, b_ih, b_hh = unpack(params)
        return Prepared(w_ih, w_hh, None if b_ih is None else b_ih + b_hh, flags=(self.nonlinearity == "relu",))

    def forward_step(self, xp, p, a, t, a_hh):
        gates = a.gates[t]
        gates += a_hh  # a_t = W_ih x_t + b + W_hh h_{t-1}
        _activate(xp, gates, self.nonlinearity, out=gates)  # h_t = phi(a_t)
        xp.copyto(a.h_new[t], gates)

    def backward_step(self, xp, p, a, t):
        dh, h, da = a.dh, a.gates[t], a.dgates[t]
        if self.nonlinearity == "tanh":  # da_t = dh * (1 - h_t^2)
            xp.multiply(h, h, out=da)
            xp.subtract(1, da, out=da)
            da *= dh
        else:  # da_t = dh * [h_t > 0]
            xp.multiply(dh, h > 0, out=da)

    def param_grads(self, xp, p, grads, run):
        return grads  # weight_ih, weight_hh (and bias_ih, bias_hh): the driver's sums are torch's gradients


def rnn_preactivation(x, state, params):
    """a = W_ih x + b_ih + W_hh h_{t-1} + b_hh, for x (..., I) and h_{t-1} (..., H): where relu has its kink."""
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    a = x @ w_ih.T + state[0] @ w_hh.T
    return a if b_ih is None else a + b_ih + b_hh


# -- the step's Jacobians, factored per hidden unit (the forward-mode algorithms of rnn_scratch.online) --------
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


# cache: h, phi(a) (the gates); backward: da
RNN_TANH_CELL = Cell("rnn_tanh", ("h",), ("a",), TORCH_PARAMS, partial(rnn_step_forward, nonlinearity="tanh"),
                     rnn_step_backward, fast=RNNFast("tanh"), memory=(2, 1),
                     reference=TorchModule("RNN", {"nonlinearity": "tanh"}), aliases=("rnn",),
                     step_derivatives=rnn_step_derivatives)
RNN_RELU_CELL = Cell("rnn_relu", ("h",), ("a",), TORCH_PARAMS, partial(rnn_step_forward, nonlinearity="relu"),
                     rnn_step_backward, fast=RNNFast("relu"), memory=(2, 1),
                     reference=TorchModule("RNN", {"nonlinearity": "relu"}), nonsmooth_at=rnn_preactivation,
                     step_derivatives=rnn_step_derivatives)
