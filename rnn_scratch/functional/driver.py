r"""The time-loop driver: whole-sequence forward and backward (BPTT) for every cell, from its per-step math.

What every cell shares lives here; what a cell is lives in its module (its :class:`~.cell.FastPath`):

- setup: the (T+1, B, H) state buffers (one per state part), padded steps of x zeroed, the time slots;
- the input projection of all T steps as one GEMM, ``x @ W_ih^T + b`` (T*B, I) x (I, K*H), into ``gates``;
- per step one recurrent product, ``W_hh h_{t-1}`` (a GEMM in the faster orientation, or u * h_{t-1} for a
  vector weight), handed to the cell's ``forward_step`` with the step's views; padded steps (``mask``) carry
  the state through;
- batch rows are independent, so both time loops run on blocks of rows in threads (``_parallel``);
- backward: per step ``dL/dh_t`` gathers the output's gradient, the cell's ``backward_step`` writes dG (what
  reaches its gate pre-activations) and the direct part of ``dL/dstate_{t-1}``, one product adds
  ``dG_h W_hh``; after the loop dW_ih, dW_hh and the biases are single GEMMs over all steps, and dx one more;
- on CuPy with fused kernels on (``rnn_scratch.backend.set_fused``), per step one GEMM and one launch of the
  cell's CUDA kernel, optionally replayed as a CUDA graph.

Fused kernel convention (``kernels/<cell>.cu``; one thread per (row b, unit j), ``k >= B * H`` returns)::

    <cell>_forward_step(gates_t, a_hh, <consts>, <prev states>, <new states>, <forward buffers at t>,
                        valid, has_mask, <flags>, B, H)
    <cell>_backward_step(gates_t, <prev states at t>, <forward buffers at t>, <consts>,
                         dout_t, dh_carry, dh_gemm, <the other state gradients>, dgates_t[, dgates_h_t],
                         valid, has_mask, has_dout, <flags>, B, H)

In the backward kernel dL/dh_t = dh_carry + dh_gemm + dout_t; it writes dgates and leaves in dh_carry the direct
part of dL/dh_{t-1} (0 for most cells), and the driver's GEMM writes dh_gemm = dG_h W_hh for the step before.

:func:`sequence_forward` and :func:`sequence_backward` are the entry points: full BPTT (this module), checkpointed
(:mod:`.recompute`), or the cell's step loop (:mod:`.reference`) for a cell without a fast path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace

from .. import backend
from ..backend import array_module
from ._common import (
    SequenceCache,
    backward_setup,
    backward_time_chunks,
    forward_setup,
    rejoin_padded,
    span,
    split_padded,
)
from ._cuda import fused_loop, ints, run_time_loop
from ._gates import quiet_overflow
from ._gemm import input_gradient, input_projection, recurrent_weight, weight_gradients
from ._parallel import batch_blocks
from .cell import FastPath
from .recompute import CheckpointedCache, checkpointed_backward, checkpointed_forward
from .reference import ReferenceCache, reference_backward, reference_forward
from .registry import get_cell


@dataclass(frozen=True, eq=False)
class LoopCache(SequenceCache):
    """What the driver's backward needs: :class:`SequenceCache`'s fields, and the cell; states: per state part the
    (T+1, B, H) buffer (h first, placed by ``slots``); gates (T, B, K*H): what the cell's forward step left in
    the projection; bufs: the cell's per-step buffers (``FastPath.buffers``, in order)."""

    cell: object = None
    states: tuple = ()
    gates: object = None
    bufs: tuple = ()

    def buffer(self, name):
        """A per-step buffer of the cell's forward by name (T, B, width * H)."""
        return self.bufs[list(self.cell.fast.buffers).index(name)]

    def prev(self, k: int = 0):
        """State part k before each step, in time order (T, B, H)."""
        return self.states[k][self.slots.before]

    def after(self, k: int = 0):
        """State part k after each step, in time order (T, B, H)."""
        return self.states[k][self.slots.after]


