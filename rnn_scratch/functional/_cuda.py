"""What the driver's fused CUDA time loops share: per step one GEMM and one fused kernel, optionally a CUDA graph.

Each cell writes its step kernels as CUDA C (``real`` for the element type) in ``kernels/<cell>.cu`` beside its
module, with the same names as its NumPy step; :mod:`rnn_scratch.backend` compiles them (memoised) and
captures graphs. The fused path is off by default until a device run has verified it
(``rnn_scratch.backend.set_fused(True)`` or ``RNN_SCRATCH_FUSED=1``; graphs: ``set_cuda_graphs`` or
``RNN_SCRATCH_CUDA_GRAPHS=1``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from ._gemm import recurrent_weight

GRAPHS = backend.CudaGraphs()


def step_flags(xp, mask, T, B):
    """Per step: the (B,) bool array of valid rows (a dummy without a mask), and the int flag has_mask."""
    if mask is None:
        dummy = xp.ones(1, dtype=bool)
        return [dummy] * T, np.int32(0)
    return [mask[t] for t in range(T)], np.int32(1)


def step_input(xp, array, T, B, H, dtype):
    """Per step: the (B, H) slice of ``array`` (T, B, H), or a dummy; and the int flag has_<it>.

    A kernel reads a raw pointer as a dense (B, H) buffer, so a strided view (one direction's half of a
    bidirectional layer's dout, a transposed array) is copied to a C-contiguous array first."""
    if array is None:
        dummy = xp.zeros(1, dtype=dtype)
        return [dummy] * T, np.int32(0)
    array = xp.ascontiguousarray(array)
    return [array[t] for t in range(T)], np.int32(1)


def run_time_loop(name, buffers, issue):
    """Issue a fused time loop: replayed as a captured CUDA graph when graphs are on (keyed by the loop's name
    and the shapes and addresses of the buffers it touches), else launch by launch. Returns what ran."""
    if not backend.cuda_graphs_enabled():
        issue()
        return "plain"
    key = (name, *((b.shape, b.dtype.str, b.data.ptr) for b in buffers))
    GRAPHS.run(key, issue)
    return GRAPHS.last


def ints(*values):
    return tuple(np.int32(v) for v in values)


class FusedLoop(NamedTuple):
    """What a fused time loop launches with: the compiled step kernel, the recurrent weight and its per-step
    scratch, the per-step valid-row flags; for a backward also dh_gemm (the gradient each step's GEMM hands to
    the next kernel, zeros at first) and the per-step dout slices."""

    step: object
    w: object
    scratch: object
    valid: list
    has_mask: object
    dh_gemm: object = None
    douts: list | None = None
    has_dout: object = None


def fused_loop(xp, source, name, w, mask, T, B, dtype, dh=None, dout=None):
    """The prologue of a fused time loop (forward, or backward when ``dh`` is given). ``w``: W (G, H) or u (H,)."""
    weight = recurrent_weight(xp, w, B)
    valid, has_mask = step_flags(xp, mask, T, B)
    if dh is None:
        return FusedLoop(backend.cuda_kernel(source, name, dtype), weight, weight.scratch(B), valid, has_mask)
    H = dh.shape[1]
    douts, has_dout = step_input(xp, dout, T, B, H, dtype)
    return FusedLoop(backend.cuda_kernel(source, name, dtype), weight, weight.scratch(B, backward=True), valid,
                     has_mask, xp.zeros_like(dh), douts, has_dout)
