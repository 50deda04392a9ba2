"""Gradient-flow analysis: BPTT terms sum to the gradient, Jacobian products match finite differences,
and a contracting tanh RNN's gradient shrinks at least geometrically."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnn_scratch as rs
from rnn_scratch.analysis import jacobian_products, step_jacobians, trace_gradients, vanishing_horizon
from rnn_scratch.functional import CELLS, reference_forward
from rnn_scratch.gradcheck import relative_error
from rnn_scratch.layers import make_layer
from rnn_scratch.testing import examples, layer_configs, layer_inputs


@settings(max_examples=examples(15))
@given(data=st.data())
def test_step_contributions_sum_to_full_gradient(data):
    cfg = data.draw(layer_configs(hidden_size=st.integers(1, 4)))
    inp = data.draw(layer_inputs(cfg, with_lengths=False))
    layer = cfg.build(dtype="float64", seed=0)
    out, finals = layer.forward_states(inp.x, inp.states)
    rng = np.random.default_rng(inp.seed)
    dout = rng.standard_normal(out.shape)
    dfinal = tuple(rng.standard_normal(f.shape) for f in finals)
    dx, _ = layer.backward_states(dout, dfinal)
    trace = trace_gradients(layer, inp.x, inp.state, dout, layer.from_states(dfinal))
    for name, grad in layer.grads.items():
        kind, suffix = name.split("_l")
        l, d = int(suffix[0]), int(suffix.endswith("reverse"))
        terms = trace.contributions[(l, d)][kind]
        assert terms.shape[0] == inp.seq_len
        assert relative_error(terms.sum(axis=0), grad) < 1e-12, name
    assert relative_error(trace.dx, dx) < 1e-12


@pytest.mark.parametrize("cell", [c for c in CELLS if CELLS[c].nonsmooth_at is None])  # no kinks: finite differences
def test_jacobian_products_match_finite_differences(cell):
    layer = make_layer(cell, 2, 3, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1, 2))
    jac = step_jacobians(layer, x)
    prods = jacobian_products(jac)
    n = layer.cell.num_states
    params = layer.cell_params(0, 0)
    H, eps = 3, 1e-6

    def final_state(t0, s0):
        """Run from step t0 with state s0 (flat) to the end; return the final flat state."""
        st0 = tuple(s0[j * H:(j + 1) * H][None] for j in range(n))
        _, st_T, _ = reference_forward(layer.mode, x[t0:], st0, params)
        return np.concatenate([s[0] for s in st_T])

    for t0 in (0, 2, 5):
        # the state before step t0
        if t0 == 0:
            s0 = np.zeros(n * H)
        else:
            _, st_prev, _ = reference_forward(layer.mode, x[:t0], tuple(np.zeros((1, H)) for _ in range(n)), params)
            s0 = np.concatenate([s[0] for s in st_prev])
        fd = np.zeros((n * H, n * H))
        for k in range(n * H):
            e = np.zeros(n * H)
            e[k] = eps
            fd[:, k] = (final_state(t0, s0 + e) - final_state(t0, s0 - e)) / (2 * eps)
        # the differences' noise is ~1e-10 absolute: the 1e-3 scale floor of every finite-difference check (a
        # contracting cell's product can be far smaller: IndRNN's with |u| < 0.5 is 1.5e-4 six steps back)
        assert relative_error(prods[t0], fd, floor=1e-3) < 1e-7, t0


@settings(max_examples=examples(25))
@given(seed=st.integers(0, 2**31), H=st.integers(1, 8), T=st.integers(2, 40), B=st.integers(1, 4),
       scale=st.floats(0.1, 3.0), spectral=st.floats(0.05, 0.5))
def test_contracting_tanh_rnn_gradient_shrinks_geometrically(seed, H, T, B, scale, spectral):
    """||W_hh||_2 = s <= 0.5 and a loss on the last step only: ||dL/dh_{T-k}|| <= s^k ||dL/dh_T||."""
    rng = np.random.default_rng(seed)
    layer = rs.RNN(3, H, dtype="float64", seed=seed % 1000)
    w = rng.standard_normal((H, H))
    layer.params["weight_hh_l0"][...] = w * (spectral / np.linalg.norm(w, 2))
    x = scale * rng.standard_normal((T, B, 3))
    dout = np.zeros((T, B, H))
    dout[-1] = rng.standard_normal((B, H))
    norms = trace_gradients(layer, x, dout=dout).hidden_grad_norms[(0, 0)]
    for k in range(T):
        assert norms[T - 1 - k] <= spectral**k * norms[-1] * (1 + 1e-12) + 1e-300


def test_vanishing_horizon():
    assert vanishing_horizon(np.array([1e-9, 1e-7, 1e-3, 1.0])) == 2  # 1e-7 lies 2 steps back
    assert vanishing_horizon(np.array([1.0, 1.0])) is None


def test_checkpointed_trace_equals_the_full_trace():
    """The gradient-flow lab's checkpointed BPTT (bounded memory for long T) records the same norms and gradients."""
    layer = rs.LSTM(2, 3, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((17, 2, 2))
    dout = rng.standard_normal((17, 2, 6))
    full = trace_gradients(layer, x, dout=dout)
    for every in (1, 4, 7):
        ckpt = trace_gradients(layer, x, dout=dout, checkpoint_every=every, contributions=False)
        assert not ckpt.contributions
        for key, norms in full.hidden_grad_norms.items():
            assert relative_error(ckpt.hidden_grad_norms[key], norms) < 1e-13
        for name, g in full.grads.items():
            assert relative_error(ckpt.grads[name], g) < 1e-13, name
        assert relative_error(ckpt.dx, full.dx) < 1e-13
