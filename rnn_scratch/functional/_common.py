"""Helpers shared by the cell modules: parameter unpacking, masks, the hoisted GEMMs."""

from __future__ import annotations

import contextlib

import numpy as np

from ..backend import array_module
from ._parallel import for_each_block, split

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def unpack(params):
    """(weight_ih, weight_hh, bias_ih or None, bias_hh or None) from a params dict."""
    return params["weight_ih"], params["weight_hh"], params.get("bias_ih"), params.get("bias_hh")


def time_order(T: int, reverse: bool):
    """The order in which a direction visits time steps."""
    return range(T - 1, -1, -1) if reverse else range(T)


CHUNK_ELEMENTS = 1 << 18  # elements (1 MB of float32) a run of steps may span and stay in cache


def backward_time_chunks(T: int, reverse: bool, per_step: int):
    """The steps in the backward pass's order (the reverse of the forward's), cut into runs of
    consecutive steps of at most ``CHUNK_ELEMENTS`` elements (``per_step`` each; at least one step)."""
    order = time_order(T, reverse)[::-1]
    k = max(1, CHUNK_ELEMENTS // max(per_step, 1))
    return [order[j : j + k] for j in range(0, T, k)]


def span(steps: range) -> slice:
    """The slice of the time axis that a run of consecutive steps covers."""
    return slice(min(steps), max(steps) + 1)


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


def input_projection(x, weight_ih, bias=None, parts=1):
    """``x @ W_ih.T + bias`` for all T steps at once: one (T*B, I) x (I, G*H) GEMM (``parts`` threads).

    Returns a fresh (T, B, G*H) array that the forward pass overwrites with gate activations.
    """
    xp = array_module(x)
    T, B, I = x.shape
    rows = x.reshape(T * B, I)
    gates = xp.empty((T * B, weight_ih.shape[0]), dtype=x.dtype)

    def project(r):
        if I == 1:  # an outer product: BLAS is slow on K=1 GEMMs, broadcasting is 2-3x faster
            xp.multiply(rows[r], weight_ih[:, 0], out=gates[r])
        else:
            xp.matmul(rows[r], weight_ih.T, out=gates[r])
        if bias is not None:
            gates[r] += bias

    for_each_block(project, split(T * B, parts))
    return gates.reshape(T, B, -1)


def weight_gradients(dgates, x, h_prev, dgates_hh=None, has_bias=True, parts=1):
    """The parameter gradients of one direction as single GEMMs over all steps.

    dW_ih = sum_t dgates_t^T x_t,  dW_hh = sum_t dgates_hh_t^T h_{t-1},
    db_ih = sum_t dgates_t,        db_hh = sum_t dgates_hh_t.
    ``dgates_hh`` differs from ``dgates`` only for the GRU (its n gate); None means the same.
    With ``parts`` > 1 each thread takes a contiguous share of the (step, row) pairs and the
    partial sums are added (contiguous operands; measured faster than sharing out gate rows).
    """
    same = dgates_hh is None
    T, B, G = dgates.shape
    dg = dgates.reshape(T * B, G)
    dgh = dg if same else dgates_hh.reshape(T * B, G)
    xs, hs = x.reshape(T * B, -1), h_prev.reshape(T * B, -1)

    def share(r):
        grads = {"weight_ih": dg[r].T @ xs[r], "weight_hh": dgh[r].T @ hs[r]}
        if has_bias:
            grads["bias_ih"] = dg[r].sum(axis=0)
            grads["bias_hh"] = grads["bias_ih"].copy() if same else dgh[r].sum(axis=0)
        return grads

    grads, *partial = for_each_block(share, split(T * B, parts))
    for more in partial:
        for name in grads:
            grads[name] += more[name]
    return grads


def input_gradient(dgates, weight_ih, parts=1):
    """dx_t = dgates_t @ W_ih for all steps: one GEMM (``parts`` threads)."""
    xp = array_module(dgates)
    T, B, G = dgates.shape
    dg = dgates.reshape(T * B, G)
    dx = xp.empty((T * B, weight_ih.shape[1]), dtype=dgates.dtype)
    for_each_block(lambda r: xp.matmul(dg[r], weight_ih, out=dx[r]), split(T * B, parts))
    return dx.reshape(T, B, -1)


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


def tanh_(xp, a, out=None):
    """tanh(a) into ``out`` (default: in place); on NumPy through exp (tanh(z) = 2 / (1 + exp(-2z)) - 1)
    where that is faster: float64 (exp ~4x cheaper than tanh) or large float32 blocks (~1.4x); small
    blocks pay more in calls."""
    out = a if out is None else out
    if xp is not np or (a.dtype == np.float32 and a.size < 4096):
        xp.tanh(a, out=out)
        return
    xp.multiply(a, -2, out=out)
    sigmoid_from_negated_(xp, out)
    tanh_from_sigmoid_(out)


def quiet_overflow(xp):
    """NumPy warns when exp overflows to inf; in the sigmoid that inf is the right answer."""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()

