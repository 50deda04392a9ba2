"""The fused CUDA step kernels: they compile (NVRTC, no GPU needed) and on a GPU they match the unfused path.

Their own source runs on the CPU, through the real fused time loops, in ``tests/test_kernels_on_cpu.py``."""

import numpy as np
import pytest

from rnn_scratch import backend as be
from rnn_scratch.functional import CELLS

KERNELS = {cell.kernel.path: cell.kernel for cell in CELLS.values() if cell.kernel is not None}  # one per file


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


# -- on a GPU --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graph"])
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("cell", list(CELLS))
def test_fused_on_the_gpu_matches_the_unfused_path(cell, dtype, tol, graphs):
    """Fused (and graph-replayed) kernels against the unfused CuPy path and the NumPy path, with padding, reverse;
    a cell without a kernel runs its unfused CuPy path here."""
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
