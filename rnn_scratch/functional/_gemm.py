"""The GEMMs hoisted out of the time loop: the input projection of all steps, and after BPTT the weight
gradients and the input gradient, each one large GEMM shared over the threads of a :class:`RowBlocks`."""

from __future__ import annotations

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


def weight_gradients(dgates, x, h_prev, dgates_hh=None, has_bias=True, blocks: RowBlocks | None = None):
    """The parameter gradients of one direction as single GEMMs over all steps.

    dW_ih = sum_t dgates_t^T x_t,  dW_hh = sum_t dgates_hh_t^T h_{t-1},
    db_ih = sum_t dgates_t,        db_hh = sum_t dgates_hh_t.
    dgates (T, B, G*H), x (T, B, I), h_prev (T, B, H): the state before each step, in time order.
    ``dgates_hh`` differs from ``dgates`` only for the GRU (its n gate); None means the same.
    With several ``blocks`` each thread takes a contiguous share of the (step, row) pairs and the
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

    grads, *partial = (blocks or one_block(B)).map_split(share, T * B)
    for more in partial:
        for name in grads:
            grads[name] += more[name]
    return grads


def input_gradient(dgates, weight_ih, blocks: RowBlocks | None = None):
    """dx_t = dgates_t @ W_ih for all steps: one (T*B, G*H) x (G*H, I) GEMM, shared over ``blocks``."""
    xp = array_module(dgates)
    T, B, G = dgates.shape
    dg = dgates.reshape(T * B, G)
    dx = xp.empty((T * B, weight_ih.shape[1]), dtype=dgates.dtype)
    (blocks or one_block(B)).map_split(lambda r: xp.matmul(dg[r], weight_ih, out=dx[r]), T * B)
    return dx.reshape(T, B, -1)
