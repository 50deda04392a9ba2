"""The conformance kit's ``layer`` convention: check a torch-shaped recurrent layer against rnn_scratch's.

The target is a class or factory ``target(input_size, hidden_size)`` (or one layer object, whose sizes are
then fixed) whose layers have torch's interface: ``out, state = layer(x, state)`` with torch's layout and
parameter names, ``dx, dstate0 = layer.backward(dout, dstate)``, ``state_dict()`` / ``load_state_dict()``
and a ``grads`` dict keyed like the state_dict. The kit reads the layer's structure from its state_dict
(layers, directions, bias) and ``batch_first``, gives both layers the same drawn weights, and compares
outputs, final states, dx, initial-state gradients and every parameter gradient in float64.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from .conformance import (
    TOL,
    VALUES,
    ConformanceReport,
    Finding,
    ImplementationError,
    _call,
    _relative,
    _search,
    judge,
)

LAYER_CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def _structure(layer):
    """(num_layers, bidirectional, bias, batch_first) read off a layer's state_dict and attributes."""
    try:
        keys = list(layer.state_dict())
    except Exception as exc:
        raise ImplementationError(f"state_dict() failed: {type(exc).__name__}: {exc}") from exc
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"weight_ih_l(\d+)", k))}
    if not layers:
        raise ImplementationError(f"the layer's state_dict has no weight_ih_l0 (torch's names), got keys {keys}")
    return (max(layers) + 1, any(k.endswith("_reverse") for k in keys), any(k.startswith("bias_") for k in keys),
            bool(getattr(layer, "batch_first", False)))


def _ours(cell, input_size, hidden_size, structure):
    from ..layers import make_layer

    num_layers, bidirectional, bias, batch_first = structure
    return make_layer(cell, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                      batch_first=batch_first, dtype="float64", backend="numpy", check_finite=False)


@st.composite
def layer_cases(draw, sizes, cell, structure):
    """Sizes (I, H fixed when ``sizes`` is given), T and N, and every array of a call: x, the initial state (or
    None), the weights, dout and dstate, drawn through hypothesis.extra.numpy (so values shrink too)."""
    I, H = sizes if sizes is not None else (draw(st.integers(1, 3), label="I"), draw(st.integers(1, 3), label="H"))
    T, N = draw(st.integers(1, 4), label="T"), draw(st.integers(1, 2), label="N")
    ours = _ours(cell, I, H, structure)
    n, D = ours.cell.num_states, ours.num_directions * H

    def arr(shape, label):
        return draw(arrays(np.float64, shape, elements=VALUES), label=label)

    state_shape = (ours.num_layers * ours.num_directions, N, H)
    with_state = draw(st.booleans(), label="with_state")
    return {"sizes": {"I": I, "H": H, "T": T, "N": N},
            "x": arr((N, T, I) if ours.batch_first else (T, N, I), "x"),
            "state": tuple(arr(state_shape, f"state{k}") for k in range(n)) if with_state else None,
            "weights": {k: arr(v.shape, k) for k, v in ours.state_dict().items()},
            "dout": arr((N, T, D) if ours.batch_first else (T, N, D), "dout"),
            "dstate": tuple(arr(state_shape, f"dstate{k}") for k in range(n))}


def _torch_form(states, n):
    if states is None:
        return None
    return states[0] if n == 1 else tuple(states)


def _as_tuple(state, n):
    return (state,) if n == 1 else tuple(state)


def _permute_rows(weights, order, G):
    """Weights with the gate row blocks taken in ``order`` (block j of the result = block order[j])."""
    out = {}
    for k, v in weights.items():
        H = v.shape[0] // G
        out[k] = np.concatenate([v[j * H:(j + 1) * H] for j in order], axis=0)
    return out


def _pair(result, err, n, what, expected):
    """(first, state tuple, None) from a call that returned (first, state), or (None, None, what went wrong)."""
    if err:
        return None, None, f"{what} {err}"
    try:
        first, state = result
        return first, _as_tuple(state, n), None
    except (TypeError, ValueError):
        return None, None, f"{what} returned {type(result).__name__}, expected {expected}"


def _run(layer, arrs, n, weights=None):
    """Forward and backward of a layer on one case: {name: array}, or (None, error text)."""
    _, err = _call(layer.load_state_dict, [weights or arrs["weights"]])
    if err:
        return None, f"load_state_dict {err}"
    res, err = _call(layer, [arrs["x"].copy(), None if arrs["state"] is None else
                             _torch_form(tuple(s.copy() for s in arrs["state"]), n)])
    out, final, err = _pair(res, err, n, "forward", "(out, state)")
    if err:
        return None, err
    res, err = _call(layer.backward, [arrs["dout"].copy(), _torch_form(tuple(d.copy() for d in arrs["dstate"]), n)])
    dx, d0, err = _pair(res, err, n, "backward", "(dx, dstate0)")
    if err:
        return None, err
    result = {"out": out, "dx": dx, **{f"final{k}": f for k, f in enumerate(final)},
              **{f"dstate0_{k}": d for k, d in enumerate(d0)}}
    grads = getattr(layer, "grads", None)
    if not isinstance(grads, dict):
        return None, "has no grads dict (parameter gradients keyed like its state_dict)"
    result.update({f"grads[{k}]": v for k, v in grads.items()})
    return result, None


