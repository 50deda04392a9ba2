"""Adding a cell from your own module: :func:`register_cell` checks the record, runs it once on a small case, and
adds it to the registry (``functional.CELLS``), after which layers, models, the command line and the
hypothesis strategies offer it like the built-in cells.

A minimal cell is its step pair and its parameters; the step loop then runs whole sequences::

    import rnn_scratch as rs
    from rnn_scratch.functional import Cell, Param, register_cell

    register_cell(Cell("my_rnn", state_names=("h",), gate_names=("a",),
                       params=(Param("weight_ih", ("H", "I")), Param("weight_hh", ("H", "H"))),
                       step_forward=my_step_forward, step_backward=my_step_backward))
    layer = rs.make_layer("my_rnn", 3, 5)
"""

from __future__ import annotations

import numpy as np

from . import registry
from ._numeric import numerical_gradient
from .cell import Cell
from .driver import sequence_backward, sequence_forward
from .reference import reference_backward, reference_forward

SMOKE_SIZES = dict(T=3, B=2, I=2, H=3)  # the small case register_cell runs


def register_cell(cell: Cell, *, replace: bool = False) -> Cell:
    """Check ``cell`` (every field: a TypeError or ValueError naming it), run its parameters' initialisation (the
    declared shapes, finite) and its step pair once on a small case (float64: T=3, B=2, I=2, H=3): every shape,
    dtype (float64 in, float64 out) and value (finite) it returns, and its step_backward against central
    differences of its step_forward; check its fast path (if any) against its step loop on that case, then add it
    under its name and aliases. A name already taken is a ValueError unless
    ``replace``. Nothing is registered when any check fails. Returns the cell."""
    registry.check_record(cell)
    if replace and cell.name in registry.BUILT_IN:
        raise ValueError(f"cell {cell.name!r} is one of the package's own ({', '.join(registry.BUILT_IN)}): rs.RNN, "
                         f"LSTM and GRU and the checkpoints are built on them; register yours under another name")
    taken = {cell.name, *cell.aliases} & set(registry.cell_choices())
    if taken and not (replace and cell.name in registry.CELLS):
        raise ValueError(f"cell names {sorted(taken)} are taken (registered: {list(registry.cell_choices())}); "
                         "pass replace=True to replace a cell of the same name")
    _run_small_case(cell)
    return registry.add(cell, replace=replace)


def unregister_cell(name: str) -> Cell:
    """Take a cell (by name or alias) out of the registry; returns its record."""
    return registry.remove(name)


