r"""LayerNorm LSTM (Ba, Kiros and Hinton 2016), as haste's ``LayerNormLSTM``: layer normalisation of the input and
recurrent pre-activations and of the cell state before its tanh.

Sizes: B batch rows, I input features, H hidden units. The state is the tuple ``(h, c)``. LN(v) normalises each
row of v over its features, with eps = 1e-5 (haste's and torch's)::

    LN(v) = (v - mean(v)) * r,    r = 1 / sqrt(var(v) + eps)      (mean and biased variance over the row)

Forward, one step (sigma = logistic sigmoid, * = elementwise, gate order i, f, g, o as torch's LSTM)::

    [a_i, a_f, a_g, a_o] = gamma_ih * LN(W_ih x_t) + gamma_hh * LN(W_hh h_{t-1}) + b      (each LN over all 4H)
    i = sigma(a_i)   f = sigma(a_f)   g = tanh(a_g)   o = sigma(a_o)
    c_t = f * c_{t-1} + i * g
    n_t = gamma_c * LN(c_t) + beta_c                                                     (LN over H)
    h_t = o * tanh(n_t)

Backward, one step. Given dh = dL/dh_t and dc = dL/dc_t from step t+1, and the backward of y = LN(v) for a
gradient dy, ``dv = r * (dy - mean(dy) - y * mean(dy * y))`` (means over the row)::

    dn = dh * o * (1 - tanh(n_t)^2)           dgamma_c += sum_b dn * LN(c_t)     dbeta_c += sum_b dn
    dc += LN backward of dn * gamma_c          (the total gradient reaching c_t)
    da = [dc * g i(1-i), dc * c_{t-1} f(1-f), dc * i (1-g^2), dh * tanh(n_t) o(1-o)]    dc_{t-1} = dc * f
    db += sum_b da    dgamma_ih += sum_b da * LN(W_ih x_t)    dgamma_hh += sum_b da * LN(W_hh h_{t-1})
    dG_x = LN backward of da * gamma_ih     dx_t = dG_x W_ih       dW_ih += dG_x^T x_t
    dG_h = LN backward of da * gamma_hh     dh_{t-1} = dG_h W_hh   dW_hh += dG_h^T h_{t-1}

Choices, after haste's ``LayerNormLSTM``: no shift on the two pre-activation norms (b serves), one bias b;
torch's gate order (i, f, g, o; haste's is i, g, f, o); parameters ``weight_ih`` (4H, I), ``weight_hh`` (4H, H),
``bias`` (4H,), ``gamma_ih``, ``gamma_hh`` (4H,) (haste's gamma[0], gamma[1]), ``gamma_c``, ``beta_c`` (H,)
(haste's gamma_h, beta_h); ``bias=False`` leaves out every additive term, b and beta_c. Initialisation as
haste: W_ih Xavier-uniform per gate block, W_hh orthogonal per gate block, b zeros but 1 on the forget gate,
the gains ones, beta_c zeros. The hidden size is at least 2: a norm over one feature is identically 0, so c_t
would never reach h_t (and each 1 x 1 orthogonal block of W_hh is +-1, often making W_hh h_{t-1} a constant row).

Fast path (:class:`LayerNormFast`, run by the time-loop driver): the input side's normalisation runs for all steps
before the loop (:meth:`~LayerNormFast.project`) and its backward for all steps after it
(:meth:`~LayerNormFast.input_side`); the loop keeps the raw products W_hh h_{t-1} (``a_h``) and recomputes the
norms' statistics in the backward rather than storing them. A norm couples all the features of a row, so there
is no one-thread-per-unit CUDA kernel; the unfused path runs on CuPy.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import array_module
from ._gates import sigmoid, sigmoid_from_negated_
from .cell import Cell, FastPath, Param, Prepared, TorchStep

EPS = 1e-5


def layer_norm(xp, v):
    """(LN(v), r): v normalised over its last axis, and r = 1 / sqrt(var + eps) with a kept last axis."""
    centred = v - v.mean(axis=-1, keepdims=True)
    r = 1 / xp.sqrt((centred * centred).mean(axis=-1, keepdims=True) + EPS)
    return centred * r, r


def layer_norm_backward(dy, y, r):
    """dL/dv for y = LN(v) = (v - mean) * r, given dy = dL/dy: r * (dy - mean(dy) - y * mean(dy * y))."""
    return r * (dy - dy.mean(axis=-1, keepdims=True) - y * (dy * y).mean(axis=-1, keepdims=True))


class LayerNormStepCache(NamedTuple):
    """What one step's backward needs: x_t (B, I), h_{t-1} and c_{t-1} (B, H); the normalised products
    LN(W_ih x_t), LN(W_hh h_{t-1}) (B, 4H) with their r (B, 1); the gates i, f, g, o; LN(c_t) and its r;
    tanh(n_t); the params."""

    x: object
    h_prev: object
    c_prev: object
    norm_x: object
    r_x: object
    norm_h: object
    r_h: object
    i: object
    f: object
    g: object
    o: object
    norm_c: object
    r_c: object
    tanh_n: object
    params: dict


def layernorm_lstm_step_forward(x_t, state, params):
    """One step. x_t (B, I); state = (h_{t-1}, c_{t-1}), each (B, H); params: weight_ih (4H, I), weight_hh
    (4H, H), gamma_ih, gamma_hh (4H,), gamma_c (H,); bias (4H,), beta_c (H,) or None. Returns ((h_t, c_t), cache)."""
    xp = array_module(x_t)
    h_prev, c_prev = state
    norm_x, r_x = layer_norm(xp, x_t @ params["weight_ih"].T)
    norm_h, r_h = layer_norm(xp, h_prev @ params["weight_hh"].T)
    a = params["gamma_ih"] * norm_x + params["gamma_hh"] * norm_h
    if params.get("bias") is not None:
        a = a + params["bias"]
    a_i, a_f, a_g, a_o = xp.split(a, 4, axis=1)
    i, f, g, o = sigmoid(xp, a_i), sigmoid(xp, a_f), xp.tanh(a_g), sigmoid(xp, a_o)
    c = f * c_prev + i * g
    norm_c, r_c = layer_norm(xp, c)
    n = params["gamma_c"] * norm_c
    if params.get("beta_c") is not None:
        n = n + params["beta_c"]
    tanh_n = xp.tanh(n)
    return (o * tanh_n, c), LayerNormStepCache(x_t, h_prev, c_prev, norm_x, r_x, norm_h, r_h, i, f, g, o, norm_c,
                                               r_c, tanh_n, params)


def layernorm_lstm_step_backward(dstate, cache: LayerNormStepCache):
    """One step back. dstate = (dL/dh_t, dL/dc_t), each (B, H).

    Returns (dx_t (B, I), (dL/dh_{t-1}, dL/dc_{t-1}), dparams)."""
    xp = array_module(dstate[0])
    dh, dc_next = dstate
    p = cache.params
    i, f, g, o, tanh_n = cache.i, cache.f, cache.g, cache.o, cache.tanh_n
    dn = dh * o * (1 - tanh_n**2)
    dc = dc_next + layer_norm_backward(dn * p["gamma_c"], cache.norm_c, cache.r_c)
    da = xp.concatenate([dc * g * i * (1 - i), dc * cache.c_prev * f * (1 - f), dc * i * (1 - g**2),
                         dh * tanh_n * o * (1 - o)], axis=1)
    dg_x = layer_norm_backward(da * p["gamma_ih"], cache.norm_x, cache.r_x)
    dg_h = layer_norm_backward(da * p["gamma_hh"], cache.norm_h, cache.r_h)
    dparams = {"weight_ih": dg_x.T @ cache.x, "weight_hh": dg_h.T @ cache.h_prev,
               "gamma_ih": (da * cache.norm_x).sum(axis=0), "gamma_hh": (da * cache.norm_h).sum(axis=0),
               "gamma_c": (dn * cache.norm_c).sum(axis=0)}
    if p.get("bias") is not None:
        dparams.update(bias=da.sum(axis=0), beta_c=dn.sum(axis=0))
    return dg_x @ p["weight_ih"], (dg_h @ p["weight_hh"], dc * f), dparams


class LayerNormFast(FastPath):
    """The step on one block of rows, gates (i, f, g, o): gates holds gamma_ih * LN(W_ih x_t) + b on entry (from
    :meth:`project`), i, f, g, o on exit; buffers: a_x (the raw input projection), a_h (the raw W_hh h_{t-1}),
    tanh_n; backward buffer dn. consts: (gamma_ih, gamma_hh, gamma_c, beta_c or None)."""

    order = ("i", "f", "g", "o")
    buffers = {"a_x": 4, "a_h": 4, "tanh_n": 1}
    backward_buffers = {"dn": 1}
    separate_recurrent_grad = True  # dG_h is LN backward of da * gamma_hh, dG_x of da * gamma_ih

    def forward_weights(self, xp, params, H):
        consts = (params["gamma_ih"], params["gamma_hh"], params["gamma_c"], params.get("beta_c"))
        return Prepared(params["weight_ih"], params["weight_hh"], None, consts=consts, extra=params.get("bias"))

    def project(self, xp, p, a):
        xp.copyto(a.a_x, a.gates)  # W_ih x_t, all steps
        norm_x, _ = layer_norm(xp, a.gates)
        xp.multiply(norm_x, p.consts[0], out=a.gates)
        if p.extra is not None:
            a.gates += p.extra

    def forward_step(self, xp, p, a, t, a_hh):
        gates, a_h, tanh_n = a.gates[t], a.a_h[t], a.tanh_n[t]
        c_prev, h_new, c_new = a.c_prev[t], a.h_new[t], a.c_new[t]
        _, gamma_hh, gamma_c, beta_c = p.consts
        H = c_new.shape[1]
        xp.copyto(a_h, a_hh)  # W_hh h_{t-1}, for the backward
        gates += gamma_hh * layer_norm(xp, a_h)[0]
        sigmoids = (gates[:, : 2 * H], gates[:, 3 * H :])  # i, f and o
        for s in sigmoids:  # sigma in place (times -1, not negative(): see peephole_lstm._sigmoid_)
            xp.multiply(s, -1, out=s)
            sigmoid_from_negated_(xp, s)
        i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        xp.tanh(g, out=g)
        xp.multiply(f, c_prev, out=c_new)  # c_t = f * c_{t-1} + i * g
        c_new += i * g
        n = gamma_c * layer_norm(xp, c_new)[0]
        if beta_c is not None:
            n += beta_c
        xp.tanh(n, out=tanh_n)
        xp.multiply(o, tanh_n, out=h_new)  # h_t = o * tanh(n_t)

    def backward_step(self, xp, p, a, t):
        dh, dc, da, dg_h, dn = a.dh, a.dc, a.dgates[t], a.dgates_h[t], a.dn[t]
        gates, c_prev, c_new, tanh_n = a.gates[t], a.c_prev[t], a.c_new[t], a.tanh_n[t]
        _, gamma_hh, gamma_c, _ = p.consts
        H = dh.shape[1]
        i, f, g, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        xp.multiply(tanh_n, tanh_n, out=dn)  # dn = dh * o * (1 - tanh(n_t)^2)
        xp.subtract(1, dn, out=dn)
        dn *= o
        dn *= dh
        dc += layer_norm_backward(dn * gamma_c, *layer_norm(xp, c_new))
        da[:, :H] = dc * g * i * (1 - i)
        da[:, H : 2 * H] = dc * c_prev * f * (1 - f)
        da[:, 2 * H : 3 * H] = dc * i * (1 - g * g)
        da[:, 3 * H :] = dh * tanh_n * o * (1 - o)
        dc *= f  # dc_{t-1} = dc * f
        dg_h[...] = layer_norm_backward(da * gamma_hh, *layer_norm(xp, a.a_h[t]))  # the driver adds dG_h W_hh

    def input_side(self, xp, p, run):
        run.norm_x, r_x = layer_norm(xp, run.a_x)
        return layer_norm_backward(run.dgates * p.consts[0], run.norm_x, r_x)

    def param_grads(self, xp, p, grads, run):
        da, dn = run.dgates, run.dn
        total = (0, 1)  # over steps and rows
        dparams = {"weight_ih": grads["weight_ih"], "weight_hh": grads["weight_hh"],
                   "gamma_ih": (da * run.norm_x).sum(axis=total),
                   "gamma_hh": (da * layer_norm(xp, run.a_h)[0]).sum(axis=total),
                   "gamma_c": (dn * layer_norm(xp, run.c_new)[0]).sum(axis=total)}
        if p.extra is not None:
            dparams.update(bias=da.sum(axis=total), beta_c=dn.sum(axis=total))
        return dparams


def spread_at(x, state, params):
    """The spreads (standard deviations over a row) of what the three norms see, W_ih x_t, W_hh h_{t-1} and c_t,
    for x (..., I) and the state before the step (..., H) each: (..., 3). A norm of a row whose spread is near 0
    is as steep as 1 / sqrt(eps) and curves on the scale sqrt(eps), and the steepness compounds through the
    norms after it (Cell.nonsmooth_at: finite differences are meaningful only away from 0); a row of equal
    nonzero values (spread 0) is normalised to its rounding error, different in every implementation. Rows that
    are exactly 0 (a zero input or initial state) and norms over one feature are inf: their norm is exactly 0
    and a perturbation of size eps leaves them in the norm's linear range."""
    xp = array_module(x)
    h_prev, c_prev = state
    a_x, a_h = x @ params["weight_ih"].T, h_prev @ params["weight_hh"].T
    a = params["gamma_ih"] * layer_norm(xp, a_x)[0] + params["gamma_hh"] * layer_norm(xp, a_h)[0]
    if params.get("bias") is not None:
        a = a + params["bias"]
    H = c_prev.shape[-1]
    a_i, a_f, a_g = (a[..., k * H : (k + 1) * H] for k in range(3))
    c = sigmoid(xp, a_f) * c_prev + sigmoid(xp, a_i) * xp.tanh(a_g)

    def spread(v):
        return xp.where((v == 0).all(axis=-1), xp.inf, v.std(axis=-1))

    spreads = [spread(a_x), spread(a_h), spread(c) if H > 1 else xp.full(c.shape[:-1], xp.inf)]
    return xp.stack(spreads, axis=-1)


