"""The fast sequence kernels agree with the readable step functions looped over time (float64), within a
rounding-error bound derived from the formulation (:func:`rounding_bound`)."""

import contextlib
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnn_scratch
from rnn_scratch.functional import (
    CELLS,
    _common,
    _gemm,
    _parallel,
    reference_backward,
    reference_forward,
    sequence_backward,
    sequence_forward,
)
from rnn_scratch.testing import examples
from rnn_scratch.testing.cases import random_sequence_case


@contextlib.contextmanager
def forced_blocks(threads, chunk=1 << 18, orientation=None):
    """Split even tiny problems into row blocks on ``threads`` threads, ``chunk``-element time runs, and force the
    recurrent GEMM's orientation (True: feature-major W h^T, False: h W^T, None: the size rule)."""
    saved = _parallel.MIN_BLOCK_ELEMENTS, _common.CHUNK_ELEMENTS, _gemm.FORCE_ORIENTATION
    _parallel.set_num_threads(threads)
    _parallel.MIN_BLOCK_ELEMENTS, _common.CHUNK_ELEMENTS, _gemm.FORCE_ORIENTATION = 1, chunk, orientation
    try:
        yield
    finally:
        _parallel.set_num_threads(None)
        _parallel.MIN_BLOCK_ELEMENTS, _common.CHUNK_ELEMENTS, _gemm.FORCE_ORIENTATION = saved


ROUNDING_MULTIPLE = 32


def rounding_bound(tensor, T, I, H, m, signal):
    """The largest |fast - reference| that rounding alone explains, for one float64 tensor.

    Both paths evaluate the same formulas; they differ in the order of GEMM sums (all steps at once or
    step by step), in the grouping of a few products (the LSTM backward's forward-known factors) and in
    the order of the weight-gradient sum over steps. Each step's pre-activation is a dot product of
    I + H + 2 terms, each bounded by m * max(m * signal, |value|) where m = max(1, |x|, |W|, |b|, |h0|)
    is the scale of the inputs, signal is 1 for forward quantities and max(|dout|, |dstate_n|) for
    gradients, and |value| is the tensor's own magnitude (a relu RNN's states grow with it); a dot
    product of k terms is off by at most k u sum|terms| (u = 2^-53), a step adds about 8 elementwise
    roundings, and T steps add their errors up. So

        |fast - reference| <= C * u * T (I + H + 8) * m * max(m * signal, |value|),

    C = 32. Measured worst C needed: 5.5 over 48 000 random configurations (T <= 8, H <= 7, weights
    up to 3 standard deviations of 3; ``python benchmarks/fast_path_accuracy.py``). A relative 1e-12
    was the wrong test: through a saturated gate, 1 - n^2 keeps only its absolute accuracy (u), so a
    gradient of 1e-7 from an O(1) signal is right to 1e-16 absolute and 1e-9 relative in both paths.
    """
    u = np.finfo(np.float64).eps / 2
    return ROUNDING_MULTIPLE * u * T * (I + H + 8) * m * max(m * signal, float(np.abs(tensor).max(initial=0.0)))


@settings(max_examples=examples(60))
@given(cell=st.sampled_from(list(CELLS)), T=st.integers(1, 8), B=st.integers(1, 5), I=st.integers(1, 6),
       H=st.integers(1, 7), bias=st.booleans(), reverse=st.booleans(), padded=st.booleans(),
       seed=st.integers(0, 2**31), scale=st.floats(0.1, 3.0), threads=st.sampled_from([1, 2, 3]),
       chunk=st.sampled_from([1, 40, 1 << 18]), orientation=st.sampled_from([None, True, False]))
def test_fast_path_matches_reference(cell, T, B, I, H, bias, reverse, padded, seed, scale, threads, chunk,
                                     orientation):
    """Also with the batch split into row blocks on threads, the LSTM backward's time runs of 1..T steps, and the
    recurrent GEMM in either orientation."""
    params, x, state, mask, dout, dstate = random_sequence_case(seed, cell, T, B, I, H, bias=bias, padded=padded,
                                                               scale=scale)
    with forced_blocks(threads, chunk, orientation):
        out_f, st_f, cache_f = sequence_forward(cell, x, state, params, reverse=reverse, mask=mask)
        dx_f, d0_f, dp_f = sequence_backward(cell, dout, dstate, cache_f)
    out_r, st_r, cache_r = reference_forward(cell, x, state, params, reverse=reverse, mask=mask)
    dx_r, d0_r, dp_r = reference_backward(cell, dout, dstate, cache_r)
    assert set(dp_f) == set(dp_r)
    m = max([1.0, np.abs(x).max()] + [np.abs(v).max() for v in params.values() if v is not None]
            + [np.abs(s).max() for s in state])
    signal = max([np.abs(dout).max()] + [np.abs(d).max() for d in dstate])
    forward = [("out", out_f, out_r), *((f"state{k}", a, b) for k, (a, b) in enumerate(zip(st_f, st_r)))]
    backward = [("dx", dx_f, dx_r), *((f"dstate{k}", a, b) for k, (a, b) in enumerate(zip(d0_f, d0_r))),
                *((k, dp_f[k], dp_r[k]) for k in dp_r)]
    for (name, fast, ref), sig in [(f, 1.0) for f in forward] + [(b, signal) for b in backward]:
        diff = float(np.abs(fast - ref).max(initial=0.0))
        bound = rounding_bound(ref, T, I, H, m, sig)
        assert diff <= bound, f"{name}: |fast - reference| {diff:.3g} > bound {bound:.3g}"


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    for cell in CELLS:
        params = {name: rng.standard_normal(shape).astype("float32")
                  for name, shape in CELLS[cell].param_shapes(3, 4).items()}
        x = rng.standard_normal((5, 2, 3)).astype("float32")
        state = tuple(np.zeros((2, 4), "float32") for _ in range(CELLS[cell].num_states))
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


