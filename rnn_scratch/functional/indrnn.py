r"""IndRNN, the independently recurrent neural network (Li, Li, Cook, Zhu and Gao, CVPR 2018), as haste's ``IndRNN``.

Each hidden unit has one recurrent weight of its own: the recurrent weight is a vector u (H,), not a matrix, so
units see only their own past (they mix only through the next layer's input weights). Sizes: B batch rows,
I input features, H hidden units. The state is the tuple ``(h,)``.

Forward, one step (* elementwise)::

    a_t = W x_t + b + u * h_{t-1}
    h_t = tanh(a_t)

Backward, one step. Given dh = dL/dh_t (from the output at t and from step t+1)::

    da_t      = dh * (1 - h_t^2)
    dx_t      = da_t W            dh_{t-1} = da_t * u        (no matrix: a unit's gradient stays its own)
    dW       += da_t^T x_t        du += sum_b da_t * h_{t-1}  db += sum_b da_t

Through time, dh_{t-k} = dh_t prod_s (1 - h_s^2) u: per unit a product of scalars, so |u| < 1 vanishes and
|u| > 1 explodes unit by unit, which is why the paper bounds |u| (and can then stack many layers).

Choices, after haste's ``IndRNN``: tanh (the paper uses relu; a relu IndRNN is this module with another
nonlinearity and one more registry entry); one bias b; parameters under our names ``weight_ih`` = W (H, I),
``weight_hh`` = u (H,), ``bias`` = b (H,); initialisation as haste: W Xavier-uniform U(-sqrt(6 / (I + H)),
sqrt(6 / (I + H))), u U(-0.5, 0.5), b zeros.

Fast path: the tanh RNN's (:class:`~rnn_scratch.functional.rnn.RNNFast`, and its CUDA kernel ``kernels/rnn.cu``):
the driver's recurrent product is u * h_{t-1} for a vector weight, so the step's math is the same.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import array_module
from ._common import ImmediateTerm, StepDerivatives
from .cell import Cell, Param, Prepared, TorchStep
from .rnn import RNNFast


class IndRNNStepCache(NamedTuple):
    """What one step's backward needs: x_t (B, I), h_{t-1} and h_t (B, H), the params."""

    x: object
    h_prev: object
    h: object
    params: dict


def indrnn_step_forward(x_t, state, params):
    """One step: ``h_t = tanh(W x_t + b + u * h_{t-1})``. x_t (B, I); state = (h_{t-1},), (B, H); params:
    weight_ih W (H, I), weight_hh u (H,), bias b (H,) or None. Returns ((h_t,), cache)."""
    xp = array_module(x_t)
    (h_prev,) = state
    w, u, b = params["weight_ih"], params["weight_hh"], params.get("bias")
    a = x_t @ w.T + u * h_prev
    h = xp.tanh(a if b is None else a + b)
    return (h,), IndRNNStepCache(x_t, h_prev, h, params)


def indrnn_step_backward(dstate, cache: IndRNNStepCache):
    """One step back. dstate = (dL/dh_t,), (B, H). Returns (dx_t (B, I), (dL/dh_{t-1},), dparams)."""
    (dh,) = dstate
    w, u = cache.params["weight_ih"], cache.params["weight_hh"]
    da = dh * (1 - cache.h**2)
    dparams = {"weight_ih": da.T @ cache.x, "weight_hh": (da * cache.h_prev).sum(axis=0)}
    if cache.params.get("bias") is not None:
        dparams["bias"] = da.sum(axis=0)
    return da @ w, (da * u,), dparams


def indrnn_step_derivatives(cache: IndRNNStepCache) -> StepDerivatives:
    r"""The Jacobians of one step, per hidden unit (:class:`~rnn_scratch.functional.StepDerivatives`, for the
    forward-mode algorithms of :mod:`rnn_scratch.online`). Unit j's state sees only its own past::

        d h_t[j] / d h_{t-1}[j'] = delta_jj' (1 - h_t[j]^2) u[j]        (local; no recurrent matrix)
        d h_t[j] / d W[j', k]    = delta_jj' (1 - h_t[j]^2) x_t[k]      d h_t[j] / d b[j'] = delta_jj' (1 - h_t[j]^2)
        d h_t[j] / d u[j']       = delta_jj' (1 - h_t[j]^2) h_{t-1}[j]

    Two terms: E = 1 - h_t^2 (B, 1, 1, H) for W (input x_t) and b, and E * h_{t-1} for u (a vector, one entry
    per unit). So RTRL's influence matrix is exactly unit-local, and SnAp-1 is exact for this cell.
    """
    dphi = (1 - cache.h**2)[:, None, None, :]
    reach = ((True,),)
    inputs = {"weight_ih": cache.x, **({"bias": None} if cache.params.get("bias") is not None else {})}
    terms = (ImmediateTerm(dphi, inputs, reach),
             ImmediateTerm(dphi * cache.h_prev[:, None, None, :], {"weight_hh": None}, reach))
    return StepDerivatives(dphi * cache.params["weight_hh"], reach, terms, None, None)


class IndRNNFast(RNNFast):
    """The tanh RNN's step on u * h_{t-1}; the driver sums du over steps and rows after the loop."""

    def __init__(self):
        super().__init__("tanh")

    def forward_weights(self, xp, params, H):
        return Prepared(params["weight_ih"], params["weight_hh"], params.get("bias"), flags=(False,))

    def param_grads(self, xp, p, grads, run):
        dparams = {"weight_ih": grads["weight_ih"], "weight_hh": grads["weight_hh"]}
        if "bias_ih" in grads:
            dparams["bias"] = grads["bias_ih"]
        return dparams


def _xavier(rng, shape, input_size, hidden_size):
    bound = math.sqrt(6.0 / (input_size + hidden_size))
    return rng.uniform(-bound, bound, shape)


def _torch_step(x_t, state, params):
    """The step in torch operations (the tests' reference, differentiated by autograd)."""
    import torch

    a = x_t @ params["weight_ih"].T + params["weight_hh"] * state[0]
    return (torch.tanh(a if params["bias"] is None else a + params["bias"]),)


# cache: h, tanh(a) (the gates); backward: da
INDRNN_CELL = Cell("indrnn", ("h",), ("a",),
                   (Param("weight_ih", ("H", "I"), init=_xavier),
                    Param("weight_hh", ("H",), init=lambda rng, shape, I, H: rng.uniform(-0.5, 0.5, shape)),
                    Param("bias", ("H",), bias=True, init="zeros")),
                   indrnn_step_forward, indrnn_step_backward, fast=IndRNNFast(), memory=(2, 1),
                   reference=TorchStep(_torch_step), step_derivatives=indrnn_step_derivatives)
