"""``gradients``: one loss, every gradient algorithm, the layer's parameter names; the estimators' statistics."""

from __future__ import annotations

import numpy as np

from ..backend import array_module, available_bytes, backend_of, default_rng
from ..functional import param_name
from ..validation import check_array
from . import bptt as _bptt
from .kf_rtrl import KFRTRL
from .rflo import RFLO
from .rtrl import RTRL
from .snap import SnAp1, SnApN
from .uoro import UORO

# method name -> the Tracker class (forward-mode methods) or None (BPTT, run backwards)
TRACKERS = {
    "rtrl": RTRL,
    "uoro": UORO,
    "kf-rtrl": KFRTRL,
    "snap-1": SnAp1,
    "snap-2": SnApN,
    "rflo": RFLO,
}
METHODS = ("bptt", "tbptt", *TRACKERS)
UNBIASED = ("uoro", "kf-rtrl")  # random estimates whose mean is RTRL's gradient
EXACT = ("bptt", "rtrl")


def check_method(method):
    """The method name, checked; ValueError listing the choices."""
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return method.lower()


def check_truncation(method, truncation):
    """truncation: an integer k >= 1 for 'tbptt' (k >= seq_len is full BPTT); None for every other method."""
    if method != "tbptt":
        if truncation is not None:
            raise ValueError(f"truncation is the k of method 'tbptt' only; method {method!r} takes "
                             f"truncation=None, got {truncation!r}")
        return None
    if isinstance(truncation, (bool, np.bool_)) or not isinstance(truncation, (int, np.integer)) or truncation < 1:
        raise ValueError(f"method 'tbptt' needs truncation=k, an integer >= 1 (the steps each output's gradient "
                         f"travels back; k >= seq_len is full BPTT), got {truncation!r}")
    return int(truncation)


def make_tracker(method, cell, rng=None):
    """The forward-mode algorithm for ``method`` on ``cell``, or a ValueError naming both and why not."""
    if cell.step_derivatives is None:
        raise ValueError(f"method {method!r} is not available for cell {cell.name!r}: it carries the influence "
                         f"matrix forward with the cell's per-unit step Jacobians (Cell.step_derivatives), which "
                         f"this cell does not provide; 'bptt' and 'tbptt' need only its step functions")
    cls = TRACKERS[method]
    return cls(cell, rng=rng)


def check_tracker(tracker, derivatives, cell):
    """Ask a tracker whether it is defined for a cell's step (KF-RTRL's factorisation); ValueError if not."""
    reason = tracker.check(derivatives)
    if reason is not None:
        raise ValueError(f"method {tracker.name!r} is not defined for cell {cell.name!r}: {reason}; use 'uoro' "
                         f"(unbiased, any cell) or 'rtrl' (exact)")


def check_method_for(method, layer):
    """Refuse, before any work, a method that ``layer``'s cell cannot run (ValueError naming both and why): its
    tracker is asked about one step of the cell from a zero state."""
    if method in ("bptt", "tbptt"):
        return
    check_tracker(make_tracker(method, layer.cell), probe_derivatives(layer), layer.cell)


PEAK_FACTOR = 5  # a step holds the old matrices, the new ones and about three temporaries of their size
GUARD_FROM = 1 << 28  # below 256 MiB, not worth reading the machine's state


def guard_memory(trackers, d, rows=None, extra_bytes=0):
    """Refuse, before allocating, influence matrices that would not fit in the memory left (MemoryError naming the
    bytes): the numbers every tracker carries for ``rows`` batch rows (default: ``d``'s) times
    :data:`PEAK_FACTOR`, plus ``extra_bytes``."""
    itemsize = d.local.dtype.itemsize
    B, n, G, H = (int(v) for v in d.terms[0].E.shape)
    rows = B if rows is None else int(rows)
    carried = sum(t.carried_elements(d) for t in trackers) * itemsize * rows // B
    need = PEAK_FACTOR * carried + extra_bytes
    if need < GUARD_FROM:
        return
    free = available_bytes(backend_of(d.local))
    if free is not None and need > free:
        names = " and ".join(repr(t.name) for t in trackers)
        raise MemoryError(f"method {names} with {rows} batch rows and hidden size {H} carries {carried / 2**30:.2f} "
                          f"GiB of influence matrices, about {need / 2**30:.1f} GiB at a step's peak; "
                          f"{free / 2**30:.1f} GiB is available (rtrl and snap-2 grow as H^3 per row, kf-rtrl as "
                          f"H^2, the others as the parameter count)")


def probe_derivatives(layer):
    """The step derivatives of one step of ``layer``'s cell from a zero state, batch 1 (structure and sizes only)."""
    xp, cell = layer.xp, layer.cell
    state = tuple(xp.zeros((1, layer.hidden_size), dtype=layer.dtype) for _ in range(cell.num_states))
    _, cache = cell.step_forward(xp.zeros((1, layer.input_size), dtype=layer.dtype), state, layer_params(layer))
    return cell.step_derivatives(cache)


