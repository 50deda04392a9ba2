"""CuPy backend checks; skipped with the reason where no GPU is usable (see conftest).

The whole suite also runs on the GPU with RNN_SCRATCH_BACKEND=cupy (parity tests then compare
against torch on CUDA)."""

import numpy as np
import pytest

import rnn_scratch as rs
from rnn_scratch.backend import to_backend, to_numpy
from rnn_scratch.functional import CELLS
from rnn_scratch.gradcheck import relative_error
from rnn_scratch.layers import make_layer

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_cupy_matches_numpy(cell, dtype, tol):
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, dtype=dtype, seed=0)
    cpu, gpu = make_layer(cell, 3, 5, backend="numpy", **kw), make_layer(cell, 3, 5, backend="cupy", **kw)
    gpu.load_state_dict(cpu.state_dict())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7, 3)).astype(dtype)
    lengths = np.array([7, 3, 5, 1])
    out_c, _ = cpu(x, lengths=lengths)
    out_g, _ = gpu(to_backend(x, "cupy"), lengths=lengths)
    dout = rng.standard_normal(out_c.shape).astype(dtype)
    dx_c, _ = cpu.backward(dout)
    dx_g, _ = gpu.backward(to_backend(dout, "cupy"))
    assert relative_error(to_numpy(out_g), out_c) < tol
    assert relative_error(to_numpy(dx_g), dx_c) < tol
    for k in cpu.grads:
        assert relative_error(to_numpy(gpu.grads[k]), cpu.grads[k]) < tol, k


def test_wrong_device_is_an_error():
    gpu = rs.GRU(2, 3, backend="cupy")
    with pytest.raises(TypeError, match="x is a numpy array but this layer runs on cupy"):
        gpu(np.zeros((3, 1, 2), dtype="float32"))
    cpu = rs.GRU(2, 3, backend="numpy")
    with pytest.raises(TypeError, match="x is a cupy array but this layer runs on numpy"):
        cpu(to_backend(np.zeros((3, 1, 2), dtype="float32"), "cupy"))
