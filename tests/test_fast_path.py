"""The fast sequence kernels agree with the readable step functions looped over time (float64, < 1e-12)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_scratch.functional import reference_backward, reference_forward, sequence_backward, sequence_forward
from rnn_scratch.gradcheck import relative_error
from rnn_scratch.testing import CELLS, examples

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


@settings(max_examples=examples(60))
@given(cell=st.sampled_from(CELLS), T=st.integers(1, 8), B=st.integers(1, 5), I=st.integers(1, 6),
       H=st.integers(1, 7), bias=st.booleans(), reverse=st.booleans(), padded=st.booleans(),
       seed=st.integers(0, 2**31), scale=st.floats(0.1, 3.0))
def test_fast_path_matches_reference(cell, T, B, I, H, bias, reverse, padded, seed, scale):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    params = {"weight_ih": scale * rng.standard_normal((G * H, I)),
              "weight_hh": scale * rng.standard_normal((G * H, H))}
    params["bias_ih"] = rng.standard_normal(G * H) if bias else None
    params["bias_hh"] = rng.standard_normal(G * H) if bias else None
    x = rng.standard_normal((T, B, I))
    state = tuple(rng.standard_normal((B, H)) for _ in range(2 if cell == "lstm" else 1))
    mask = None
    if padded:
        lengths = rng.integers(1, T + 1, size=B)
        mask = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]
    out_f, st_f, cache_f = sequence_forward(cell, x, state, params, reverse=reverse, mask=mask)
    out_r, st_r, cache_r = reference_forward(cell, x, state, params, reverse=reverse, mask=mask)
    dout = rng.standard_normal(out_f.shape)
    dstate = tuple(rng.standard_normal(s.shape) for s in st_f)
    dx_f, d0_f, dp_f = sequence_backward(cell, dout, dstate, cache_f)
    dx_r, d0_r, dp_r = reference_backward(cell, dout, dstate, cache_r)
    pairs = [(out_f, out_r), (dx_f, dx_r), *zip(st_f, st_r), *zip(d0_f, d0_r)]
    pairs += [(dp_f[k], dp_r[k]) for k in dp_r]
    assert set(dp_f) == set(dp_r)
    worst = max(relative_error(a, b) for a, b in pairs)
    assert worst < 1e-12, worst


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    for cell in CELLS:
        G = GATES[cell]
        params = {"weight_ih": rng.standard_normal((G * 4, 3)).astype("float32"),
                  "weight_hh": rng.standard_normal((G * 4, 4)).astype("float32"),
                  "bias_ih": np.zeros(G * 4, "float32"), "bias_hh": np.zeros(G * 4, "float32")}
        x = rng.standard_normal((5, 2, 3)).astype("float32")
        state = tuple(np.zeros((2, 4), "float32") for _ in range(2 if cell == "lstm" else 1))
        out, st_n, cache = sequence_forward(cell, x, state, params)
        dx, d0, dp = sequence_backward(cell, np.ones_like(out), None, cache)
        assert out.dtype == dx.dtype == np.float32
        assert all(s.dtype == np.float32 for s in (*st_n, *d0, *dp.values()))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the reference sigmoid
def test_saturated_gates_stay_finite():
    """exp overflows to inf inside the sigmoid for huge pre-activations; the result must be the exact limit."""
    params = {"weight_ih": np.full((16, 1), 1e4), "weight_hh": np.zeros((16, 4)), "bias_ih": None, "bias_hh": None}
    x = np.array([[[1.0]], [[-1.0]]])
    out, (h, c), cache = sequence_forward("lstm", x, (np.zeros((1, 4)), np.zeros((1, 4))), params)
    assert np.isfinite(out).all() and np.isfinite(c).all()
    ref, _, _ = reference_forward("lstm", x, (np.zeros((1, 4)), np.zeros((1, 4))), params)
    assert np.allclose(out, ref)
