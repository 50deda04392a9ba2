"""Where the time goes on the GPU, and where the GPU starts to win: the device run's measurements.

- :func:`crossover`: forward+backward time against the batch size (at H=256) and against the hidden size
  (at B=64), on NumPy (the machine's CPU, all its cores), CuPy and cuDNN, for each cell; the crossover is
  the smallest size from which the GPU is faster.
- :func:`launch_floor`: the time of an empty kernel launch, host and device; a step's floor is its number
  of launches times that (the fused loop launches 2 per step: one GEMM and one kernel).
- :func:`fused_modes`: our CuPy LSTM/GRU/RNN unfused, fused, and fused with a CUDA graph, per step, next to
  cuDNN, with what each mode actually ran (a graph falls back to the plain loop where capture fails).

All of this needs CuPy and a GPU; :func:`gpu_reason` says why not where there is none.
"""

from __future__ import annotations

import numpy as np

from . import backend as be
from .benchmark import spread, time_cases, torch_cells

BATCHES = (1, 4, 16, 64, 256, 1024)
HIDDENS = (32, 128, 512, 2048)
STEPS = 50


def gpu_reason():
    """None when the GPU parts can run, else why not."""
    if not be.cupy_available():
        return f"no usable GPU: {be.cupy_unavailable_reason()}"
    try:
        import torch
    except ImportError:
        return "torch is not importable (needed for the cuDNN columns)"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


def crossover(cells=None, backends=("numpy", "cupy", "torch_cuda"), batches=BATCHES,
              hiddens=HIDDENS, T=STEPS, repeat=5, dtype="float32"):
    """Rows {cell, axis ("batch" or "hidden"), B, H, times {backend: spread}} and, per cell and axis, the
    crossover: the smallest size from which each GPU backend beats NumPy. ``cells``: default the cells torch
    has (:func:`~rnn_scratch.benchmark.torch_cells`)."""
    cells = torch_cells() if cells is None else cells
    rows = []
    for cell in cells:
        for axis, sizes in (("batch", batches), ("hidden", hiddens)):
            for size in sizes:
                B, H = (size, 256) if axis == "batch" else (64, size)
                timed = time_cases(cell, T, B, H, H, list(backends), dtype, repeat=repeat, warmup=1, min_time=0.0)
                rows.append({"cell": cell, "axis": axis, "T": T, "B": B, "I": H, "H": H,
                             "times": {b: t["forward_backward"] for b, t in timed.items()}})
    points = {}
    for cell in cells:
        for axis in ("batch", "hidden"):
            series = [r for r in rows if r["cell"] == cell and r["axis"] == axis]
            for gpu in [b for b in backends if b != "numpy"]:
                wins = [r for r in series if r["times"][gpu]["median_s"] < r["times"]["numpy"]["median_s"]]
                first = wins[0]["B" if axis == "batch" else "H"] if wins else None
                points[f"{cell}/{axis}/{gpu}"] = first
    return {"rows": rows, "crossover": points}


def plot_crossover(study, path):
    from .plots import new_figure, save_figure

    cells = sorted({r["cell"] for r in study["rows"]})
    fig, axes = new_figure(2, len(cells), figsize=(4.3 * len(cells), 7), squeeze=False)
    for col, cell in enumerate(cells):
        for row, axis in enumerate(("batch", "hidden")):
            ax = axes[row][col]
            series = [r for r in study["rows"] if r["cell"] == cell and r["axis"] == axis]
            xs = [r["B" if axis == "batch" else "H"] for r in series]
            for backend in series[0]["times"]:
                ax.loglog(xs, [r["times"][backend]["median_s"] * 1e3 for r in series], marker="o", label=backend)
            for gpu in [b for b in series[0]["times"] if b != "numpy"]:
                first = study["crossover"].get(f"{cell}/{axis}/{gpu}")
                if first is not None:
                    ax.axvline(first, color="0.6", lw=0.8, ls=":")
            ax.set_xlabel("batch size B (H=256)" if axis == "batch" else "hidden size H (B=64)")
            ax.set_ylabel("ms, forward+backward")
            ax.set_title(f"{cell}: GPU vs CPU by {axis} size (T={series[0]['T']})", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    return save_figure(fig, path)


_EMPTY = r'extern "C" __global__ void empty_kernel() {}'


def launch_floor(repeat=2000):
    """{"device": spread, "host": spread} of one empty kernel launch (seconds)."""
    cp = be.get_xp("cupy")
    kernel = cp.RawKernel(_EMPTY, "empty_kernel")
    result = be.cupy_benchmark(lambda: kernel((1,), (1,), ()), n_repeat=repeat, n_warmup=50)
    return {"device": spread(result["gpu_times"]), "host": spread(result["cpu_times"])}


def fused_modes(cells=None, T=100, B=64, I=256, H=512, repeat=20, dtype="float32"):
    """Per cell: forward and forward+backward per step for CuPy unfused, fused, fused + CUDA graph, and cuDNN;
    with the graph mode's actual outcome ("replayed", or "plain: <why>") and the fused launch floor. ``cells``:
    default the cells torch has that have a fused kernel."""
    from .functional import _cuda, get_cell
    from .layers import make_layer

    cells = [c for c in torch_cells() if get_cell(c).kernel is not None] if cells is None else cells
    floor = launch_floor()
    out = {"T": T, "B": B, "I": I, "H": H, "launch_floor": floor, "launches_per_step_fused": 2, "cells": {}}
    for cell in cells:
        cp = be.get_xp("cupy")
        layer = make_layer(cell, I, H, dtype=dtype, backend="cupy", seed=0, check_finite=False)
        layer.eval()
        rng = np.random.default_rng(0)
        x = be.to_backend(rng.standard_normal((T, B, I)).astype(dtype), "cupy")
        dout = be.to_backend(rng.standard_normal((T, B, H)).astype(dtype), "cupy")
        modes = {}
        for mode, fused, graphs in (("unfused", False, False), ("fused", True, False), ("fused_graph", True, True)):
            be.set_fused(fused)
            be.set_cuda_graphs(graphs)
            try:
                fwd = be.cupy_benchmark(lambda layer=layer, x=x: layer(x), repeat, 3)
                graph_forward = _cuda.GRAPHS.last if graphs else None

                def fb(layer=layer, x=x, dout=dout):
                    layer(x)
                    layer.backward(dout)

                both = be.cupy_benchmark(fb, repeat, 3)
            finally:
                be.set_fused(None)
                be.set_cuda_graphs(None)
            modes[mode] = {"forward": {"device": spread(fwd["gpu_times"]), "host": spread(fwd["cpu_times"])},
                           "forward_backward": {"device": spread(both["gpu_times"]),
                                                "host": spread(both["cpu_times"])},
                           "forward_per_step_us": float(np.median(fwd["gpu_times"])) / T * 1e6,
                           "graph": graph_forward}
        timed = time_cases(cell, T, B, I, H, ["torch_cuda"], dtype, repeat=repeat, warmup=3, min_time=0.0)
        modes["cudnn"] = {"forward": timed["torch_cuda"]["forward"],
                          "forward_backward": timed["torch_cuda"]["forward_backward"],
                          "forward_per_step_us": timed["torch_cuda"]["forward"]["median_s"] / T * 1e6}
        modes["fused_floor_per_step_us"] = 2 * floor["device"]["median_s"] * 1e6
        cp.cuda.Device().synchronize()
        out["cells"][cell] = modes
    return out