def _xavier(rng, shape, input_size, hidden_size):
    bound = math.sqrt(6.0 / (input_size + hidden_size))
    return rng.uniform(-bound, bound, shape)


def _orthogonal_blocks(rng, shape, input_size, hidden_size):
    """Each H x H gate block orthogonal (QR of a Gaussian matrix, signs fixed by R's diagonal)."""
    import numpy as np

    blocks = []
    for _ in range(shape[0] // hidden_size):
        q, r = np.linalg.qr(rng.standard_normal((hidden_size, hidden_size)))
        blocks.append(q * np.sign(np.diag(r)))
    return np.concatenate(blocks)


def _forget_bias(rng, shape, input_size, hidden_size):
    import numpy as np

    b = np.zeros(shape)
    b[hidden_size : 2 * hidden_size] = 1.0  # the forget gate's block (i, f, g, o)
    return b


def _torch_step(x_t, state, params):
    """The step in torch operations, differentiated by autograd in the tests. LN is written out rather than
    ``torch.nn.functional.layer_norm``, whose backward leaves rounding noise (2.5e-14) on a gain's gradient that
    is exactly 0 (a norm over one feature is identically 0); tests/test_registry.py checks it against that."""
    import torch

    def ln(v, gamma, beta=None):
        centred = v - v.mean(dim=-1, keepdim=True)
        y = gamma * centred * torch.rsqrt((centred * centred).mean(dim=-1, keepdim=True) + EPS)
        return y if beta is None else y + beta

    h, c = state
    a = ln(x_t @ params["weight_ih"].T, params["gamma_ih"]) + ln(h @ params["weight_hh"].T, params["gamma_hh"])
    a_i, a_f, a_g, a_o = (a if params["bias"] is None else a + params["bias"]).chunk(4, dim=1)
    c_t = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
    n = ln(c_t, params["gamma_c"], params["beta_c"])
    return torch.sigmoid(a_o) * torch.tanh(n), c_t


# cache: h, c, the 4 gates, a_x (4), a_h (4), tanh n; backward: da (4), dG_h (4), dn, dG_x (4), and 12 more
# while the gains' gradients and dG_x recompute the norms of W_ih x_t and W_hh h_{t-1} over all steps (3 x 4H):
# measured against tracemalloc peaks, tests/test_memory.py (13 gave estimate / peak 0.77 to 1.02; 25 gives 1.05
# to 1.12, as the other cells)
LAYERNORM_LSTM_CELL = Cell(
    "layernorm_lstm", ("h", "c"), ("i", "f", "g", "o"),
    (Param("weight_ih", ("G*H", "I"), init=_xavier), Param("weight_hh", ("G*H", "H"), init=_orthogonal_blocks),
     Param("bias", ("G*H",), bias=True, init=_forget_bias), Param("gamma_ih", ("G*H",), init="ones"),
     Param("gamma_hh", ("G*H",), init="ones"), Param("gamma_c", ("H",), init="ones"),
     Param("beta_c", ("H",), bias=True, init="zeros")),
    layernorm_lstm_step_forward, layernorm_lstm_step_backward, fast=LayerNormFast(), memory=(15, 25),
    reference=TorchStep(_torch_step), aliases=("layer_norm_lstm", "ln_lstm"), nonsmooth_at=spread_at,
    float32_in_distribution=True, min_hidden_size=2)
