r"""Peephole LSTM (Gers and Schmidhuber 2000; Gers, Schraudolph and Schmidhuber 2002): the gates see the cell state.

torch's LSTM (gate order i, f, g, o in the weights) plus one vector per gate that lets it look at c: the input
and forget gates see the cell state they act on, c_{t-1}; the output gate sees the new one, c_t. Sizes: B batch
rows, I input features, H hidden units. The state is the tuple ``(h, c)``.

Forward, one step (sigma = logistic sigmoid, * = elementwise)::

    [a_i, a_f, a_g, a_o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    i = sigma(a_i + p_i * c_{t-1})     f = sigma(a_f + p_f * c_{t-1})     g = tanh(a_g)
    c_t = f * c_{t-1} + i * g
    o = sigma(a_o + p_o * c_t)
    h_t = o * tanh(c_t)

Backward, one step. Given dh = dL/dh_t and dc = dL/dc_t arriving from step t+1. c_t reaches the loss through
h_t twice, through tanh(c_t) and through the output gate, so o's gradient comes first::

    da_o     = dh * tanh(c_t) * o(1-o)
    dc      += dh * o * (1 - tanh(c_t)^2) + da_o * p_o           (total gradient reaching c_t)
    da_i     = dc * g * i(1-i)     da_f = dc * c_{t-1} * f(1-f)     da_g = dc * i * (1-g^2)
    dc_{t-1} = dc * f + da_i * p_i + da_f * p_f                  (c_{t-1} feeds c_t, i and f)
    dp_i += sum_b da_i * c_{t-1}    dp_f += sum_b da_f * c_{t-1}    dp_o += sum_b da_o * c_t
    da = [da_i, da_f, da_g, da_o]:   dx_t = da W_ih    dh_{t-1} = da W_hh    dW_ih += da^T x_t    dW_hh += da^T h_{t-1}

Choices: torch's LSTM parameters and initialisation (U(-1/sqrt(H), 1/sqrt(H)) for all, the peepholes too, as
TensorFlow's LSTMCell initialises its diagonal peephole weights like its kernel) plus ``weight_ci``,
``weight_cf``, ``weight_co`` = p_i, p_f, p_o (H,): the weights from the cell state to each gate. With all three
zero it is torch's LSTM.

Fast path (:class:`PeepholeFast`, run by the time-loop driver): the gates in the weights' order (i, f, g, o); the
buffer tanh_c keeps tanh(c_t); the peephole gradients are sums over all steps after the loop. No fused kernel:
the unfused path runs on CuPy too.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module
from ._common import unpack
from ._gates import sigmoid, sigmoid_from_negated_
from .cell import TORCH_PARAMS, Cell, FastPath, Param, Prepared, TorchStep


class PeepholeStepCache(NamedTuple):
    """What one step's backward needs: x_t (B, I); h_{t-1}, c_{t-1}, c_t, tanh(c_t) and the gates i, f, g, o, each
    (B, H); the params."""

    x: object
    h_prev: object
    c_prev: object
    c: object
    tanh_c: object
    i: object
    f: object
    g: object
    o: object
    params: dict


def peephole_lstm_step_forward(x_t, state, params):
    """One step. x_t (B, I); state = (h_{t-1}, c_{t-1}), each (B, H); params: torch's LSTM weights (weight_ih
    (4H, I), weight_hh (4H, H), bias_ih and bias_hh (4H,) or None) and weight_ci, weight_cf, weight_co (H,).
    Returns ((h_t, c_t), cache)."""
    xp = array_module(x_t)
    h_prev, c_prev = state
    w_ih, w_hh, b_ih, b_hh = unpack(params)
    pre = x_t @ w_ih.T + h_prev @ w_hh.T
    a_i, a_f, a_g, a_o = xp.split(pre if b_ih is None else pre + b_ih + b_hh, 4, axis=1)
    i = sigmoid(xp, a_i + params["weight_ci"] * c_prev)
    f = sigmoid(xp, a_f + params["weight_cf"] * c_prev)
    g = xp.tanh(a_g)
    c = f * c_prev + i * g
    o = sigmoid(xp, a_o + params["weight_co"] * c)
    tanh_c = xp.tanh(c)
    return (o * tanh_c, c), PeepholeStepCache(x_t, h_prev, c_prev, c, tanh_c, i, f, g, o, params)


def peephole_lstm_step_backward(dstate, cache: PeepholeStepCache):
    """One step back. dstate = (dL/dh_t, dL/dc_t), each (B, H).

    Returns (dx_t (B, I), (dL/dh_{t-1}, dL/dc_{t-1}), dparams)."""
    xp = array_module(dstate[0])
    dh, dc_next = dstate
    x_t, h_prev, c_prev, c, tanh_c, i, f, g, o, params = cache
    da_o = dh * tanh_c * o * (1 - o)
    dc = dc_next + dh * o * (1 - tanh_c**2) + da_o * params["weight_co"]
    da_i = dc * g * i * (1 - i)
    da_f = dc * c_prev * f * (1 - f)
    da_g = dc * i * (1 - g**2)
    dc_prev = dc * f + da_i * params["weight_ci"] + da_f * params["weight_cf"]
    da = xp.concatenate([da_i, da_f, da_g, da_o], axis=1)
    dparams = {"weight_ih": da.T @ x_t, "weight_hh": da.T @ h_prev, "weight_ci": (da_i * c_prev).sum(axis=0),
               "weight_cf": (da_f * c_prev).sum(axis=0), "weight_co": (da_o * c).sum(axis=0)}
    if params.get("bias_ih") is not None:
        dparams.update(bias_ih=da.sum(axis=0), bias_hh=da.sum(axis=0))
    return da @ params["weight_ih"], (da @ params["weight_hh"], dc_prev), dparams


def _sigmoid_(xp, a):
    """In place: sigma(a). (Not ``xp.negative(a, out=a)``: NumPy 2.4.6 gets that wrong in float32 on a column view
    such as gates[:, 3:4] of H = 1, reading the wrong rows; multiplying by -1 is right.)"""
    xp.multiply(a, -1, out=a)
    sigmoid_from_negated_(xp, a)


class PeepholeFast(FastPath):
    """The step on one block of rows, gates (i, f, g, o) as in the weights: gates holds a (without peepholes) on
    entry, i, f, g, o on exit; tanh_c keeps tanh(c_t). consts: (p_i, p_f, p_o)."""

    order = ("i", "f", "g", "o")
    buffers = {"tanh_c": 1}
    scratch = {"term": 1}

    def forward_weights(self, xp, params, H):
        w_ih, w_hh, b_ih, b_hh = unpack(params)
        peepholes = (params["weight_ci"], params["weight_cf"], params["weight_co"])
        return Prepared(w_ih, w_hh, None if b_ih is None else b_ih + b_hh, consts=peepholes)

    def forward_step(self, xp, p, a, t, a_hh):
        gates, c_prev, h_new, c_new, tanh_c = a.gates[t], a.c_prev[t], a.h_new[t], a.c_new[t], a.tanh_c[t]
        p_i, p_f, p_o = p.consts
        H = c_new.shape[1]
        gates += a_hh
        i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        xp.multiply(p_i, c_prev, out=tanh_c)  # (tanh_c as scratch until it is written)
        i += tanh_c  # a_i + p_i * c_{t-1}
        xp.multiply(p_f, c_prev, out=tanh_c)
        f += tanh_c  # a_f + p_f * c_{t-1}
        _sigmoid_(xp, gates[:, : 2 * H])
        xp.tanh(g, out=g)
        xp.multiply(f, c_prev, out=c_new)  # c_t = f * c_{t-1} + i * g
        xp.multiply(i, g, out=tanh_c)
        c_new += tanh_c
        xp.multiply(p_o, c_new, out=tanh_c)
        o += tanh_c  # a_o + p_o * c_t
        _sigmoid_(xp, o)
        xp.tanh(c_new, out=tanh_c)
        xp.multiply(o, tanh_c, out=h_new)  # h_t = o * tanh(c_t)

    def backward_step(self, xp, p, a, t):
        dh, dc, da, term = a.dh, a.dc, a.dgates[t], a.term
        gates, c_prev, tanh_c = a.gates[t], a.c_prev[t], a.tanh_c[t]
        p_i, p_f, p_o = p.consts
        H = dh.shape[1]
        i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        da_i, da_f, da_g, da_o = (da[:, k * H : (k + 1) * H] for k in range(4))
        xp.subtract(1, o, out=da_o)  # da_o = dh * tanh(c_t) * o(1-o)
        da_o *= o
        da_o *= tanh_c
        da_o *= dh
        xp.multiply(tanh_c, tanh_c, out=term)  # dc += dh * o (1 - tanh(c_t)^2) + da_o * p_o
        xp.subtract(1, term, out=term)
        term *= o
        term *= dh
        dc += term
        xp.multiply(da_o, p_o, out=term)
        dc += term
        xp.subtract(1, i, out=da_i)  # da_i = dc * g * i(1-i)
        da_i *= i
        da_i *= g
        da_i *= dc
        xp.subtract(1, f, out=da_f)  # da_f = dc * c_{t-1} * f(1-f)
        da_f *= f
        da_f *= c_prev
        da_f *= dc
        xp.multiply(g, g, out=da_g)  # da_g = dc * i * (1-g^2)
        xp.subtract(1, da_g, out=da_g)
        da_g *= i
        da_g *= dc
        dc *= f  # dc_{t-1} = dc * f + da_i * p_i + da_f * p_f
        xp.multiply(da_i, p_i, out=term)
        dc += term
        xp.multiply(da_f, p_f, out=term)
        dc += term

    def param_grads(self, xp, p, grads, run):
        H = run.c_prev.shape[-1]
        da = run.dgates
        sums = {"weight_ci": (da[..., :H], run.c_prev), "weight_cf": (da[..., H : 2 * H], run.c_prev),
                "weight_co": (da[..., 3 * H :], run.c_new)}
        peepholes = {name: xp.einsum("tbh,tbh->h", d, c) for name, (d, c) in sums.items()}
        return {**grads, **peepholes}


def _torch_step(x_t, state, params):
    """The step in torch operations (the tests' reference, differentiated by autograd)."""
    import torch

    h, c = state
    pre = x_t @ params["weight_ih"].T + h @ params["weight_hh"].T
    if params["bias_ih"] is not None:
        pre = pre + params["bias_ih"] + params["bias_hh"]
    a_i, a_f, a_g, a_o = pre.chunk(4, dim=1)
    i, f = torch.sigmoid(a_i + params["weight_ci"] * c), torch.sigmoid(a_f + params["weight_cf"] * c)
    c_t = f * c + i * torch.tanh(a_g)
    return torch.sigmoid(a_o + params["weight_co"] * c_t) * torch.tanh(c_t), c_t


# cache: h, c, the 4 gates, tanh c; backward: the 4 gate gradients
PEEPHOLE_LSTM_CELL = Cell("peephole_lstm", ("h", "c"), ("i", "f", "g", "o"),
                          (*TORCH_PARAMS, *(Param(name, ("H",)) for name in ("weight_ci", "weight_cf", "weight_co"))),
                          peephole_lstm_step_forward, peephole_lstm_step_backward, fast=PeepholeFast(),
                          memory=(7, 4), reference=TorchStep(_torch_step), aliases=("peephole",))
