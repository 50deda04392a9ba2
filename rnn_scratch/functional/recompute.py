r"""BPTT in bounded memory: keep the state every k steps, recompute each segment's activations in the backward.

Full BPTT keeps every step's activations: the LSTM's cache is about 7 (T, B, H) arrays (h, c, the four
gates, tanh c) and its backward adds 5 more, so memory grows as 12 T B H. Checkpointed BPTT splits the
T steps (in the order the direction visits them) into segments of k steps and keeps only the state at
the start of each segment (T/k states of (B, H) per state part). The backward visits the segments last
to first: it runs the cell's own fast forward on the segment again, from its checkpoint, and
back-propagates through that segment's cache at once, carrying dstate to the segment before.

    memory: T/k checkpoints + one segment's cache (~12 k B H)   -> smallest near k = sqrt(T)
    time:   one forward more than full BPTT

The arithmetic of every step is the same as the full path's; only the sums over steps of the weight
gradients are grouped by segment, so the gradients equal full BPTT's up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

from ..backend import array_module
from ._common import TimeSlots


def default_every(T: int) -> int:
    """The segment length that balances checkpoints against one segment's cache: about sqrt(T)."""
    return max(1, math.isqrt(max(T, 1)))


def segments(T: int, every: int, reverse: bool):
    """Slices of the time axis, in the order a direction visits them (each k steps, the last maybe fewer)."""
    starts = range(0, T, every)
    pieces = [slice(s, min(s + every, T)) for s in starts]
    return pieces[::-1] if reverse else pieces


@dataclass(frozen=True, eq=False)
class CheckpointedCache:
    """What the checkpointed backward needs: the cell, x (T, B, I), params, the mask, the direction, the
    checkpoints: (segment slice, state tuple at the segment's start), in visiting order; and the forward and
    backward that run a segment again and differentiate it."""

    cell: object
    x: object
    params: dict
    mask: object
    reverse: bool
    checkpoints: list
    forward: object = None
    backward: object = None

    @property
    def slots(self):
        return TimeSlots(self.x.shape[0], self.reverse)


def checkpointed_forward(cell, x, state, params, *, reverse=False, mask=None, every=None, forward, backward):
    """``forward`` segment by segment, keeping only each segment's starting state.

    ``cell``: a :class:`~rnn_scratch.functional.Cell`; ``every``: the segment length k (default
    :func:`default_every`); ``forward(cell, x, state, params, reverse=, mask=)`` and ``backward(cell, dout,
    dstate_n, cache[, on_step=])``: a full-BPTT pair (the fast path's, or the reference loop's).
    Returns (out (T, B, H), final state tuple, :class:`CheckpointedCache`).
    """
    xp = array_module(x)
    T, B, _ = x.shape
    every = default_every(T) if every is None else int(every)
    if every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {every!r}")
    state = tuple(state)
    out = xp.empty((T, B, state[0].shape[-1]), dtype=x.dtype)
    checkpoints = []
    for seg in segments(T, every, reverse):
        checkpoints.append((seg, state))
        out[seg], state = forward(cell, x[seg], state, params, reverse=reverse,
                                  mask=None if mask is None else mask[seg])[:2]  # the cache goes at once
        state = tuple(s.copy() for s in state)  # a view would keep the whole segment's state buffer alive
    return out, state, CheckpointedCache(cell, x, params, mask, reverse, checkpoints, forward, backward)


def checkpointed_backward(dout, dstate_n, cache: CheckpointedCache, on_step=None):
    """BPTT over the segments, last visited first, each recomputed from its checkpoint just before.

    ``on_step(t, dh_t, dparams_t)``: passed on to the backward (the reference loop's), with t counted over the
    whole sequence. Returns (dx (T, B, I), initial-state gradient tuple, dparams), as the full backward.
    """
    xp = array_module(cache.x)
    dx = xp.empty(cache.x.shape, dtype=cache.x.dtype)
    dstate, grads = dstate_n, None
    for seg, state in reversed(cache.checkpoints):
        mask = None if cache.mask is None else cache.mask[seg]
        _, _, seg_cache = cache.forward(cache.cell, cache.x[seg], state, cache.params, reverse=cache.reverse,
                                        mask=mask)
        seg_dout = None if dout is None else dout[seg]
        if on_step is None:
            dx[seg], dstate, g = cache.backward(cache.cell, seg_dout, dstate, seg_cache)
        else:
            shifted = partial(_shifted, on_step, seg.start)
            dx[seg], dstate, g = cache.backward(cache.cell, seg_dout, dstate, seg_cache, on_step=shifted)
        del seg_cache  # before the next segment's is made: one segment's activations at a time
        if grads is None:
            grads = g
        else:
            for name, value in g.items():
                grads[name] += value
    return dx, dstate, grads


def _shifted(on_step, start, t, *args):
    on_step(start + t, *args)
