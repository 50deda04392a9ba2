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

The fast path (:class:`GRUFast`, run by the time-loop driver) computes r and z as sigma(a) = 1 / (1 + exp(-a))
on weights whose r and z rows are pre-scaled by -1 (one exp for both gates); the same step as CUDA is
``kernels/gru.cu``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module
from ._common import ImmediateTerm, StepDerivatives, unpack
from ._gates import sigmoid, sigmoid_from_negated_
from .cell import TORCH_PARAMS, Cell, FastPath, Kernel, Prepared, TorchModule, kernel_file


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


class GRUFast(FastPath):
    """The fast path's step on one block of rows: gates (r, z, n) hold -a_r, -a_z and W_in x_t + b_in on entry
    (the r, z rows of the forward weights negated, their biases b_i + b_h folded in), r, z, n on exit; the
    buffer m keeps W_hn h_{t-1} + b_hn. consts: (b_hn,) or a dummy, flags: (has_bias,)."""

    order = ("r", "z", "n")
    buffers = {"m": 1}
    scratch = {"one_minus_n2": 1, "sigmoid_grads": 2}
    separate_recurrent_grad = True  # dG_h = [da_r, da_z, da_n * r]
    carries_h = True  # dh_{t-1} = dh * z + dG_h W_hh
    kernel = Kernel(kernel_file(__file__, "gru.cu"), "gru_forward_step", "gru_backward_step")

    def forward_weights(self, xp, params, H):
        w_ih, w_hh, b_ih, b_hh = unpack(params)
        scale = xp.ones((3 * H, 1), dtype=w_ih.dtype)
        scale[: 2 * H] = -1.0
        if b_ih is None:
            bias_x, b_hn = None, xp.zeros(1, dtype=w_ih.dtype)
        else:
            bias_x = b_ih.copy()
            bias_x[: 2 * H] += b_hh[: 2 * H]  # r, z biases fold into the input projection
            bias_x *= scale[:, 0]
            b_hn = xp.ascontiguousarray(b_hh[2 * H :])
        return Prepared(w_ih * scale, w_hh * scale, bias_x, consts=(b_hn,), flags=(b_ih is not None,),
                        extra=None if b_ih is None else b_hn)

    def backward_weights(self, xp, params, H):
        w_ih, w_hh, b_ih, _ = unpack(params)
        return Prepared(w_ih, w_hh, b_ih)

    def forward_step(self, xp, p, a, t, a_hh):
        gates, h_prev, h_new, m, b_hn = a.gates[t], a.h_prev[t], a.h_new[t], a.m[t], p.extra
        H = h_new.shape[1]
        rz = gates[:, : 2 * H]
        rz += a_hh[:, : 2 * H]
        sigmoid_from_negated_(xp, rz)
        r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
        if b_hn is None:  # m = W_hn h_{t-1} + b_hn
            xp.copyto(m, a_hh[:, 2 * H :])
        else:
            xp.add(a_hh[:, 2 * H :], b_hn, out=m)
        xp.multiply(r, m, out=h_new)  # h_new as scratch for r * m
        n += h_new
        xp.tanh(n, out=n)  # n = tanh(W_in x_t + b_in + r * m)
        xp.subtract(h_prev, n, out=h_new)  # h_t = n + z (h_{t-1} - n)
        h_new *= z
        h_new += n

    def backward_step(self, xp, p, a, t):
        dh, gates, h_prev, m, dgx, dgh = a.dh, a.gates[t], a.h_prev[t], a.m[t], a.dgates[t], a.dgates_h[t]
        H = dh.shape[1]
        r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
        da_r, da_z, da_n = dgx[:, :H], dgx[:, H : 2 * H], dgx[:, 2 * H :]
        one_minus_n2, sigmoid_grads = a.one_minus_n2, a.sigmoid_grads
        xp.subtract(1, z, out=da_n)  # da_n = dh * (1 - z) * (1 - n^2)
        da_n *= dh
        xp.multiply(n, n, out=one_minus_n2)
        xp.subtract(1, one_minus_n2, out=one_minus_n2)
        da_n *= one_minus_n2
        # da_r = da_n * m  (times r(1-r) below);  da_z = dh * (h_prev - n)  (times z(1-z) below)
        xp.multiply(da_n, m, out=da_r)
        xp.subtract(h_prev, n, out=da_z)
        da_z *= dh
        rz = gates[:, : 2 * H]
        xp.multiply(rz, rz, out=sigmoid_grads)
        xp.subtract(rz, sigmoid_grads, out=sigmoid_grads)  # r(1-r), z(1-z)
        dgx[:, : 2 * H] *= sigmoid_grads
        dgh[:, : 2 * H] = dgx[:, : 2 * H]
        xp.multiply(da_n, r, out=dgh[:, 2 * H :])
        dh *= z  # dh_{t-1} = dh * z + dG_h W_hh (the driver adds the product)

    def param_grads(self, xp, p, grads, run):
        return grads  # bias_ih sums dG_x, bias_hh sums dG_h: torch's gradients


# -- the step's Jacobians, factored per hidden unit (the forward-mode algorithms of rnn_scratch.online) --------
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


# cache: h, the 3 gates, m; backward: dG_x and dG_h (3 each)
GRU_CELL = Cell("gru", ("h",), ("r", "z", "n"), TORCH_PARAMS, gru_step_forward, gru_step_backward, fast=GRUFast(),
                memory=(5, 6), reference=TorchModule("GRU"), step_derivatives=gru_step_derivatives)
