r"""Layers x directions: the stacked, bidirectional recurrence, forward and backward, for any cell.

Layer l's input is x for l = 0, else the previous layer's output (both directions concatenated, times the
dropout mask of that layer input when given); direction d = 1 runs reversed. Per (layer, direction) one whole
sequence runs (:func:`~.driver.sequence_forward`: full or checkpointed BPTT, or whatever ``forward`` is given);
state part k of (layer l, direction d) sits at index l * D + d of the (L*D, B, H) state arrays, as torch's
``h_n``. The backward visits the layers top to bottom: each direction's dx is summed into the gradient of the
layer's input, which (times the dropout mask) is the dout of the layer below.

Used by the recurrent layers (fast path) and by the gradient-flow analysis (the readable step loop, whose
backward reports each step's terms through ``on_step``).
"""

from __future__ import annotations

from functools import partial

from ..backend import array_module
from .driver import sequence_backward, sequence_forward


def stack_forward(cell, x, states, params, *, mask=None, dropout_masks=None, forward=sequence_forward, **options):
    """x (T, B, I) time-major; states: a tuple of (L*D, B, H) arrays, one per state part; params[l][d]: the
    params dict of layer l, direction d; mask None or bool (T, B, 1); dropout_masks None or L-1 arrays
    (T, B, D*H) multiplying the inputs of layers 1..L-1. ``forward(cell, x, state, params, reverse=, mask=,
    **options)`` runs one direction (default :func:`sequence_forward`; options e.g. ``checkpoint_every``).

    Returns (out (T, B, D*H), final states: a tuple of (L*D, B, H) arrays, caches[l][d]); the output never
    shares memory with a cache.
    """
    xp = array_module(x)
    L, D = len(params), len(params[0])
    finals = [[None] * (L * D) for _ in states]
    caches = []
    layer_in = x
    for layer in range(L):
        if layer > 0 and dropout_masks is not None:
            layer_in = layer_in * dropout_masks[layer - 1]
        outs, layer_caches = [], []
        for d in range(D):
            state = tuple(s[layer * D + d] for s in states)
            out, final, cache = forward(cell, layer_in, state, params[layer][d], reverse=d == 1, mask=mask,
                                        **options)
            outs.append(out)
            layer_caches.append(cache)
            for k, f in enumerate(final):
                finals[k][layer * D + d] = f
        caches.append(layer_caches)
        if D == 2:
            layer_in = xp.concatenate(outs, axis=2)
        elif layer == L - 1 and outs[0].base is not None:  # the returned output must not view a cache
            layer_in = outs[0].copy()
        else:  # inner layers' outputs never leave
            layer_in = outs[0]
    return layer_in, tuple(xp.stack(f) for f in finals), caches


def stack_backward(cell, dout, dstates, caches, *, dropout_masks=None, on_step=None):
    """Backward of :func:`stack_forward`. dout (T, B, D*H) or None; dstates: a tuple of (L*D, B, H) arrays or
    None parts (zeros), or None; ``on_step(layer, direction, t, dh_t, dparams_t)``: each step's terms (caches of
    the reference loop only, see :func:`~.driver.sequence_backward`).

    Returns (dx (T, B, I), initial-state gradients: a tuple of (L*D, B, H) arrays, grads: {(layer, direction):
    dparams}).
    """
    L, D = len(caches), len(caches[0])
    dstates = (None,) * cell.num_states if dstates is None else tuple(dstates)
    d_init = [[None] * (L * D) for _ in dstates]
    grads = {}
    dcur = dout
    for layer in reversed(range(L)):
        dx_sum = None
        for d in range(D):
            idx = layer * D + d
            dout_d = None if dcur is None else dcur[:, :, d * dcur.shape[2] // D:(d + 1) * dcur.shape[2] // D]
            dstate_n = tuple(None if s is None else s[idx] for s in dstates)
            step = None if on_step is None else partial(on_step, layer, d)
            dx, d0, grads[(layer, d)] = sequence_backward(cell, dout_d, dstate_n, caches[layer][d], on_step=step)
            for k, g in enumerate(d0):
                d_init[k][idx] = g
            dx_sum = dx if dx_sum is None else dx_sum + dx
        if layer > 0 and dropout_masks is not None:
            dx_sum *= dropout_masks[layer - 1]
        dcur = dx_sum
    xp = array_module(dcur)
    return dcur, tuple(xp.stack(g) for g in d_init), grads