def check_layer(layer, what="online.gradients"):
    """A single-layer, unidirectional recurrent layer (ValueError/TypeError otherwise)."""
    from ..layers import RNNBase

    if not isinstance(layer, RNNBase):
        raise TypeError(f"{what} takes a recurrent layer (rnn_scratch.RNN, LSTM or GRU), got {type(layer).__name__}")
    if layer.num_layers != 1:
        raise ValueError(f"{what} takes a single-layer layer, got num_layers={layer.num_layers}: the online "
                         f"algorithms carry one layer's influence matrix (use one layer per call)")
    if layer.bidirectional:
        raise ValueError(f"{what} takes a unidirectional layer, got bidirectional=True: a reverse direction "
                         f"runs backwards in time, which no forward-in-time algorithm can follow")


LAYER_SUFFIX = param_name("", 0)  # "_l0": a single-layer, forward layer's parameter names end with it


def layer_kinds(names):
    """{parameter kind: the layer's name for it} ("weight_ih": "weight_ih_l0", ...), in the layer's order."""
    return {name[:-len(LAYER_SUFFIX)]: name for name in names if name.endswith(LAYER_SUFFIX)}


def params_names(layer):
    """The layer's parameter names, in ``state_dict()``'s order."""
    return [name for name, _, _ in layer.parameters()]


def layer_params(layer):
    """{kind: copy of the layer's parameter}, read through ``state_dict()`` (names ``weight_ih_l0``...); a kind the
    layer lacks (a bias) is absent, which the step functions read as None."""
    sd = layer.state_dict()
    return {kind: sd[name] for kind, name in layer_kinds(sd).items()}


def _prepare(layer, x, dout, state):
    """Check the call's arrays; returns (x, dout) time-major (T, B, .), the state tuple (B, H) parts, unbatched."""
    H, I = layer.hidden_size, layer.input_size
    check_array(x, "x", backend=layer.backend, dtype=layer.dtype, finite=True)
    layout = "(batch, seq_len, {})" if layer.batch_first else "(seq_len, batch, {})"
    if x.ndim not in (2, 3) or x.shape[-1] != I or 0 in x.shape:
        raise ValueError(f"x must have shape {layout.format(f'input_size={I}')} or unbatched (seq_len, "
                         f"input_size={I}), with seq_len and batch >= 1, got shape {tuple(x.shape)}")
    unbatched = x.ndim == 2
    out_shape = (x.shape[0], H) if unbatched else (*x.shape[:2], H)
    check_array(dout, "dout", backend=layer.backend, dtype=layer.dtype, shape=out_shape, finite=True,
                shape_doc=f"{out_shape}, the shape of the layer's output for this x")
    if unbatched:
        x, dout = x[:, None], dout[:, None]
    elif layer.batch_first:
        x, dout = x.transpose(1, 0, 2), dout.transpose(1, 0, 2)
    xp = array_module(x)
    x, dout = xp.ascontiguousarray(x), xp.ascontiguousarray(dout)
    B = x.shape[1]
    parts = layer.to_states(state) or (None,) * layer.cell.num_states
    shape = (1, H) if unbatched else (1, B, H)
    states = []
    for value, name in zip(parts, layer.cell.state_names):
        if value is None:
            states.append(xp.zeros((B, H), dtype=layer.dtype))
            continue
        check_array(value, f"state ({name}0)", backend=layer.backend, dtype=layer.dtype, shape=shape, finite=True,
                    shape_doc=f"(num_layers * num_directions=1, {'' if unbatched else f'batch={B}, '}hidden_size={H})")
        states.append(xp.ascontiguousarray(value.reshape(B, H)))
    return x, dout, tuple(states), unbatched