def check_layer_implementation(target, *, cell, max_examples, seed):
    """See :func:`rnn_scratch.testing.check_implementation` (convention "layer")."""
    if cell == "rnn":
        cell = "rnn_tanh"
    if cell not in LAYER_CELLS:
        raise ImplementationError(f"the layer convention has cells {LAYER_CELLS}, got {cell!r}")
    is_instance = hasattr(target, "backward") and hasattr(target, "state_dict") and not isinstance(target, type)
    if not is_instance and not callable(target):
        raise ImplementationError(f"the layer convention takes a layer class, factory or object, got "
                                  f"{type(target).__name__}")
    label = getattr(target, "__qualname__", None) or type(target).__name__

    def make(I, H):
        layer = target if is_instance else target(I, H)
        for attr in ("backward", "state_dict", "load_state_dict"):
            if not callable(getattr(layer, attr, None)):
                raise ImplementationError(f"{label}(...) has no {attr}() (torch-shaped layers have one)")
        return layer

    sizes = None
    if is_instance:
        w = target.state_dict()["weight_hh_l0"]
        sizes = (np.shape(target.state_dict()["weight_ih_l0"])[1], np.shape(w)[1])
    structure = _structure(make(*(sizes or (2, 3))))
    report = ConformanceReport(label, "layer", cell, checked=["forward and backward"], examples=max_examples)

    def evaluate(case):
        I, H = case["sizes"]["I"], case["sizes"]["H"]
        ours = _ours(cell, I, H, structure)
        arrs = case
        finding = Finding("forward and backward", case=_describe(case, arrs))
        snapshot = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in arrs.items()}
        got, err = _run(make(I, H), arrs, ours.cell.num_states)
        if err:
            finding.problems.append(err)
            return finding, arrs, None
        if not np.array_equal(arrs["x"], snapshot["x"]) or not np.array_equal(arrs["dout"], snapshot["dout"]):
            finding.problems.append("changed its input in place")
        expected, _ = _run(ours, arrs, ours.cell.num_states)
        judge(finding, got, expected)
        return finding, arrs, got

    minimal = _search(lambda case: not evaluate(case)[0].ok, layer_cases(sizes, cell, structure), max_examples, seed)
    if minimal is not None:
        finding, arrs, got = evaluate(minimal)
        if got is not None and cell in GATE_NAMES and finding.wrong:
            finding.cause = _gate_order(cell, minimal, arrs, got, structure)
        if got is not None and "dx" in finding.wrong:
            ours = _ours(cell, minimal["sizes"]["I"], minimal["sizes"]["H"], structure)
            expected, _ = _run(ours, arrs, ours.cell.num_states)
            t_axis = 1 if structure[3] else 0
            T = minimal["sizes"]["T"]
            wrong = [t for t in range(T) if _relative(np.take(got["dx"], t, axis=t_axis),
                                                      np.take(expected["dx"], t, axis=t_axis)) > TOL]
            if wrong and T - 1 not in wrong and not structure[1]:
                finding.steps = (f"dx is right at the last step (t = {T - 1}) and wrong at t = {wrong}: wrong only for "
                                 f"T >= 2: the gradient carried from step t+1 into step t is likely missing")
            elif wrong:
                finding.steps = f"dx is wrong at t = {wrong} of 0..{T - 1}"
        report.failures.append(finding)
    return report


def _gate_order(cell, case, arrs, got, structure):
    """When the layer's results are ours with the gate row blocks permuted (forward and backward alike): say
    which order it uses."""
    names = GATE_NAMES[cell]
    G = len(names)
    ours = _ours(cell, case["sizes"]["I"], case["sizes"]["H"], structure)
    for order in itertools.permutations(range(G)):
        if order == tuple(range(G)):
            continue
        inverse = [order.index(k) for k in range(G)]
        expected, _ = _run(ours, arrs, ours.cell.num_states, weights=_permute_rows(arrs["weights"], order, G))
        expected = {k: (_permute_rows({k: v}, inverse, G)[k] if k.startswith("grads[") else v)
                    for k, v in expected.items()}  # the learner's gradients come in its own row order
        if all(k in got and _relative(got[k], v) <= TOL for k, v in expected.items()):
            used = ", ".join(names[j] for j in inverse)
            return (f"the gate row blocks are used in the order ({used}); torch's (and this convention's) order is "
                    f"({', '.join(names)})")
    return None


def _describe(case, arrs, width=60):
    parts = [" ".join(f"{k}={v}" for k, v in case["sizes"].items())]
    for k in ("x", "state", "dout"):
        v = arrs[k]
        if v is None:
            continue
        text = " ".join(np.array2string(np.asarray(v), precision=3, separator=",", suppress_small=True,
                                        max_line_width=10_000).split())
        parts.append(f"{k}={text if len(text) <= width else text[: width - 3] + '...'}")
    return {"sizes": case["sizes"], "text": "; ".join(parts)}
