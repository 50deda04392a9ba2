"""Helpers shared by the cell modules: parameter unpacking, masks, the hoisted GEMMs."""

from __future__ import annotations

import contextlib

import numpy as np

from ..backend import array_module

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def unpack(params):
    """(weight_ih, weight_hh, bias_ih or None, bias_hh or None) from a params dict."""
    return params["weight_ih"], params["weight_hh"], params.get("bias_ih"), params.get("bias_hh")


def time_order(T: int, reverse: bool):
    """The order in which a direction visits time steps."""
    return range(T - 1, -1, -1) if reverse else range(T)


def state_slots(T: int, reverse: bool):
    """Index helpers for a (T+1, B, H) state buffer.

    Forward: slot 0 holds the initial state and slot t+1 the state after step t.
    Reverse: slot T holds the initial state and slot t the state after step t.
    So the states *after* each step are ``buf[1:]`` (forward) or ``buf[:T]`` (reverse),
    and the states *before* each step are ``buf[:T]`` (forward) or ``buf[1:]`` (reverse),
    both contiguous in time order.
    """
    if reverse:
        return T, (lambda t: t + 1), (lambda t: t), slice(0, T), slice(1, T + 1)
    return 0, (lambda t: t), (lambda t: t + 1), slice(1, T + 1), slice(0, T)


def input_projection(x, weight_ih, bias=None):
    """``x @ W_ih.T + bias`` for all T steps at once: one (T*B, I) x (I, G*H) GEMM.

    Returns a fresh (T, B, G*H) array that the forward pass overwrites with gate activations.
    """
    xp = array_module(x)
    T, B, I = x.shape
    if I == 1:  # an outer product: BLAS is slow on K=1 GEMMs, broadcasting is 2-3x faster
        gates = x.reshape(T * B, 1) * weight_ih[:, 0]
    else:
        gates = xp.matmul(x.reshape(T * B, I), weight_ih.T)
    if bias is not None:
        gates += bias
    return gates.reshape(T, B, -1)


def weight_gradients(dgates, x, h_prev, dgates_hh=None, has_bias=True):
    """The parameter gradients of one direction as single GEMMs over all steps.

    dW_ih = sum_t dgates_t^T x_t,  dW_hh = sum_t dgates_hh_t^T h_{t-1},
    db_ih = sum_t dgates_t,        db_hh = sum_t dgates_hh_t.
    ``dgates_hh`` differs from ``dgates`` only for the GRU (its n gate); None means the same.
    """
    if dgates_hh is None:
        dgates_hh = dgates
    T, B, G = dgates.shape
    dg = dgates.reshape(T * B, G)
    dgh = dgates_hh.reshape(T * B, G)
    grads = {
        "weight_ih": dg.T @ x.reshape(T * B, -1),
        "weight_hh": dgh.T @ h_prev.reshape(T * B, -1),
    }
    if has_bias:
        grads["bias_ih"] = dg.sum(axis=0)
        grads["bias_hh"] = dgh.sum(axis=0)
    return grads


def input_gradient(dgates, weight_ih):
    """dx_t = dgates_t @ W_ih for all steps: one GEMM."""
    T, B, G = dgates.shape
    return (dgates.reshape(T * B, G) @ weight_ih).reshape(T, B, -1)


def sigmoid(xp, a):
    """The logistic function 1 / (1 + exp(-a)), written as the equations read (reference steps)."""
    return 1 / (1 + xp.exp(-a))


def sigmoid_from_negated_(xp, a):
    """In place: a holds -z on entry, sigma(z) = 1 / (1 + exp(-z)) on exit.

    The fast paths pre-scale the sigmoid rows of the weights by -1, so the negation is free. One
    ``exp`` and two cheap passes: NumPy's ``exp`` is several times cheaper than its ``tanh``
    (4x in float64, 2x in float32 on AVX2). exp overflows to inf for very negative z, giving the
    exact limit 0 (see :func:`quiet_overflow`).
    """
    xp.exp(a, out=a)
    a += 1
    xp.reciprocal(a, out=a)


def tanh_from_sigmoid_(a):
    """In place: a holds sigma(2z) on entry, tanh(z) = 2 sigma(2z) - 1 on exit."""
    a *= 2
    a -= 1


def tanh_(xp, a):
    """In-place tanh; on NumPy through exp (tanh(z) = 2 / (1 + exp(-2z)) - 1) where that is faster:
    float64 (exp ~4x cheaper than tanh) or large float32 blocks (~1.4x); small blocks pay more in calls."""
    if xp is not np or (a.dtype == np.float32 and a.size < 4096):
        xp.tanh(a, out=a)
        return
    a *= -2
    sigmoid_from_negated_(xp, a)
    tanh_from_sigmoid_(a)


def quiet_overflow(xp):
    """NumPy warns when exp overflows to inf; in the sigmoid that inf is the right answer."""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()