def gradients(layer, x, dout, *, method, state=None, truncation=None, seed=None, per_row=False):
    r"""The gradient of L = sum_t <dout_t, h_t> with respect to every parameter of ``layer``, by ``method``.

    ``layer``: a single-layer, unidirectional ``RNN`` (tanh or relu), ``LSTM`` or ``GRU``; ``x`` and ``dout``
    in the layer's layout ((seq_len, batch, .), batch-first, or unbatched (seq_len, .)), its dtype and
    backend; ``state``: the initial state in torch's form (h0 of shape (1, batch, H); the LSTM's (h0, c0)),
    None for zeros. ``method``:

    ========  =====================================================  ==========================
    bptt      backpropagation through time (the layer's backward)    exact
    tbptt     truncated BPTT(k), ``truncation=k``: every output's     biased; k >= seq_len exact
              gradient travels k steps back
    rtrl      real-time recurrent learning                           exact
    uoro      unbiased online recurrent optimisation                 unbiased, random
    kf-rtrl   Kronecker-factored RTRL (not for the GRU: see below)   unbiased, random
    snap-1    sparse 1-step approximation                            biased
    snap-2    sparse 2-step approximation (= rtrl for dense W_hh)    biased
    rflo      RFLO / e-prop eligibility traces                       biased
    ========  =====================================================  ==========================

    Each batch row carries its own influence matrix or estimate; the rows' gradients are summed, as
    ``layer.backward`` sums them (``per_row=True``: one gradient per row instead, each value with a leading
    batch axis). ``seed``: the random signs of ``uoro`` and ``kf-rtrl`` (None: fresh entropy; the other
    methods draw nothing). Returns {name: array} with ``layer.state_dict()``'s keys and shapes; the layer
    is not changed.

    KF-RTRL needs the step's immediate Jacobian to be one Kronecker product u_t (x) E_t; the GRU's is a sum of
    two (its recurrent n rows see r * (W_hn h_{t-1})), so the GRU gets a ValueError saying so.
    """
    method = check_method(method)
    truncation = check_truncation(method, truncation)
    check_layer(layer)
    if not isinstance(per_row, (bool, np.bool_)):
        raise TypeError(f"per_row must be True or False, got {per_row!r}")
    rng = default_rng(seed)
    x, dout, states, unbatched = _prepare(layer, x, dout, state)
    params = layer_params(layer)
    cell = layer.cell
    if method in ("bptt", "tbptt"):
        need, free = layer.bptt_bytes(*x.shape[:2], memory="full"), available_bytes(layer.backend)
        if need > GUARD_FROM and free is not None and need > free:
            raise MemoryError(f"method {method!r} keeps every step's activations: about {need / 2**30:.1f} GiB for "
                              f"seq_len={x.shape[0]}, batch={x.shape[1]}; {free / 2**30:.1f} GiB is available")

        def run(rows):
            st = tuple(s[rows] for s in states)
            if method == "bptt":
                return _bptt.bptt(cell, x[:, rows], st, params, dout[:, rows])
            return _bptt.tbptt(cell, x[:, rows], st, params, dout[:, rows], truncation)

        if per_row:
            rows = [run(slice(b, b + 1)) for b in range(x.shape[1])]
            grads = {kind: array_module(x).stack([r[kind] for r in rows]) for kind in rows[0]}
        else:
            grads = run(slice(None))
    else:
        grads = run_tracker(make_tracker(method, cell, rng), cell, x, states, params, dout, per_row)
    if unbatched and per_row:
        grads = {kind: g[0] for kind, g in grads.items()}
    names = layer_kinds(params_names(layer))
    return {name: grads[kind].astype(layer.dtype, copy=False) for kind, name in names.items()}


def run_tracker(tracker, cell, x, state, params, dout, per_row=False):
    """Run a forward-mode algorithm over a sequence: {kind: sum_t dout_t^T M_t[h]} (per row with ``per_row``)."""
    total = None
    for t in range(x.shape[0]):
        state, cache = cell.step_forward(x[t], state, params)
        d = cell.step_derivatives(cache)
        if t == 0:
            check_tracker(tracker, d, cell)
            guard_memory([tracker], d)
        tracker.step(d)
        grads = tracker.gradient(dout[t], per_row)
        total = grads if total is None else {kind: total[kind] + g for kind, g in grads.items()}
    return total


def estimator_statistics(layer, x, dout, *, method, samples=2000, state=None, seed=None):
    r"""The mean and variance of a random method's gradient over ``samples`` independent draws, beside RTRL's.

    The batch is replicated ``samples`` times, each copy with its own random signs (one call, every row its
    own estimate); draw i is the sum over the original batch rows of copy i. Returns {"mean", "variance",
    "standard_error", "exact"}, each {name: array}, and "total_variance": sum over every parameter entry of
    the variance, E|g~ - E g~|^2 (the number to compare between estimators), and "samples".
    """
    method = check_method(method)
    if method not in UNBIASED:
        raise ValueError(f"estimator_statistics takes a random method, one of {list(UNBIASED)}, got {method!r}")
    if isinstance(samples, (bool, np.bool_)) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    check_layer(layer, "online.estimator_statistics")
    x, dout, states, _ = _prepare(layer, x, dout, state)
    xp = array_module(x)
    T, B, _ = x.shape
    params = layer_params(layer)
    cell = layer.cell
    tracker = make_tracker(method, cell, default_rng(seed))
    d = probe_derivatives(layer)
    check_tracker(tracker, d, cell)
    tiles = samples * (x.nbytes + dout.nbytes + sum(s.nbytes for s in states))
    guard_memory([tracker], d, rows=samples * B, extra_bytes=tiles)

    def tile(a):
        return xp.tile(a, (1, samples, 1))

    draws = run_tracker(tracker, cell, tile(x),
                        tuple(xp.tile(s, (samples, 1)) for s in states), params, tile(dout), per_row=True)
    exact = run_tracker(RTRL(cell), cell, x, states, params, dout)
    out = {"mean": {}, "variance": {}, "standard_error": {}, "exact": {}, "samples": int(samples)}
    total = 0.0
    for kind, g in draws.items():
        g = g.reshape((samples, B) + g.shape[1:]).sum(axis=1)  # draw i: copy i's rows summed
        name = layer_kinds(params_names(layer))[kind]
        out["mean"][name] = g.mean(axis=0)
        out["variance"][name] = g.var(axis=0, ddof=1)
        out["standard_error"][name] = xp.sqrt(out["variance"][name] / samples)
        out["exact"][name] = exact[kind]
        total += float(out["variance"][name].sum())
    out["total_variance"] = total
    return out
