"""The fused CUDA step kernels: they compile (NVRTC, no GPU needed), their time loops are right (run here with a
NumPy emulation of each kernel, written from its CUDA source), and on a GPU they match the reference."""

import contextlib
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_scratch import backend as be
from rnn_scratch.functional import CELLS, reference_backward, reference_forward, sequence_backward, sequence_forward
from rnn_scratch.testing import examples
from rnn_scratch.testing.cases import random_sequence_case

KERNELS = {cell.kernel.path: cell.kernel for cell in CELLS.values() if cell.kernel is not None}  # one per file
FUSED = [name for name, cell in CELLS.items() if cell.kernel is not None]


def _nvrtc_reason():
    try:
        be.nvrtc_compile("extern \"C\" __global__ void k() {}", "k", "float32")
    except be.BackendUnavailableError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_nvrtc_reason() is not None, reason=f"NVRTC not available: {_nvrtc_reason()}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("path", sorted(KERNELS), ids=lambda p: p.rsplit("/", 1)[-1])
def test_kernels_compile_with_nvrtc(path, dtype):
    kernel = KERNELS[path]
    for name in (kernel.forward, kernel.backward):
        log = be.nvrtc_compile(kernel.source, name, dtype)
        assert log == "", f"{name} ({dtype}) does not compile:\n{log}"


# -- the kernels, emulated in NumPy exactly as their CUDA source reads (one thread per element) ----------------
def _sig_neg(a):
    return 1 / (1 + np.exp(a))


def lstm_forward_step(gates, a_hh, h_prev, c_prev, h_new, c_new, tanh_c, valid, has_mask, B, H):
    g4, r4 = gates.reshape(B, 4, H), a_hh.reshape(B, 4, H)
    o, i, f = (_sig_neg(g4[:, k] + r4[:, k]) for k in range(3))
    g = np.tanh(g4[:, 3] + r4[:, 3])
    c = f * c_prev + i * g
    tc = np.tanh(c)
    g4[:, 0], g4[:, 1], g4[:, 2], g4[:, 3] = o, i, f, g
    tanh_c[...] = tc
    keep = np.ones((B, 1), bool) if not has_mask else valid.reshape(B, 1)
    c_new[...] = np.where(keep, c, c_prev)
    h_new[...] = np.where(keep, o * tc, h_prev)


def lstm_backward_step(gates, h_prev, c_prev, tanh_c, dout_t, dh_carry, dh_gemm, dc, dgates, valid, has_mask, has_dout,
                       B, H):
    g4, da = gates.reshape(B, 4, H), dgates.reshape(B, 4, H)
    dh = dh_carry + dh_gemm + (dout_t if has_dout else 0)
    keep = np.ones((B, 1), bool) if not has_mask else valid.reshape(B, 1)
    o, i, f, g, tc = g4[:, 0], g4[:, 1], g4[:, 2], g4[:, 3], tanh_c
    dc_t = dc + dh * o * (1 - tc * tc)
    parts = [dh * tc * o * (1 - o), dc_t * g * i * (1 - i), dc_t * c_prev * f * (1 - f), dc_t * i * (1 - g * g)]
    for k in range(4):
        da[:, k] = np.where(keep, parts[k], 0)
    dc[...] = np.where(keep, dc_t * f, dc)
    dh_carry[...] = np.where(keep, 0, dh)


def gru_forward_step(gates, a_hh, b_hn, h_prev, h_new, m, valid, has_mask, has_bias, B, H):
    g3, r3 = gates.reshape(B, 3, H), a_hh.reshape(B, 3, H)
    r, z = _sig_neg(g3[:, 0] + r3[:, 0]), _sig_neg(g3[:, 1] + r3[:, 1])
    m_t = r3[:, 2] + (b_hn if has_bias else 0)
    n = np.tanh(g3[:, 2] + r * m_t)
    g3[:, 0], g3[:, 1], g3[:, 2] = r, z, n
    m[...] = m_t
    keep = np.ones((B, 1), bool) if not has_mask else valid.reshape(B, 1)
    h_new[...] = np.where(keep, n + z * (h_prev - n), h_prev)


def gru_backward_step(gates, h_prev, m, dout_t, dh_carry, dh_gemm, dgates_x, dgates_h, valid, has_mask, has_dout,
                      B, H):
    g3, dgx, dgh = gates.reshape(B, 3, H), dgates_x.reshape(B, 3, H), dgates_h.reshape(B, 3, H)
    dh = dh_carry + dh_gemm + (dout_t if has_dout else 0)
    keep = np.ones((B, 1), bool) if not has_mask else valid.reshape(B, 1)
    r, z, n = g3[:, 0], g3[:, 1], g3[:, 2]
    da_n = dh * (1 - z) * (1 - n * n)
    da_r = da_n * m * r * (1 - r)
    da_z = dh * (h_prev - n) * z * (1 - z)
    for k, (x_part, h_part) in enumerate(((da_r, da_r), (da_z, da_z), (da_n, da_n * r))):
        dgx[:, k] = np.where(keep, x_part, 0)
        dgh[:, k] = np.where(keep, h_part, 0)
    dh_carry[...] = np.where(keep, dh * z, dh)


