"""The cell registry, and whole-sequence forward/backward for every cell on top of the per-step functions.

Two implementations of the same mathematics:

- :func:`sequence_forward` / :func:`sequence_backward` call each cell's fast path
  (input projection of all steps hoisted into one GEMM, one GEMM per step, in-place gate math,
  the weight gradients as single GEMMs after the time loop);
- :func:`reference_forward` / :func:`reference_backward` just loop the readable
  ``*_step_forward`` / ``*_step_backward`` functions over time. They are the specification
  the fast path is tested against.

Conventions: ``x`` is time-major (T, B, I); ``state`` is a tuple, ``(h,)`` for RNN/GRU and
``(h, c)`` for LSTM, each part (B, H); ``mask`` is None or a boolean (T, B, 1) array, True at
valid steps. At padded steps (mask False) the state is carried through unchanged and the output
is zero, so a sequence of length L ends in the state after its step L-1, and a reverse direction
starts at step L-1: the semantics of torch's packed sequences.

Cell names are torch's ``mode`` names in lower case, ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"``,
``"gru"``, and one alias: ``"rnn"`` for ``"rnn_tanh"``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module
from ._common import Cell, TimeSlots
from .gru import GRU_CELL
from .lstm import LSTM_CELL
from .recompute import CheckpointedCache, checkpointed_backward, checkpointed_forward
from .rnn import RNN_RELU_CELL, RNN_TANH_CELL

CELLS = {cell.name: cell for cell in (RNN_TANH_CELL, RNN_RELU_CELL, LSTM_CELL, GRU_CELL)}
ALIASES = {"rnn": "rnn_tanh"}
CELL_NAMES = tuple(CELLS)  # the canonical names
CELL_CHOICES = CELL_NAMES + tuple(ALIASES)  # what a command line or a model accepts


def canonical_cell_name(name: str) -> str:
    """The canonical name for a cell name or alias; ValueError naming the choices otherwise."""
    if isinstance(name, str):
        name = ALIASES.get(name.lower(), name.lower())
        if name in CELLS:
            return name
    raise ValueError(f"cell must be one of {list(CELL_CHOICES)}, got {name!r}")


def get_cell(name: str) -> Cell:
    """The :class:`Cell` for a cell name or alias."""
    return CELLS[canonical_cell_name(name)]


def sequence_forward(cell, x, state, params, *, reverse=False, mask=None, checkpoint_every=None):
    """Fast path. Returns (out (T, B, H), final state tuple, cache).

    ``checkpoint_every``: None for full BPTT (every step's activations cached), or k: keep the state
    every k steps and recompute in the backward (:mod:`~rnn_scratch.functional.recompute`).
    """
    c = get_cell(cell)
    if checkpoint_every is not None:
        return checkpointed_forward(c, x, tuple(state), params, reverse=reverse, mask=mask, every=checkpoint_every)
    return c.forward(x, tuple(state), params, reverse=reverse, mask=mask)


def sequence_backward(cell, dout, dstate_n, cache):
    """Fast path BPTT, full or checkpointed (whichever forward made ``cache``). ``dout`` or any part of
    ``dstate_n`` may be None (zeros).

    Returns (dx, initial-state gradient tuple, dparams).
    """
    if isinstance(cache, CheckpointedCache):
        return checkpointed_backward(dout, _fill_none(dstate_n), cache)
    return get_cell(cell).backward(dout, _fill_none(dstate_n), cache)


def _fill_none(dstate):
    """None for no state gradient at all; else missing parts as zeros."""
    if dstate is None or all(d is None for d in dstate):
        return None
    ref = next(d for d in dstate if d is not None)
    xp = array_module(ref)
    return tuple(xp.zeros_like(ref) if d is None else d for d in dstate)


class ReferenceCache(NamedTuple):
    """The reference loop's cache: one step cache per step (time order), the slots, the mask, and the
    (B, H) shape and dtype of a state."""

    steps: list
    slots: TimeSlots
    mask: object
    state_shape: tuple
    dtype: object


def reference_forward(cell, x, state, params, *, reverse=False, mask=None):
    """Reference: the step functions looped over time (no hoisting, no in-place tricks).

    Returns (out (T, B, H), final state tuple, :class:`ReferenceCache`).
    """
    c = get_cell(cell)
    xp = array_module(x)
    slots = TimeSlots(x.shape[0], reverse)
    state = tuple(state)
    outs = [None] * slots.T
    steps = [None] * slots.T
    for t in slots.order:
        new_state, steps[t] = c.step_forward(x[t], state, params)
        if mask is None:
            state = new_state
            outs[t] = new_state[0]
        else:
            m = mask[t]
            state = tuple(xp.where(m, n, p) for n, p in zip(new_state, state))
            outs[t] = xp.where(m, new_state[0], 0)
    return xp.stack(outs), state, ReferenceCache(steps, slots, mask, tuple(state[0].shape), x.dtype)


def reference_backward(cell, dout, dstate_n, cache: ReferenceCache, on_step=None):
    """Reference BPTT: the step backward functions looped in reverse visiting order.

    ``on_step(t, dh_t, dparams_t)``, when given, sees each step's total gradient reaching h_t and
    that step's term of every parameter gradient (what the gradient-flow tools record).
    Returns (dx (T, B, I), initial-state gradient tuple, dparams).
    """
    c = get_cell(cell)
    mask = cache.mask
    xp = array_module(cache.steps[0].x)
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
