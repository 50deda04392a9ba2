"""Whole-sequence forward/backward for every cell, on top of the per-step functions.

Two implementations of the same mathematics:

- :func:`sequence_forward` / :func:`sequence_backward` dispatch to each cell's fast path
  (input projection of all steps hoisted into one GEMM, one GEMM per step, in-place gate math,
  the weight gradients as single GEMMs after the time loop);
- :func:`reference_forward` / :func:`reference_backward` just loop the readable
  ``*_step_forward`` / ``*_step_backward`` functions over time. They are the specification
  the fast path is tested against.

Conventions: ``x`` is time-major (T, B, I); ``state`` is a tuple, ``(h,)`` for RNN/GRU and
``(h, c)`` for LSTM; ``mask`` is None or a boolean (T, B, 1) array, True at valid steps.
At padded steps (mask False) the state is carried through unchanged and the output is zero,
so a sequence of length L ends in the state after its step L-1, and a reverse direction
starts at step L-1: the semantics of torch's packed sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..backend import array_module
from . import gru, lstm, rnn
from ._common import time_order


@dataclass(frozen=True)
class Cell:
    """What the sequence code needs to know about a cell type."""

    name: str
    num_gates: int  # rows of W_ih per hidden unit: 1 (RNN), 4 (LSTM), 3 (GRU)
    num_states: int  # 1: (h,), 2: (h, c)
    step_forward: Callable  # (x_t, state tuple, params) -> (state tuple, cache)
    step_backward: Callable  # (dstate tuple, cache) -> (dx_t, dstate_prev tuple, dparams)
    forward: Callable  # (x, state tuple, params, reverse, mask) -> (out, state tuple, cache)
    backward: Callable  # (dout, dstate tuple, cache) -> (dx, dstate0 tuple, dparams)


def _single_state(step_forward, step_backward, forward, backward, **kw):
    """Adapt the (h-only) RNN/GRU functions to the tuple-of-states convention."""

    def sf(x_t, state, params):
        h, cache = step_forward(x_t, state[0], params, **kw)
        return (h,), cache

    def sb(dstate, cache):
        dx, dh, dparams = step_backward(dstate[0], cache)
        return dx, (dh,), dparams

    def f(x, state, params, reverse=False, mask=None):
        out, h, cache = forward(x, state[0], params, reverse=reverse, mask=mask, **kw)
        return out, (h,), cache

    def b(dout, dstate, cache):
        dx, dh, dparams = backward(dout, None if dstate is None else dstate[0], cache)
        return dx, (dh,), dparams

    return sf, sb, f, b


def _lstm_cell():
    def f(x, state, params, reverse=False, mask=None):
        return lstm.lstm_forward(x, state, params, reverse=reverse, mask=mask)

    return Cell("lstm", 4, 2, lstm.lstm_step_forward, lstm.lstm_step_backward, f, lstm.lstm_backward)


CELLS = {
    "rnn_tanh": Cell(
        "rnn_tanh", 1, 1,
        *_single_state(rnn.rnn_step_forward, rnn.rnn_step_backward, rnn.rnn_forward, rnn.rnn_backward,
                       nonlinearity="tanh"),
    ),
    "rnn_relu": Cell(
        "rnn_relu", 1, 1,
        *_single_state(rnn.rnn_step_forward, rnn.rnn_step_backward, rnn.rnn_forward, rnn.rnn_backward,
                       nonlinearity="relu"),
    ),
    "lstm": _lstm_cell(),
    "gru": Cell("gru", 3, 1, *_single_state(gru.gru_step_forward, gru.gru_step_backward, gru.gru_forward,
                                            gru.gru_backward)),
}


def get_cell(name: str) -> Cell:
    """The :class:`Cell` for ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"`` or ``"gru"``."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {name!r}") from None


def sequence_forward(cell, x, state, params, *, reverse=False, mask=None):
    """Fast path. Returns (out (T, B, H), final state tuple, cache)."""
    return get_cell(cell).forward(x, tuple(state), params, reverse=reverse, mask=mask)


def sequence_backward(cell, dout, dstate_n, cache):
    """Fast path BPTT. ``dout`` or any part of ``dstate_n`` may be None (zeros).

    Returns (dx, initial-state gradient tuple, dparams).
    """
    return get_cell(cell).backward(dout, _fill_none(dstate_n), cache)


def _fill_none(dstate):
    """None for no state gradient at all; else missing parts as zeros."""
    if dstate is None or all(d is None for d in dstate):
        return None
    ref = next(d for d in dstate if d is not None)
    xp = array_module(ref)
    return tuple(xp.zeros_like(ref) if d is None else d for d in dstate)


def reference_forward(cell, x, state, params, *, reverse=False, mask=None):
    """Reference: the step functions looped over time (no hoisting, no in-place tricks)."""
    c = get_cell(cell)
    xp = array_module(x)
    T = x.shape[0]
    state = tuple(state)
    outs = [None] * T
    caches = [None] * T
    for t in time_order(T, reverse):
        new_state, caches[t] = c.step_forward(x[t], state, params)
        if mask is None:
            state = new_state
            outs[t] = new_state[0]
        else:
            m = mask[t]
            state = tuple(xp.where(m, n, p) for n, p in zip(new_state, state))
            outs[t] = xp.where(m, new_state[0], 0)
    return xp.stack(outs), state, (caches, reverse, mask, x.shape)


def reference_backward(cell, dout, dstate_n, cache, on_step=None):
    """Reference BPTT: the step backward functions looped in reverse visiting order.

    ``on_step(t, dh_t, dparams_t)``, when given, sees each step's total gradient reaching h_t and
    that step's term of every parameter gradient (what the gradient-flow tools record).
    """
    c = get_cell(cell)
    caches, reverse, mask, shape = cache
    T, B, _ = shape
    x_0, h_prev_0 = caches[0][0], caches[0][1]  # every step cache starts (x_t, h_{t-1}, ...)
    xp = array_module(x_0)
    zeros = xp.zeros((B, h_prev_0.shape[1]), dtype=x_0.dtype)
    dstate = tuple(zeros if d is None else d for d in (dstate_n or (None,) * c.num_states))
    dxs = [None] * T
    dparams = None
    for t in reversed(time_order(T, reverse)):
        dh = dstate[0] if dout is None else dstate[0] + (dout[t] if mask is None else dout[t] * mask[t])
        d_in = (dh,) + dstate[1:]
        if mask is not None:
            d_in = tuple(d * mask[t] for d in d_in)
        dxs[t], d_prev, dp = c.step_backward(d_in, caches[t])
        if on_step is not None:
            on_step(t, dh, dp)
        if mask is not None:
            d_prev = tuple(dp_ + xp.where(mask[t], 0, d) for dp_, d in zip(d_prev, (dh,) + dstate[1:]))
        dstate = d_prev
        dparams = dp if dparams is None else {k: dparams[k] + v for k, v in dp.items()}
    return xp.stack(dxs), dstate, dparams