def rnn_forward_step(gates, a_hh, h_prev, h_new, valid, has_mask, relu, B, H):
    a = gates + a_hh
    h = np.maximum(a, 0) if relu else np.tanh(a)
    gates[...] = h
    keep = np.ones((B, 1), bool) if not has_mask else valid.reshape(B, 1)
    h_new[...] = np.where(keep, h, h_prev)


def rnn_backward_step(gates, h_prev, dout_t, dh_carry, dh_gemm, da, valid, has_mask, has_dout, relu, B, H):
    dh = dh_carry + dh_gemm + (dout_t if has_dout else 0)
    keep = np.ones((B, 1), bool) if not has_mask else valid.reshape(B, 1)
    da[...] = np.where(keep, dh * ((gates > 0) if relu else 1 - gates * gates), 0)
    dh_carry[...] = np.where(keep, 0, dh)


EMULATED = {f.__name__: f for f in (lstm_forward_step, lstm_backward_step, gru_forward_step, gru_backward_step,
                                    rnn_forward_step, rnn_backward_step)}


@contextlib.contextmanager
def emulated_kernels():
    """The fused path on NumPy: each kernel launch runs its NumPy emulation on the same arrays."""
    def kernel(source, name, dtype):
        return EMULATED[name]

    def launch(kernel, n, args, block=256):
        kernel(*(a if isinstance(a, np.ndarray) else int(a) for a in args))

    with mock.patch.multiple(be, cuda_kernel=kernel, launch=launch, fused_enabled=lambda xp: True):
        yield


@settings(max_examples=examples(40))
@given(cell=st.sampled_from(FUSED), T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 4),
       H=st.integers(1, 5), bias=st.booleans(), reverse=st.booleans(), padded=st.booleans(), with_dout=st.booleans(),
       seed=st.integers(0, 2**31))
def test_fused_time_loops_match_the_reference(cell, T, B, I, H, bias, reverse, padded, with_dout, seed):
    """The fused loops' structure (the order of launches, the dh carried through dh_gemm, padding) on emulated
    kernels, against the readable step loop (float64)."""
    params, x, state, mask, dout, dstate = random_sequence_case(seed, cell, T, B, I, H, bias=bias, padded=padded)
    dout = dout if with_dout else None
    with np.errstate(over="ignore"), emulated_kernels():
        out_f, st_f, cache = sequence_forward(cell, x, state, params, reverse=reverse, mask=mask)
        dx_f, d0_f, dp_f = sequence_backward(cell, dout, dstate, cache)
        out_r, st_r, cache_r = reference_forward(cell, x, state, params, reverse=reverse, mask=mask)
        dx_r, d0_r, dp_r = reference_backward(cell, dout, dstate, cache_r)
    pairs = [(out_f, out_r), (dx_f, dx_r), *zip(st_f, st_r), *zip(d0_f, d0_r), *((dp_f[k], dp_r[k]) for k in dp_r)]
    for a, b in pairs:
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12), np.abs(a - b).max()


# -- on a GPU --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graph"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("cell", FUSED)
def test_fused_on_the_gpu_matches_the_unfused_path(cell, dtype, tol, graphs):
    """Fused (and graph-replayed) kernels against the unfused CuPy path and the NumPy path, with padding, reverse."""
    from rnn_scratch.layers import make_layer

    rng = np.random.default_rng(0)
    kw = dict(num_layers=2, bidirectional=True, dtype=dtype, seed=0, check_finite=False)
    cpu, gpu = make_layer(cell, 3, 8, backend="numpy", **kw), make_layer(cell, 3, 8, backend="cupy", **kw)
    gpu.load_state_dict(cpu.state_dict())
    x = rng.standard_normal((9, 5, 3)).astype(dtype)
    lengths = np.array([9, 4, 7, 1, 9])
    dout = rng.standard_normal((9, 5, 16)).astype(dtype)
    out_c, _ = cpu(x, lengths=lengths)
    dx_c, _ = cpu.backward(dout)
    be.set_fused(True)
    be.set_cuda_graphs(graphs)
    try:
        for _ in range(3 if graphs else 1):  # capture, then replays
            gpu.zero_grad()
            out_g, _ = gpu(be.to_backend(x, "cupy"), lengths=lengths)
            dx_g, _ = gpu.backward(be.to_backend(dout, "cupy"))
    finally:
        be.set_fused(None)
        be.set_cuda_graphs(None)
    from rnn_scratch.gradcheck import relative_error

    assert relative_error(be.to_numpy(out_g), out_c) < tol
    assert relative_error(be.to_numpy(dx_g), dx_c) < tol
    for k in cpu.grads:
        assert relative_error(be.to_numpy(gpu.grads[k]), cpu.grads[k]) < tol, k


@pytest.mark.slow
def test_the_device_script_runs_here_with_its_gpu_parts_skipped(tmp_path):
    """benchmarks/gpu_check.sh on a machine without a GPU: exit 0, the reason in its log, the harness checked."""
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if be.cupy_available():
        pytest.skip("a GPU is usable here: the device run is the real one")
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=root, env={**os.environ, "OUT": str(tmp_path),
                                                                          "PYTHON": __import__("sys").executable},
                       capture_output=True, text=True, timeout=600)
    log = (tmp_path / "gpu_check.log").read_text()
    assert r.returncode == 0, log
    assert "GPU parts: no usable GPU" in log and "GPU parts skipped" in log
    assert (tmp_path / "bench_gpu_check_cpu.json").exists() and len(list(tmp_path.iterdir())) <= 8