def sequence_forward(cell, x, state, params, *, reverse=False, mask=None, checkpoint_every=None):
    """A whole sequence, fast path. x (T, B, I), state a tuple of (B, H) parts, mask None or bool (T, B, 1).

    ``checkpoint_every``: None for full BPTT (every step's activations cached), or k: keep the state every k
    steps and recompute in the backward (:mod:`~rnn_scratch.functional.recompute`). A cell without a fast path
    runs its step loop. Returns (out (T, B, H), final state tuple, cache).
    """
    c = get_cell(cell)
    state = tuple(state)
    if checkpoint_every is not None:
        return checkpointed_forward(c, x, state, params, reverse=reverse, mask=mask, every=checkpoint_every,
                                    forward=sequence_forward, backward=sequence_backward)
    fast = c.fast
    if fast is None:
        return reference_forward(c, x, state, params, reverse=reverse, mask=mask)
    xp, x, (T, B, _, H), slots, states = forward_setup(x, state, reverse, mask)
    p = fast.forward_weights(xp, params, H)
    bufs = tuple([xp.empty((T, B, width * H), dtype=x.dtype) for width in fast.buffers.values()])
    if fast.kernel is not None and backend.fused_enabled(xp):
        gates = input_projection(x, p.w_ih, p.bias)
        if type(fast).project is not FastPath.project:
            fast.project(xp, p, _arrays(c, slots, gates, states, bufs))
        _fused_forward(fast, p, slots, mask, gates, states, bufs)
    else:
        with batch_blocks(xp, B, p.w_ih.shape[0]) as blocks:  # batch-row blocks run in parallel (see _parallel)
            gates = input_projection(x, p.w_ih, p.bias, blocks)
            if type(fast).project is not FastPath.project:
                fast.project(xp, p, _arrays(c, slots, gates, states, bufs))
            blocks.map(partial(_forward_rows, xp, c, p, slots, mask, gates, states, bufs))
    h_after = states[0][slots.after]
    out = h_after if mask is None else xp.where(mask, h_after, 0)  # padded steps: output 0
    cache = LoopCache(x=x, h=states[0], params=params, slots=slots, mask=mask, cell=c, states=states, gates=gates,
                      bufs=bufs)
    final = slots.final
    return out, tuple([s[final] for s in states]), cache


def _arrays(cell, slots, gates, states, bufs, rows=slice(None), **more):
    """What a cell's fast path reads and writes, for the batch rows ``rows``, by name (see FastPath): gates; per
    state part s, ``s_prev`` and ``s_new`` (T, b, H), the state before and after each step in time order (views of
    its buffer); the forward buffers by name; and ``more``."""
    before, after = slots.before, slots.after
    arrays = {"gates": gates[:, rows]}
    for name, s in zip(cell.state_names, states):
        arrays[name + "_prev"], arrays[name + "_new"] = s[before, rows], s[after, rows]
    for name, buf in zip(cell.fast.buffers, bufs):
        arrays[name] = buf[:, rows]
    return SimpleNamespace(**arrays, **more)


def _forward_rows(xp, cell, p, slots, mask, gates, states, bufs, rows):
    """The time loop for the batch rows ``rows`` (rows evolve independently), in place."""
    a = _arrays(cell, slots, gates, states, bufs, rows)
    h_prev = a.h_prev
    skip = None if mask is None else ~mask[:, rows]
    pairs = None if mask is None else [(s[slots.before, rows], s[slots.after, rows]) for s in states]
    w = recurrent_weight(xp, p.w_hh, a.gates.shape[1])
    scratch = w.scratch(a.gates.shape[1])
    step = cell.fast.forward_step
    with quiet_overflow(xp):
        for t in slots.order:
            step(xp, p, a, t, w.h_wt(h_prev[t], scratch))
            if skip is not None:  # padded steps carry the state through unchanged
                for prev, new in pairs:
                    xp.copyto(new[t], prev[t], where=skip[t])


