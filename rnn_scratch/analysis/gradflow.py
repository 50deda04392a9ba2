r"""How gradients travel back through time, measured with the hand-written step backward functions.

BPTT for a recurrent weight W is a sum over steps (the seed's equations)::

    dL/dW = sum_t  dL/da_t  (da_t/dW)|_t           (the "contribution of step t")

and the gradient reaching an earlier state is a product of step Jacobians::

    dL/dh_t = dL/dout_t + (dh_{t+1}/dh_t)^T dL/dh_{t+1}
    dh_T/dh_t = J_T J_{T-1} ... J_{t+1},   J_s = dh_s/dh_{s-1}  (for the LSTM: the (h, c) state)

For a vanilla tanh RNN, J_s = diag(1 - h_s^2) W_hh, so ||J_s|| <= ||W_hh||: with ||W_hh|| < 1 the
gradient from a loss at the last step shrinks at least geometrically with the distance (vanishing);
with spectral radius above 1 it can grow (exploding). The LSTM's additive cell path
(dc_{t-1} = f * dc_t) and the GRU's interpolation (dh_{t-1} gets z * dh_t) can carry it much further.

Everything here uses the readable ``*_step_backward`` functions, one step at a time, so each
quantity is exactly what the backward pass computes; nothing uses autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..backend import to_numpy
from ..functional import (
    checkpointed_forward,
    default_every,
    param_name,
    reference_backward,
    reference_forward,
    stack_backward,
    stack_forward,
)
from ..memory import bptt_bytes, check_available


@dataclass
class GradientTrace:
    """Per (layer, direction): ||dL/dh_t|| for every t (time order), and every step's share of each gradient."""

    hidden_grad_norms: dict = field(default_factory=dict)  # (layer, dir) -> (T,) array
    contributions: dict = field(default_factory=dict)  # (layer, dir) -> {param kind: (T, *shape) array}
    grads: dict = field(default_factory=dict)  # parameter name -> full gradient (sum of contributions)
    dx: np.ndarray | None = None


def _time_major(layer, x):
    return np.ascontiguousarray(np.swapaxes(x, 0, 1)) if layer.batch_first else x


def trace_gradients(layer, x, state=None, dout=None, dstate_n=None, *, contributions=True,
                    checkpoint_every=None) -> GradientTrace:
    """Run ``layer`` (no lengths, no dropout) forward, then BPTT step by step, recording the flow.

    dout: gradient on the outputs (layer layout) or None; dstate_n: gradient on h_n (or (h_n, c_n)) or None.
    ``contributions=False`` records only the gradient norms (each step's share of every weight gradient
    costs T times the weights' memory). ``checkpoint_every``: keep the step caches of one segment of this
    many steps at a time and recompute the others (checkpointed BPTT; default: all steps up to T = 1000,
    about sqrt(T) steps beyond), so T can run into the tens of thousands.
    The layers x directions loop is the layers' own (:func:`~rnn_scratch.functional.stack_forward`), run on the
    readable step functions. Returns a :class:`GradientTrace`; ``trace.grads`` equals what ``layer.backward``
    accumulates.
    """
    cell = layer.cell
    T, B = (x.shape[1], x.shape[0]) if layer.batch_first else x.shape[:2]
    every = checkpoint_every or (T if T <= 1000 else default_every(T))
    # before anything is allocated: about twice the fast path's memory (the step functions keep more per
    # step), and each step's share of every weight gradient when asked for
    need = 2 * bptt_bytes(cell, T, B, layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                          num_directions=layer.num_directions, bias=layer.bias, dtype=x.dtype, memory="checkpoint",
                          checkpoint_every=every, batch_first=layer.batch_first)
    need += 8 * T * layer.num_parameters() if contributions else 0
    check_available(need, f"trace_gradients over {T} steps, batch {B}")
    xt = _time_major(layer, to_numpy(x))
    D, L = layer.num_directions, layer.num_layers
    states = layer.to_states(state) or (None,) * cell.num_states
    states = tuple(np.zeros((L * D, B, layer.hidden_size), dtype=xt.dtype) if s is None else to_numpy(s)
                   for s in states)
    params = [[{k: None if v is None else to_numpy(v) for k, v in layer.cell_params(l, d).items()}
               for d in range(D)] for l in range(L)]
    step_loop = partial(checkpointed_forward, every=every, forward=reference_forward, backward=reference_backward)
    out, _, caches = stack_forward(cell, xt, states, params, forward=step_loop)
    dcur = np.zeros_like(out) if dout is None else _time_major(layer, to_numpy(dout))
    dfinal = tuple(None if p is None else to_numpy(p)
                   for p in (layer.to_states(dstate_n, gradient=True) or (None,) * cell.num_states))
    trace = GradientTrace(hidden_grad_norms={(l, d): np.zeros(T) for l in range(L) for d in range(D)})

    def record(l, d, t, dh, dparams):
        trace.hidden_grad_norms[(l, d)][t] = np.linalg.norm(dh)
        if contributions:
            terms = trace.contributions.setdefault((l, d), {})
            for k, v in dparams.items():
                terms.setdefault(k, np.zeros((T, *v.shape)))[t] = v

    dx, _, grads = stack_backward(cell, dcur, dfinal, caches, on_step=record)
    trace.grads = {param_name(k, l, d == 1): v for (l, d), g in grads.items() for k, v in g.items()}
    trace.dx = np.ascontiguousarray(np.swapaxes(dx, 0, 1)) if layer.batch_first else dx
    return trace