def _run_small_case(cell: Cell) -> None:
    T, B, I, H = SMOKE_SIZES.values()
    H = max(H, cell.min_hidden_size)
    where = f"Cell {cell.name!r}"
    rng = np.random.default_rng(0)
    shapes = cell.param_shapes(I, H)
    for p in cell.params:  # its own initialisation: the declared shapes, finite
        try:
            p.initial(rng, I, H, cell.num_gates)
        except Exception as exc:
            raise ValueError(f"{where}: {exc}" if isinstance(exc, ValueError) else
                             f"{where}: parameter {p.name!r}: its init failed: {type(exc).__name__}: {exc}") from exc
    params = {name: 0.5 * rng.standard_normal(shape) for name, shape in shapes.items()}
    x = rng.standard_normal((T, B, I))
    state = tuple(rng.standard_normal((B, H)) for _ in cell.state_names)
    step_shapes = f"(B={B}, I={I}, H={H})"
    try:
        new, step_cache = cell.step_forward(x[0], state, params)
    except Exception as exc:
        raise ValueError(f"{where}: step_forward failed on a small case {step_shapes}: "
                         f"{type(exc).__name__}: {exc}") from exc
    _check_states(where, "step_forward's new state", new, cell.state_names, (B, H))
    try:
        dx, dprev, dparams = cell.step_backward(tuple(np.ones((B, H)) for _ in cell.state_names), step_cache)
    except Exception as exc:
        raise ValueError(f"{where}: step_backward failed on a small case {step_shapes}: "
                         f"{type(exc).__name__}: {exc}") from exc
    if np.shape(dx) != (B, I):
        raise ValueError(f"{where}: step_backward's dx_t must have shape (B, I) = {(B, I)}, got {np.shape(dx)}")
    _check_states(where, "step_backward's state gradient", dprev, cell.state_names, (B, H))
    if not isinstance(dparams, dict) or set(dparams) != set(shapes):
        got = sorted(dparams) if isinstance(dparams, dict) else type(dparams).__name__
        raise ValueError(f"{where}: step_backward's dparams must be a dict with keys {sorted(shapes)}, got {got}")
    for name, shape in shapes.items():
        if np.shape(dparams[name]) != shape:
            raise ValueError(f"{where}: step_backward's dparams[{name!r}] must have shape {shape}, got "
                             f"{np.shape(dparams[name])}")
    returned = {**{f"step_forward's new state part {n!r}": v for n, v in zip(cell.state_names, new)},
                "step_backward's dx_t": dx, **{f"step_backward's state gradient part {n!r}": v
                                               for n, v in zip(cell.state_names, dprev)},
                **{f"step_backward's dparams[{k!r}]": v for k, v in dparams.items()}}
    for what, value in returned.items():
        dtype = getattr(value, "dtype", None)
        if dtype != np.float64:
            raise ValueError(f"{where}: {what} must be a float64 array for float64 inputs (the step keeps the "
                             f"inputs' dtype), got {dtype if dtype is not None else type(value).__name__}")
        if not np.isfinite(value).all():
            raise ValueError(f"{where}: {what} is not finite on a small case {step_shapes}")
    _check_step_gradients(cell, where, x[0], state, params, step_shapes, rng)
    if cell.fast is None:
        return
    mask = (np.arange(T)[:, None] < np.array([T, T - 1])[None, :])[:, :, None]
    dout = rng.standard_normal((T, B, H))
    try:
        out_f, final_f, cache_f = sequence_forward(cell, x, state, params, reverse=True, mask=mask)
        dx_f, d0_f, dp_f = sequence_backward(cell, dout, None, cache_f)
    except Exception as exc:
        raise ValueError(f"{where}: its fast path failed on a small case (T={T}, B={B}, I={I}, H={H}): "
                         f"{type(exc).__name__}: {exc}") from exc
    out_r, final_r, cache_r = reference_forward(cell, x, state, params, reverse=True, mask=mask)
    dx_r, d0_r, dp_r = reference_backward(cell, dout, None, cache_r)
    pairs = {"out": (out_f, out_r), "dx": (dx_f, dx_r), **{f"final state {k}": v for k, v in
                                                            enumerate(zip(final_f, final_r))},
             **{f"initial-state gradient {k}": v for k, v in enumerate(zip(d0_f, d0_r))},
             **{f"dparams[{k!r}]": (dp_f.get(k), v) for k, v in dp_r.items()}}
    for what, (fast, ref) in pairs.items():
        if fast is None or np.shape(fast) != np.shape(ref) or not np.allclose(fast, ref, rtol=1e-9, atol=1e-12):
            raise ValueError(f"{where}: its fast path disagrees with its step loop in {what} on a small case "
                             f"(T={T}, B={B}, I={I}, H={H}, reverse, padded)")


FD_EPS, FD_TOL = 1e-6, 1e-5  # central differences of the small case; relative to the largest gradient (floor 1)


def _check_step_gradients(cell, where, x_t, state, params, step_shapes, rng):
    """step_backward against central differences of step_forward, for L = sum_k w_k * s_t[k] (random w): every
    entry of x_t, of each state part and of each parameter. A ValueError names the first wrong gradient."""
    weights = tuple(rng.standard_normal(s.shape) for s in state)

    def loss():  # reads x_t, state and params, which numerical_gradient perturbs in place
        return sum(float((w * n).sum()) for w, n in zip(weights, cell.step_forward(x_t, state, params)[0]))

    _, cache = cell.step_forward(x_t, state, params)
    dx, dprev, dparams = cell.step_backward(weights, cache)
    inputs = {"dx_t": (x_t, dx), **{f"the state gradient part {n!r}": (s, d) for n, s, d in
                                     zip(cell.state_names, state, dprev)},
              **{f"dparams[{k!r}]": (params[k], dparams[k]) for k in params}}
    scale = max(1.0, *(float(np.abs(g).max(initial=0.0)) for _, g in inputs.values()))
    for what, (value, grad) in inputs.items():
        numeric = numerical_gradient(loss, value, FD_EPS)
        error = float(np.abs(numeric - grad).max(initial=0.0))
        if not error <= FD_TOL * scale:
            raise ValueError(f"{where}: step_backward's {what} disagrees with central differences of step_forward "
                             f"on a small case {step_shapes} (off by {error:.3g}; largest gradient {scale:.3g})")


def _check_states(where, what, states, names, shape):
    if not isinstance(states, tuple) or len(states) != len(names):
        got = type(states).__name__ + (f" of length {len(states)}" if isinstance(states, tuple) else "")
        raise ValueError(f"{where}: {what} must be a tuple of {len(names)} array(s) {names}, got {got}")
    for name, s in zip(names, states):
        if np.shape(s) != shape:
            raise ValueError(f"{where}: {what} part {name!r} must have shape (B, H) = {shape}, got {np.shape(s)}")