def sequence_backward(cell, dout, dstate_n, cache, on_step=None):
    """BPTT for the ``cache`` of :func:`sequence_forward` (full or checkpointed) or of the reference loop.
    ``dout`` (T, B, H) or any part of ``dstate_n`` may be None (zeros).

    ``on_step(t, dh_t, dparams_t)``: each step's terms, for a cache of the reference loop (checkpointed or not).
    Returns (dx (T, B, I), initial-state gradient tuple, dparams).
    """
    dstate_n = _fill_none(dstate_n)
    if isinstance(cache, CheckpointedCache):
        return checkpointed_backward(dout, dstate_n, cache, on_step=on_step)
    if isinstance(cache, ReferenceCache):
        return reference_backward(cell, dout, dstate_n, cache, on_step=on_step)
    if on_step is not None:
        raise ValueError("on_step (each step's terms) needs a cache of the step loop (reference_forward)")
    c = get_cell(cell)
    fast = c.fast
    xp, (T, B, _, H), dout, dstate = backward_setup(cache, dout, dstate_n, c.num_states)
    p = fast.backward_weights(xp, cache.params, H)
    dgates = xp.empty(cache.gates.shape, dtype=cache.x.dtype)
    dgates_h = xp.empty((T, B, p.w_hh.shape[0]), dtype=cache.x.dtype) if fast.separate_recurrent_grad else dgates
    bbufs = tuple([xp.empty((T, B, width * H), dtype=cache.x.dtype) for width in fast.backward_buffers.values()])
    run = _Later(partial(_backward_arrays, c, cache, dgates, dgates_h, bbufs, dstate))  # all rows, when read
    blocks = None
    if fast.kernel is not None and backend.fused_enabled(xp):
        _fused_backward(fast, p, cache, dout, dstate, dgates, dgates_h)
    else:
        blocks = batch_blocks(xp, B, dgates.shape[2])
    with blocks or contextlib.nullcontext() as row_blocks:
        if row_blocks is not None:
            row_blocks.map(partial(_backward_rows, xp, c, p, cache, dout, dstate, dgates, dgates_h, bbufs))
        dgates_x = dgates if type(fast).input_side is FastPath.input_side else fast.input_side(xp, p, run)
        grads = weight_gradients(dgates_x, cache.x, cache.h_prev, None if dgates_h is dgates else dgates_h,
                                 p.bias is not None, row_blocks, elementwise=p.w_hh.ndim == 1)
        dx = input_gradient(dgates_x, p.w_ih, row_blocks)
    return dx, dstate, fast.param_grads(xp, p, grads, run)


def _backward_arrays(cell, cache, dgates, dgates_h, bbufs, dstate, rows=slice(None)):
    """:func:`_arrays` of the forward's cache, and dgates, dgates_h, the backward buffers by name, and per state
    part s the (b, H) gradient ``ds`` reaching it (a view of the accumulator)."""
    more = {"dgates": dgates[:, rows], "dgates_h": dgates_h[:, rows], "cache": cache}
    for name, buf in zip(cell.fast.backward_buffers, bbufs):
        more[name] = buf[:, rows]
    for name, d in zip(cell.state_names, dstate):
        more["d" + name] = d[rows]
    return _arrays(cell, cache.slots, cache.gates, cache.states, cache.bufs, rows, **more)


class _Later:
    """The arrays of :func:`_backward_arrays` for all rows, made when first read (most cells never read them)."""

    def __init__(self, make):
        self._make = make

    def __getattr__(self, name):
        made = self.__dict__.get("_made")
        if made is None:
            made = self.__dict__["_made"] = self._make()
        return getattr(made, name)


