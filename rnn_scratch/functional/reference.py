"""The reference: a cell's readable step functions looped over time, the specification the fast path is tested
against (no hoisting, no in-place tricks).

Conventions: ``x`` is time-major (T, B, I); ``state`` is a tuple, ``(h,)`` or ``(h, c)``, each part (B, H);
``mask`` is None or a boolean (T, B, 1) array, True at valid steps. At padded steps (mask False) the state is
carried through unchanged and the output is zero, so a sequence of length L ends in the state after its step
L-1, and a reverse direction starts at step L-1: the semantics of torch's packed sequences.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module
from ._common import TimeSlots
from .registry import get_cell


class ReferenceCache(NamedTuple):
    """The reference loop's cache: one step cache per step (time order), the slots, the mask, the
    (B, H) shape and dtype of a state, x (T, B, I), the state tuple before each step (time order), the params."""

    steps: list
    slots: TimeSlots
    mask: object
    state_shape: tuple
    dtype: object
    x: object = None
    before: list = None
    params: dict = None


def reference_forward(cell, x, state, params, *, reverse=False, mask=None):
    """Reference: the step functions looped over time.

    Returns (out (T, B, H), final state tuple, :class:`ReferenceCache`).
    """
    c = get_cell(cell)
    xp = array_module(x)
    slots = TimeSlots(x.shape[0], reverse)
    state = tuple(state)
    outs = [None] * slots.T
    steps, before = [None] * slots.T, [None] * slots.T
    for t in slots.order:
        before[t] = state
        new_state, steps[t] = c.step_forward(x[t], state, params)
        if mask is None:
            state = new_state
            outs[t] = new_state[0]
        else:
            m = mask[t]
            state = tuple(xp.where(m, n, p) for n, p in zip(new_state, state))
            outs[t] = xp.where(m, new_state[0], 0)
    return xp.stack(outs), state, ReferenceCache(steps, slots, mask, tuple(state[0].shape), x.dtype, x, before,
                                                        params)


def reference_backward(cell, dout, dstate_n, cache: ReferenceCache, on_step=None):
    """Reference BPTT: the step backward functions looped in reverse visiting order.

    ``on_step(t, dh_t, dparams_t)``, when given, sees each step's total gradient reaching h_t and
    that step's term of every parameter gradient (what the gradient-flow tools record).
    Returns (dx (T, B, I), initial-state gradient tuple, dparams).
    """
    c = get_cell(cell)
    mask = cache.mask
    xp = array_module(cache.x)
    zeros = xp.zeros(cache.state_shape, dtype=cache.dtype)
    dstate = tuple(zeros if d is None else d for d in (dstate_n or (None,) * c.num_states))
    dxs = [None] * cache.slots.T
    dparams = None
    for t in cache.slots.backward_order:
        dh = dstate[0] if dout is None else dstate[0] + (dout[t] if mask is None else dout[t] * mask[t])
        d_in = (dh,) + dstate[1:]
        if mask is not None:
            d_in = tuple(d * mask[t] for d in d_in)
        dxs[t], d_prev, dp = c.step_backward(d_in, cache.steps[t])
        if on_step is not None:
            on_step(t, dh, dp)
        if mask is not None:  # padded steps pass the gradient straight through to the step before
            d_prev = tuple(dp_ + xp.where(mask[t], 0, d) for dp_, d in zip(d_prev, (dh,) + dstate[1:]))
        dstate = d_prev
        dparams = dp if dparams is None else {k: dparams[k] + v for k, v in dp.items()}
    return xp.stack(dxs), dstate, dparams
