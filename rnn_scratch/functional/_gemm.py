"""The GEMMs hoisted out of the time loop: the input projection of all steps, and after BPTT the weight
gradients and the input gradient, each one large GEMM shared over the threads of a :class:`RowBlocks`."""

from __future__ import annotations

import numpy as np

from ..backend import array_module
from ._parallel import RowBlocks, one_block


def input_projection(x, weight_ih, bias=None, blocks: RowBlocks | None = None):
    """``x @ W_ih.T + bias`` for all T steps at once: one (T*B, I) x (I, G*H) GEMM, shared over ``blocks``.

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

    (blocks or one_block(B)).map_split(project, T * B)
    return gates.reshape(T, B, -1)


def weight_gradients(dgates, x, h_prev, dgates_hh=None, has_bias=True, blocks: RowBlocks | None = None,
                     elementwise=False):
    """The parameter gradients of one direction as single GEMMs over all steps.

    dW_ih = sum_t dgates_t^T x_t,  dW_hh = sum_t dgates_hh_t^T h_{t-1},
    db_ih = sum_t dgates_t,        db_hh = sum_t dgates_hh_t.
    dgates (T, B, K*H), x (T, B, I), h_prev (T, B, H): the state before each step, in time order.
    ``dgates_hh`` (T, B, G*H): what reaches the recurrent product where it differs from ``dgates`` (the GRU's
    n gate); None means the same. ``elementwise``: the recurrent weight is a vector u (H,) acting as u * h_{t-1},
    so du = sum over steps and rows of dgates_hh * h_{t-1}.
    With several ``blocks`` each thread takes a contiguous share of the (step, row) pairs and the
    partial sums are added (contiguous operands; measured faster than sharing out gate rows).
    """
    same = dgates_hh is None
    T, B, K = dgates.shape
    dg = dgates.reshape(T * B, K)
    dgh = dg if same else dgates_hh.reshape(T * B, -1)
    xs, hs = x.reshape(T * B, -1), h_prev.reshape(T * B, -1)

    def share(r):
        w_hh = (dgh[r] * hs[r]).sum(axis=0) if elementwise else dgh[r].T @ hs[r]
        grads = {"weight_ih": dg[r].T @ xs[r], "weight_hh": w_hh}
        if has_bias:
            grads["bias_ih"] = dg[r].sum(axis=0)
            grads["bias_hh"] = grads["bias_ih"].copy() if same else dgh[r].sum(axis=0)
        return grads

    grads, *partial = (blocks or one_block(B)).map_split(share, T * B)
    for more in partial:
        for name in grads:
            grads[name] += more[name]
    return grads


def input_gradient(dgates, weight_ih, blocks: RowBlocks | None = None):
    """dx_t = dgates_t @ W_ih for all steps: one (T*B, K*H) x (K*H, I) GEMM, shared over ``blocks``."""
    xp = array_module(dgates)
    T, B, G = dgates.shape
    dg = dgates.reshape(T * B, G)
    dx = xp.empty((T * B, weight_ih.shape[1]), dtype=dgates.dtype)
    (blocks or one_block(B)).map_split(lambda r: xp.matmul(dg[r], weight_ih, out=dx[r]), T * B)
    return dx.reshape(T, B, -1)


FORCE_ORIENTATION = None  # tests: True (always feature-major), False (never), None (by the measured rule)


def feature_major(xp, batch: int, gates: int) -> bool:
    """Whether the per-step recurrent GEMM runs faster as ``W (G, H) @ h^T (H, B)`` (then read transposed) than
    as ``h (B, H) @ W^T (H, G)``: OpenBLAS prefers the large dimension first. Measured on the 2-core machine,
    float32, forward and backward products: B=32, G=1024: 1.43x and 1.57x faster; B=64, G=2048: 1.32x and 1.31x;
    B=128, G=4096: 1.09x and 1.19x; but B=1000, G=200: 0.68x and 0.80x (slower), B=1, G=200: 0.88x."""
    if FORCE_ORIENTATION is not None:
        return FORCE_ORIENTATION
    return xp is np and 8 <= batch <= gates // 4


def recurrent_weight(xp, w, batch: int):
    """The per-step recurrent product of a weight: :class:`RecurrentWeight` for a matrix W (G, H),
    :class:`ElementwiseWeight` for a vector u (H,)."""
    return ElementwiseWeight(xp, w) if w.ndim == 1 else RecurrentWeight(xp, w, batch)


class RecurrentWeight:
    """A recurrent weight W (G, H) and its per-step products, in the faster orientation for ``batch`` rows.

    ``h_wt(h, scratch)``: h W^T (B, G), a view of ``scratch``;  ``product(out, d, scratch)``: out (B, H) = d W
    for d (B, G). ``scratch(rows)`` makes the buffer a block of ``rows`` batch rows needs.
    """

    def __init__(self, xp, w, batch: int):
        self.xp = xp
        self.gates, self.hidden = w.shape
        self.fm = feature_major(xp, batch, self.gates)
        self.batch = batch
        self.w = xp.ascontiguousarray(w)  # W (G, H): h^T's left factor, and d's right factor
        self.w_t = None if self.fm else self.w.T.copy()  # W^T (H, G) for h @ W^T
        self.wt_left = self.w.T.copy() if self.fm else None  # W^T (H, G) as the left factor of W^T d^T

    def scratch(self, rows: int, backward=False):
        width = self.hidden if backward else self.gates
        shape = (width, rows) if self.fm else (rows, width)
        return self.xp.empty(shape, dtype=self.w.dtype)

    def h_wt(self, h, scratch):
        """h W^T (B, G) for h (B, H): a view of ``scratch`` (from :meth:`scratch`), transposed when feature-major."""
        if self.fm:
            return self.xp.matmul(self.w, h.T, out=scratch).T  # (G, B), read as (B, G)
        return self.xp.matmul(h, self.w_t, out=scratch)

    def product(self, out, d, scratch):
        """out = d W: the gradient that reaches h_{t-1}; ``scratch`` from :meth:`scratch` (backward=True)."""
        if self.fm:
            self.xp.matmul(self.wt_left, d.T, out=scratch)  # (H, B)
            self.xp.copyto(out, scratch.T)
        else:
            self.xp.matmul(d, self.w, out=out)


class ElementwiseWeight:
    """A recurrent weight that is a vector u (H,) acting elementwise, ``u * h_{t-1}`` (IndRNN): the same
    interface as :class:`RecurrentWeight`, no GEMM. ``h_wt(h, scratch)`` = h * u; ``product(out, d, scratch)``:
    out = d * u."""

    def __init__(self, xp, w):
        self.xp = xp
        self.w = self.w_t = xp.ascontiguousarray(w)

    def scratch(self, rows: int, backward=False):
        return self.xp.empty((rows, self.w.shape[0]), dtype=self.w.dtype)

    def h_wt(self, h, scratch):
        return self.xp.multiply(h, self.w, out=scratch)

    def product(self, out, d, scratch):
        self.xp.multiply(d, self.w, out=out)