def _backward_rows(xp, cell, p, cache, dout, dstate, dgates, dgates_h, bbufs, rows):
    """BPTT for the batch rows ``rows``: dG into dgates[:, rows] (and dgates_h); the state gradients end as
    dL/dstate_0 there."""
    fast, slots = cell.fast, cache.slots
    a = _backward_arrays(cell, cache, dgates, dgates_h, bbufs, dstate, rows)
    d = tuple([part[rows] for part in dstate])
    dh, dgh = d[0], a.dgates_h
    n, H = dh.shape
    for name, width in fast.scratch.items():
        setattr(a, name, xp.empty((n, width * H), dtype=dh.dtype))
    dout = None if dout is None else dout[:, rows]
    valid = None if cache.mask is None else cache.mask[:, rows]
    carried = None if valid is None else tuple(xp.empty_like(part) for part in d)
    w = recurrent_weight(xp, p.w_hh, n)
    scratch = w.scratch(n, backward=True)
    dh_hh = xp.empty_like(dh) if fast.carries_h else None
    if fast.factors is None:
        runs = (slots.backward_order,)
    else:  # the cell precomputes per-step factors for a cache-sized run of steps at a time
        runs = backward_time_chunks(slots, n * (a.gates.shape[2] + H * sum(fast.backward_buffers.values())))
    step = fast.backward_step
    for steps in runs:
        if fast.factors is not None:
            fast.factors(xp, p, a, span(steps))
        for t in steps:
            if dout is not None:
                dh += dout[t]
            if valid is not None:  # padded steps: gradients pass straight through to step t-1
                for part, kept in zip(d, carried):
                    split_padded(xp, part, valid[t], kept)
            step(xp, p, a, t)
            if dh_hh is None:
                w.product(dh, dgh[t], scratch)  # dh_{t-1} = dG_h W_hh
            else:
                w.product(dh_hh, dgh[t], scratch)  # dh_{t-1} = (direct part) + dG_h W_hh
                dh += dh_hh
            if valid is not None:
                for part, kept in zip(d, carried):
                    rejoin_padded(part, kept)


def _fill_none(dstate):
    """None for no state gradient at all; else missing parts as zeros."""
    if dstate is None:
        return None
    if not any(d is None for d in dstate):
        return dstate
    if all(d is None for d in dstate):
        return None
    ref = next(d for d in dstate if d is not None)
    xp = array_module(ref)
    return tuple(xp.zeros_like(ref) if d is None else d for d in dstate)


# -- the fused CUDA time loops (kernel convention: module docstring) ------------------------------------------
def _fused_forward(fast, p, slots, mask, gates, states, bufs):
    """Per step one GEMM and one launch of the cell's forward kernel, on the whole batch."""
    xp = array_module(gates)
    T, B, _ = gates.shape
    H = states[0].shape[2]
    loop = fused_loop(xp, fast.kernel.source, fast.kernel.forward, p.w_hh, mask, T, B, gates.dtype)
    flags = ints(*p.flags, B, H)

    def issue():
        for t in slots.order:
            before, after = slots.slot_before(t), slots.slot_after(t)
            a_hh = loop.w.h_wt(states[0][before], loop.scratch)  # W_hh h_{t-1}
            backend.launch(loop.step, B * H, (gates[t], a_hh, *p.consts, *(s[before] for s in states),
                                              *(s[after] for s in states), *(b[t] for b in bufs), loop.valid[t],
                                              loop.has_mask, *flags))

    return run_time_loop(fast.kernel.forward, (gates, *states, *bufs, *p.consts, loop.scratch, loop.w.w_t), issue)


def _fused_backward(fast, p, cache, dout, dstate, dgates, dgates_h):
    """Per step one launch of the cell's backward kernel and one GEMM; dstate ends as dL/dstate_0."""
    xp = array_module(dgates)
    T, B, H = cache.x.shape[0], cache.x.shape[1], dstate[0].shape[1]
    dh = dstate[0]
    loop = fused_loop(xp, fast.kernel.source, fast.kernel.backward, p.w_hh, cache.mask, T, B, dh.dtype, dh, dout)
    prevs = tuple(cache.prev(k) for k in range(len(cache.states)))
    separate = () if dgates_h is dgates else (dgates_h,)
    flags = ints(*p.flags, B, H)

    def issue():
        for t in cache.slots.backward_order:
            backend.launch(loop.step, B * H, (cache.gates[t], *(s[t] for s in prevs), *(b[t] for b in cache.bufs),
                                              *p.consts, loop.douts[t], dh, loop.dh_gemm, *dstate[1:], dgates[t],
                                              *(g[t] for g in separate), loop.valid[t], loop.has_mask,
                                              loop.has_dout, *flags))
            loop.w.product(loop.dh_gemm, dgates_h[t], loop.scratch)  # dG_h W_hh, for the step before

    run_time_loop(fast.kernel.backward, (cache.gates, *cache.bufs, dgates, *separate, *dstate, loop.dh_gemm,
                                         loop.w.w, *p.consts), issue)
    xp.add(dh, loop.dh_gemm, out=dh)  # dL/dh_0