def step_jacobians(layer, x, state=None, batch_index=0):
    """Exact Jacobians J_t = ds_t/ds_{t-1} of a single-layer, unidirectional layer's state for one batch element.

    s is h (RNN, GRU) or the concatenation (h, c) (LSTM). Each J_t is built from the step backward
    function: one backward call per basis vector e_k gives the row e_k^T J_t. Returns (T, S, S).
    """
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError("step_jacobians takes a single-layer, unidirectional layer")
    cell = layer.cell
    xt = _time_major(layer, to_numpy(x))[:, batch_index:batch_index + 1]
    T = xt.shape[0]
    H = layer.hidden_size
    n = cell.num_states
    states = layer.to_states(state) or (None,) * n
    st = tuple(np.zeros((1, H), dtype=xt.dtype) if s is None else to_numpy(s)[0, batch_index:batch_index + 1]
               for s in states)
    params = {k: None if v is None else to_numpy(v) for k, v in layer.cell_params(0, 0).items()}
    caches = reference_forward(cell.name, xt, st, params)[2].steps
    S = n * H
    jac = np.zeros((T, S, S))
    for t in range(T):
        for k in range(S):
            seed = np.zeros(S)
            seed[k] = 1.0
            dstate = tuple(seed[j * H:(j + 1) * H][None] for j in range(n))
            _, dprev, _ = cell.step_backward(dstate, caches[t])
            jac[t, k] = np.concatenate([d[0] for d in dprev])  # row k of J_t: d s_t[k] / d s_{t-1}
    return jac


def jacobian_products(jacobians):
    """P_t = ds_T/ds_t = J_T ... J_{t+1} for t = 0..T (P_T = identity). Returns (T+1, S, S)."""
    T, S, _ = jacobians.shape
    prods = np.zeros((T + 1, S, S))
    prods[T] = np.eye(S)
    for t in range(T - 1, -1, -1):
        prods[t] = prods[t + 1] @ jacobians[t]
    return prods


def spectral_norms(matrices):
    return np.array([np.linalg.norm(m, 2) for m in matrices])


def set_spectral_radius(layer, radius, seed=0):
    """Give every recurrent gate block of a layer a fresh random matrix with the given spectral radius (a recurrent
    weight that is a vector u, acting as u * h, gets random entries of largest magnitude ``radius``)."""
    rng = np.random.default_rng(seed)
    H = layer.hidden_size
    for name, w in layer.params.items():
        if not name.startswith("weight_hh"):
            continue
        if w.ndim == 1:
            u = rng.uniform(-1, 1, w.shape)
            w[...] = layer.xp.asarray((u * (radius / np.abs(u).max())).astype(layer.dtype))
            continue
        new = np.empty(w.shape)
        for g in range(w.shape[0] // H):
            block = rng.standard_normal((H, H))
            new[g * H:(g + 1) * H] = block * (radius / np.abs(np.linalg.eigvals(block)).max())
        w[...] = layer.xp.asarray(new.astype(layer.dtype))


def vanishing_horizon(norms, threshold=1e-6):
    """Steps back from the last step until ||dL/dh|| first drops below threshold * its last-step value
    (None when it never does). ``norms`` in time order, loss at the last step."""
    ref = norms[-1]
    for k, v in enumerate(norms[::-1]):
        if v < threshold * ref:
            return k
    return None