@pytest.mark.filterwarnings("error")
def test_saturated_gates_quiet_on_worker_threads():
    """NumPy's error state is per thread: every block must silence exp's harmless overflow itself."""
    rng = np.random.default_rng(1)
    for cell in CELLS:
        params = {name: rng.standard_normal(shape) for name, shape in CELLS[cell].param_shapes(1, 4).items()}
        params["weight_ih"] = np.full(params["weight_ih"].shape, 1e4)
        x = np.array([[[1.0]] * 6, [[-1.0]] * 6])
        state = tuple(np.zeros((6, 4)) for _ in range(CELLS[cell].num_states))
        with forced_blocks(3):
            out, _, cache = sequence_forward(cell, x, state, params)
            dx, _, _ = sequence_backward(cell, np.ones_like(out), None, cache)
        assert np.isfinite(out).all() and np.isfinite(dx).all()


def test_blocks_and_split_cover_every_index_once():
    for count in (1, 2, 5, 17):
        for parts in (1, 2, 3, 40):
            pieces = _parallel.split(count, parts)
            assert len(pieces) == min(parts, count)
            assert np.concatenate([np.arange(count)[p] for p in pieces]).tolist() == list(range(count))
    with forced_blocks(2):
        assert len(_parallel.blocks(np, 10, 1)) == 2
    _parallel.set_num_threads(4)
    try:
        big = _parallel.MIN_BLOCK_ELEMENTS
        assert len(_parallel.blocks(np, 1, big)) == 1  # one row cannot be split
        assert len(_parallel.blocks(np, 8, big // 8)) == 1  # too little work per block
        assert len(_parallel.blocks(np, 8, big)) == 4
    finally:
        _parallel.set_num_threads(None)


def test_num_threads_setting_and_environment():
    with pytest.raises(ValueError, match="positive integer"):
        _parallel.set_num_threads(0)
    with pytest.raises(ValueError, match="positive integer"):
        _parallel.set_num_threads(True)
    with mock.patch.dict(os.environ, {"RNN_SCRATCH_NUM_THREADS": "3"}):
        assert _parallel.get_num_threads() == 3
        rnn_scratch.set_num_threads(1)
        assert rnn_scratch.get_num_threads() == 1
        rnn_scratch.set_num_threads(None)
    for bad in ("0", "two"):
        with mock.patch.dict(os.environ, {"RNN_SCRATCH_NUM_THREADS": bad}):
            with pytest.raises(ValueError, match="RNN_SCRATCH_NUM_THREADS"):
                _parallel.get_num_threads()


def test_an_error_in_any_block_is_raised_after_all_blocks_finish():
    done = []

    def work(rows):
        if rows.start > 0:
            raise RuntimeError(f"block {rows.start}")
        done.append(rows)

    with pytest.raises(RuntimeError, match="block"):
        _parallel.for_each_block(work, _parallel.split(9, 3))
    assert done == [slice(0, 3)]


def test_blas_threads_restored_after_kernels_on_two_python_threads():
    """Two user threads running threaded kernels at once must leave BLAS at its own thread count (a subprocess:
    the count is process-wide). Before the shared, counted limit it stayed at 1 in 5 of 5 runs."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import threading
        import numpy as np
        from threadpoolctl import threadpool_info
        import rnn_scratch as rs
        from rnn_scratch.functional import _parallel

        def blas():
            return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

        _parallel.set_num_threads(2)
        before = blas()
        def work(seed):
            layer = rs.LSTM(5, 64, seed=seed)
            x = np.random.default_rng(seed).standard_normal((5, 700, 5)).astype("float32")
            for _ in range(3):
                out, _ = layer(x)
                layer.backward(np.ones_like(out))
        for trial in range(5):
            threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            assert blas() == before, (trial, before, blas())
        with _parallel.batch_blocks(np, 1000, 1000) as blocks:  # and the limit still acts
            assert blocks.parts == 2 and blas() == [1] * len(before), blas()
        print("ok", before)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_examples_follow_the_loaded_profile():
    """examples() scales with whatever profile is loaded: HYPOTHESIS_PROFILE or pytest's --hypothesis-profile."""
    from hypothesis import settings

    from rnn_scratch.testing import examples as budget

    current = settings._current_profile
    try:
        settings.load_profile("dev")
        assert budget(4) == 40
        settings.load_profile("ci")
        assert budget(4) == 4
    finally:
        settings.load_profile(current)
