"""Every cell x layers x directions x layout x bias x initial state x lengths:
outputs, final states and every gradient against torch (float64 and float32) and finite differences."""

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnn_scratch.backend import to_backend
from rnn_scratch.gradcheck import check_layer, relative_error
from rnn_scratch.testing import CELLS, examples, layer_configs, layer_inputs

from .torch_ref import DEVICE, torch_reference

GRID = list(itertools.product(CELLS, (1, 2, 3), (False, True), (False, True), (False, True), (False, True),
                              (False, True)))
IDS = [f"{c}-L{n}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-{'bias' if bb else 'nobias'}-"
       f"{'h0' if s else 'noh0'}-{'len' if ln else 'full'}" for c, n, b, f, bb, s, ln in GRID]
TOL = {"float64": 1e-9, "float32": 1e-4}
# float32: a gradient that is a near-cancelling sum (|g| ~ 1e-5 from O(1) terms) carries rounding error
# of the terms' size in torch too; below this scale the 1e-4 tolerance is taken against 1e-2 (abs 1e-6).
FLOOR = {"float64": 0.0, "float32": 1e-2}


def _draw(data, combo, dtype, small=False):
    cell, layers, bi, bf, bias, with_state, with_lengths = combo
    cfg = data.draw(layer_configs(cells=cell, num_layers=layers, bidirectional=bi, batch_first=bf, bias=bias,
                                  input_size=st.integers(1, 3 if small else 5),
                                  hidden_size=st.integers(1, 3 if small else 6)))
    inp = data.draw(layer_inputs(cfg, seq_len=st.integers(1, 4 if small else 7), batch=st.integers(1, 3),
                                 with_state=with_state, with_lengths=with_lengths, dtype=dtype))
    return cfg, inp


def _on(backend, inp):
    """x and the initial state tuple (or None) on ``backend``."""
    states = None if inp.states is None else tuple(to_backend(s, backend) for s in inp.states)
    return to_backend(inp.x, backend), states


def _compare(cfg, inp, dtype, backend):
    layer = cfg.build(dtype=dtype, backend=backend, seed=inp.seed % 1000)
    x, states = _on(backend, inp)
    out, finals = layer.forward_states(x, states, inp.lengths)
    rng = np.random.default_rng(inp.seed)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dfinals = tuple(rng.standard_normal(f.shape).astype(dtype) for f in finals)
    dx, dstate0 = layer.backward_states(to_backend(dout, backend), tuple(to_backend(d, backend) for d in dfinals))
    ref = torch_reference(cfg, layer.state_dict(), inp, dout, dfinals, dtype,
                          device=DEVICE if backend == "cupy" else "cpu")
    floor = FLOOR[dtype]
    errors = {"out": relative_error(out, ref["out"], floor), "dx": relative_error(dx, ref["dx"], floor)}
    for k, (a, b) in enumerate(zip(finals, ref["finals"])):
        errors[f"final{k}"] = relative_error(a, b, floor)
    for k, (a, b) in enumerate(zip(dstate0, ref["dstate0"])):
        errors[f"dstate0_{k}"] = relative_error(a, b, floor)
    assert set(layer.grads) == set(ref["grads"])
    for name, g in ref["grads"].items():
        errors[name] = relative_error(layer.grads[name], g, floor)
    bad = {k: v for k, v in errors.items() if not v < TOL[dtype]}
    assert not bad, f"{cfg} {inp.lengths}: {bad}"


@pytest.mark.parametrize("combo", GRID, ids=IDS)
@settings(max_examples=examples(4))
@given(data=st.data())
def test_matches_torch(combo, data, backend):
    for dtype in ("float64", "float32"):
        cfg, inp = _draw(data, combo, dtype)
        _compare(cfg, inp, dtype, backend)


@pytest.mark.parametrize("combo", GRID, ids=IDS)
@settings(max_examples=examples(2))
@given(data=st.data())
def test_finite_differences(combo, data, backend):
    cfg, inp = _draw(data, combo, "float64", small=True)
    layer = cfg.build(dtype="float64", backend=backend, seed=1, check_finite=False)
    x, states = _on(backend, inp)
    if cfg.cell == "rnn_relu":  # finite differences are meaningless across relu's kink at 0
        layer.forward_states(x, states, inp.lengths)
        assume(min_abs_preactivation(layer) > 1e-4)
    report = check_layer(layer, x, None if states is None else layer.from_states(states), inp.lengths, tol=1e-6)
    assert report.passed, f"{cfg}\n{report}"
    assert {r.name for r in report.rows} >= set(layer.params) | {"x", "h0"}


def min_abs_preactivation(layer):
    """Smallest |W_ih x_t + b + W_hh h_{t-1}| over every step, layer and direction of the last forward."""
    smallest = np.inf
    for layer_caches in layer._saved()["caches"]:
        for cache in layer_caches:  # RNNCache
            params = cache.params
            a = cache.x @ params["weight_ih"].T + cache.h_prev @ params["weight_hh"].T
            if params["bias_ih"] is not None:
                a = a + params["bias_ih"] + params["bias_hh"]
            if cache.mask is not None:
                a = np.where(cache.mask, a, np.inf)
            smallest = min(smallest, float(np.abs(a).min()))
    return smallest
