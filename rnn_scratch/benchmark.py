"""Timing the recurrent kernel: ours (NumPy, CuPy) side by side with PyTorch (CPU, CUDA/cuDNN).

For every cell and size: the median of repeated runs after warm-up of the forward pass and of
forward + backward. CPU times use ``time.perf_counter``; CuPy uses ``cupyx.profiler.benchmark``
(CUDA events) and torch CUDA uses ``torch.cuda.Event``; both synchronise the device.
Ratios ("ours / torch") are only meaningful within one run on one machine.

FLOPs counted for GFLOP/s (G gates, multiply-add = 2): forward 2 T B G H (I + H), backward twice
that (dx and dh, dW_ih and dW_hh); the pointwise gate math is not counted.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time

import numpy as np

from . import backend as be
from .functional import TorchModule, canonical_cell_name, cell_names, get_cell
from .progress import progress

GRID = {  # name: (T, B, I, H)
    "seed": (20, 1000, 1, 50),
    "tiny": (20, 1, 1, 50),
    "mid": (100, 32, 128, 256),
    "large": (100, 64, 256, 512),
    "xl": (50, 128, 512, 1024),
}
SWEEP_H = (64, 128, 256, 512, 1024, 2048)  # at T=100, B=64, I=H


def default_cells():
    """The cells timed by default: every registered cell but the variants of one torch class with other arguments
    (rnn_relu times like rnn_tanh)."""
    seen, cells = set(), []
    for name in cell_names():
        ref = get_cell(name).reference
        key = ref.name if isinstance(ref, TorchModule) else name
        if key not in seen:
            seen.add(key)
            cells.append(name)
    return tuple(cells)


def torch_cells():
    """Of :func:`default_cells`, those torch has a class for (what a comparison with cuDNN can time)."""
    return tuple(c for c in default_cells() if isinstance(get_cell(c).reference, TorchModule))


def torch_layer(cell, input_size, hidden_size, **kwargs):
    """The ``torch.nn`` module that computes a cell (its record's :class:`~rnn_scratch.functional.TorchModule`),
    or None when torch has no such class."""
    import torch

    ref = get_cell(cell).reference
    if not isinstance(ref, TorchModule):
        return None
    return getattr(torch.nn, ref.name)(input_size, hidden_size, **ref.kwargs, **kwargs)


def flops(cell, T, B, I, H, backward=False):
    fwd = 2.0 * T * B * get_cell(cell).num_gates * H * (I + H)
    return fwd * (3 if backward else 1)


SETTLE_S = 0.2  # pause at each change of backend: lets the BLAS/OpenMP workers of the last one go idle
BACKENDS = ("numpy", "cupy", "torch_cpu", "torch_cuda")
OURS = ("numpy", "cupy")


def spread(samples):
    """{median_s, min_s, max_s, n} of a list of seconds."""
    a = np.asarray(samples, dtype=float)
    return {"median_s": float(np.median(a)), "min_s": float(a.min()), "max_s": float(a.max()), "n": int(a.size)}


def interleaved_times(fns, repeat, warmup, min_time=0.0, block=2):
    """Every timed sample (seconds) of each of ``fns`` (name -> callable), taking turns in blocks of ``block``.

    Taking turns puts every backend under the same machine conditions: on a shared (virtual)
    machine the speed drifts by tens of percent within seconds, and one long run per backend
    would turn that drift into a false ratio. At each change of backend: a pause (``SETTLE_S``)
    and one untimed call. After a multi-threaded GEMM, OpenBLAS's worker threads spin for about
    2^28 clock ticks (~0.1 s) and slow whatever runs next (measured: torch's RNN on the seed
    size 5x slower straight after a NumPy call); the untimed call re-warms caches and threads.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    start = time.perf_counter()

    def fewest():
        return min(len(ts) for ts in times.values())

    while fewest() < repeat or (time.perf_counter() - start < min_time and fewest() < 10 * repeat):
        for name, fn in fns.items():
            if len(fns) > 1:
                time.sleep(SETTLE_S)
                fn()
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def interleaved_median_times(fns, repeat, warmup, min_time=0.0, block=2):
    """Median seconds of each of ``fns``, taking turns (:func:`interleaved_times`)."""
    return {name: float(np.median(ts)) for name, ts in interleaved_times(fns, repeat, warmup, min_time,
                                                                          block).items()}


def _ours(cell, T, B, I, H, backend, dtype, seed=0):
    from .layers import make_layer

    layer = make_layer(cell, I, H, dtype=dtype, backend=backend, seed=seed, check_finite=False)
    layer.eval()
    rng = np.random.default_rng(seed)
    x = be.to_backend(rng.standard_normal((T, B, I)).astype(dtype), backend)
    dout = be.to_backend(rng.standard_normal((T, B, H)).astype(dtype), backend)

    def fwd():
        layer(x)

    def fwd_bwd():
        layer(x)
        layer.backward(dout)

    return fwd, fwd_bwd


def _torch(cell, T, B, I, H, device, dtype, seed=0):
    import torch

    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)
    module = torch_layer(cell, I, H).to(device=device, dtype=tdtype)
    x = torch.randn(T, B, I, device=device, dtype=tdtype)
    xg = x.clone().requires_grad_(True)
    dout = torch.randn(T, B, H, device=device, dtype=tdtype)

    def fwd():
        with torch.no_grad():
            module(x)

    def fwd_bwd():
        module.zero_grad(set_to_none=True)
        out, _ = module(xg)
        out.backward(dout)

    return fwd, fwd_bwd


def _time_torch_cuda(fn, repeat, warmup):
    """{"device": spread of CUDA-event times, "host": spread of host wall times to the end of the work}."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    device, host = [], []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        host.append(time.perf_counter() - t0)
        device.append(start.elapsed_time(end) / 1e3)
    return {"device": spread(device), "host": spread(host)}


def _time_cupy(fn, repeat, warmup):
    """{"device": spread of GPU times, "host": spread of CPU times} from ``cupyx.profiler.benchmark``."""
    result = be.cupy_benchmark(fn, repeat, warmup)
    return {"device": spread(result["gpu_times"]), "host": spread(result["cpu_times"])}


def available_backends():
    found = ["numpy"]
    if be.cupy_available():
        found.append("cupy")
    try:
        import torch

        found.append("torch_cpu")
        if torch.cuda.is_available():
            found.append("torch_cuda")
    except ImportError:
        pass
    return found


def _case_fns(cell, T, B, I, H, backend, dtype, seed=0):
    if backend in ("numpy", "cupy"):
        return _ours(cell, T, B, I, H, backend, dtype, seed)
    return _torch(cell, T, B, I, H, "cuda" if backend == "torch_cuda" else "cpu", dtype, seed)


def time_cases(cell, T, B, I, H, backends, dtype="float32", repeat=7, warmup=2, min_time=0.5, seed=0):
    """{backend: {"forward": timing, "forward_backward": timing}}; a timing is a :func:`spread` dict, and for
    the GPU backends also has "host": the spread of host (CPU) times beside the device times.

    CPU backends (numpy, torch_cpu) take turns (see :func:`interleaved_times`); GPU backends are timed
    on the device with synchronisation (cupyx.profiler.benchmark, CUDA events).
    """
    fns = {backend: _case_fns(cell, T, B, I, H, backend, dtype, seed) for backend in backends}
    result = {}
    cpu = [b for b in backends if b in ("numpy", "torch_cpu")]
    if cpu:
        fwd = interleaved_times({b: fns[b][0] for b in cpu}, repeat, warmup, min_time)
        fb = interleaved_times({b: fns[b][1] for b in cpu}, repeat, warmup, min_time)
        result.update({b: {"forward": spread(fwd[b]), "forward_backward": spread(fb[b])} for b in cpu})
    for backend in backends:
        timer = {"cupy": _time_cupy, "torch_cuda": _time_torch_cuda}.get(backend)
        if timer is not None:
            timings = {}
            for mode, fn in zip(("forward", "forward_backward"), fns[backend]):
                t = timer(fn, repeat, warmup)
                timings[mode] = {**t["device"], "host": t["host"]}
            result[backend] = timings
    return result


def gemm_rate(n=2048, dtype="float32", repeat=10):
    """The machine's measured NumPy GEMM rate in GFLOP/s (n x n x n), the ceiling for the kernel."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
    t = interleaved_median_times({"gemm": lambda: a @ b}, repeat, 2, block=1)["gemm"]
    return 2.0 * n**3 / t / 1e9


def blas_info():
    """The BLAS libraries loaded (threadpoolctl): name, version, threads and the kernel ("architecture") that runs,
    with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when set (they select an older, slower kernel)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    libs = [{k: lib.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "threading_layer",
                                     "filepath")} for lib in threadpool_info() if lib.get("user_api") == "blas"]
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return {"libraries": libs, "env": env}


def gpu_settings():
    """What decides GPU numbers besides the code: TF32 on each side, library versions, the device and driver."""
    info = {"cupy_tf32_env": os.environ.get("CUPY_TF32", "0")}
    try:
        import torch

        if torch.cuda.is_available():
            info.update(torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        torch_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                        torch_cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                        torch_device=torch.cuda.get_device_name())
    except ImportError:
        pass
    if be.cupy_available():
        cp = be.get_xp("cupy")
        info.update(cupy=cp.__version__, gpu=be.device_name(), cuda_runtime=cp.cuda.runtime.runtimeGetVersion(),
                    cuda_driver=cp.cuda.runtime.driverGetVersion())
    return info


def set_tf32(enabled):
    """TF32 for torch's float32 GEMMs and cuDNN on or off (CuPy's is the CUPY_TF32 environment variable, read
    when CuPy starts: a run records it, see :func:`gpu_settings`)."""
    try:
        import torch
    except ImportError:
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def machine_info():
    info = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "numpy": np.__version__, "date": datetime.datetime.now().isoformat()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = models[0] if models else None
    except OSError:
        info["cpu"] = None
    info["blas_threads_env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                "MKL_NUM_THREADS", "RNN_SCRATCH_NUM_THREADS")
                                if os.environ.get(k)}
    from .functional._parallel import get_num_threads

    info["rnn_scratch_threads"] = get_num_threads()
    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        info["numpy_blas"] = None
    info["blas"] = blas_info()
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    info["gpu_settings"] = gpu_settings()
    info["gpu"] = info["gpu_settings"].get("gpu")
    return info


def _row_times(cell, T, B, I, H, timing):
    """The JSON of one backend's timings: spreads, and the medians as the table reads them."""
    fwd, fb = timing["forward"]["median_s"], timing["forward_backward"]["median_s"]
    return {"forward_s": fwd, "forward_backward_s": fb, "forward_per_step_us": fwd / T * 1e6,
            "forward_backward_per_step_us": fb / T * 1e6,
            "forward_backward_gflops": flops(cell, T, B, I, H, True) / fb / 1e9,
            "forward": timing["forward"], "forward_backward": timing["forward_backward"]}


RATIOS = (("numpy", "torch_cpu"), ("cupy", "torch_cuda"), ("cupy", "numpy"), ("torch_cuda", "torch_cpu"))


def run(sizes=None, cells=None, backends=None, sweep_max=None, quick=False, dtype="float32", show_progress=True,
        repeat=None, seed=0, tf32=False, hidden_sizes=None):
    """Time every (cell, size, backend); returns the result dict that :func:`save` writes as JSON.

    ``cells``: default :func:`default_cells`; torch's backends time the cells torch has (the others' rows have
    no torch columns). ``sweep_max``: largest H of the hidden-size sweep (T=100, B=64, I=H; 0: none; default
    2048, quick 256). ``tf32``: torch's TF32 switches for this run (CuPy's: the CUPY_TF32 environment variable);
    recorded.
    """
    cells = default_cells() if cells is None else tuple(dict.fromkeys(canonical_cell_name(c) for c in cells))
    sizes = sizes or (["seed", "tiny", "mid"] if quick else list(GRID))
    backends = backends or available_backends()
    repeat, min_time, warmup = (repeat or 3, 0.05, 1) if quick else (repeat or 9, 0.5, 2)
    if sweep_max is None:
        sweep_max = 256 if quick else max(SWEEP_H)
    cases = [(cell, name, GRID[name]) for cell in cells for name in sizes]
    cases += [(cell, f"sweep_H{h}", (100, 64, h, h)) for cell in cells
              for h in (hidden_sizes or SWEEP_H) if h <= sweep_max]
    set_tf32(tf32)
    rows = []
    with progress(cases, desc="bench", disable=not show_progress) as bar:
        for cell, name, (T, B, I, H) in bar:
            row = {"cell": cell, "size": name, "T": T, "B": B, "I": I, "H": H, "dtype": dtype, "times": {}}
            here = [b for b in backends if b in OURS or isinstance(get_cell(cell).reference, TorchModule)]
            timed = time_cases(cell, T, B, I, H, here, dtype, repeat=repeat, warmup=warmup, min_time=min_time,
                               seed=seed)
            for backend in here:
                row["times"][backend] = _row_times(cell, T, B, I, H, timed[backend])
            for ours, ref in RATIOS:
                if ours in row["times"] and ref in row["times"]:
                    row[f"ratio_{ours}_over_{ref}"] = {
                        k: row["times"][ours][k] / row["times"][ref][k] for k in ("forward_s", "forward_backward_s")}
            rows.append(row)
            bar.set(case=f"{cell}/{name}")
    return {"machine": machine_info(), "gemm_gflops_float32": gemm_rate(1024 if quick else 2048),
            "backends": backends, "quick": quick, "seed": seed, "tf32": bool(tf32),
            "method": {"repeat": repeat, "warmup": warmup, "min_time_s": min_time,
                       "cpu": "backends take turns in blocks of 2 calls, a 0.2 s pause and one untimed call at "
                              "each change; medians of the samples (min and max beside them)",
                       "gpu": "cupyx.profiler.benchmark (CuPy) and CUDA events (torch) after warm-up, device "
                              "synchronised; device times and host times both kept"},
            "rows": rows}


def table(result):
    """Plain-text table: forward+backward ms per backend (forward in brackets) and our ratios."""
    backends = result["backends"]
    w = max([len(r["cell"]) + 1 for r in result["rows"]] + [9])
    head = f"{'cell':<{w}}{'size':<12}" + "".join(f"{b + ' ms':>16}" for b in backends)
    ratios = [f"ratio_{a}_over_{b}" for a, b in RATIOS if any(f"ratio_{a}_over_{b}" in r for r in result["rows"])]
    head += "".join(f"{k.replace('ratio_', '').replace('_over_', '/'):>20}" for k in ratios)
    lines = ["forward+backward (forward) median times", head, "-" * len(head)]
    for r in result["rows"]:
        line = f"{r['cell']:<{w}}{r['size']:<12}"
        for b in backends:
            t = r["times"].get(b)
            line += (f"{t['forward_backward_s'] * 1e3:>8.2f} ({t['forward_s'] * 1e3:.1f})" if t else "n/a").rjust(16)
        for k in ratios:
            v = r.get(k)
            line += (f"{v['forward_backward_s']:.2f} ({v['forward_s']:.2f})" if v else "-").rjust(20)
        lines.append(line)
    lines.append(f"measured float32 GEMM: {result['gemm_gflops_float32']:.1f} GFLOP/s")
    return "\n".join(lines)


def save(result, out_dir, name=None):
    os.makedirs(out_dir, exist_ok=True)
    tag = name or ("gpu" if result["machine"].get("gpu") else "cpu")
    path = os.path.join(out_dir, f"bench_{tag}.json")
    from .plots import write_text

    return write_text(path, json.dumps(result, indent=1))


def plot(result, out_dir):
    """Write the plots of a run: time vs hidden size for every backend timed (sweep rows), and the GPU's
    speed-up over the CPU where both a GPU and a CPU backend were timed. Returns the paths written."""
    from .plots import new_figure, save_figure

    sweep = [r for r in result["rows"] if r["size"].startswith("sweep_")]
    if not sweep:
        return []
    cells = sorted({r["cell"] for r in sweep})
    fig, axes = new_figure(1, len(cells), figsize=(4.2 * len(cells), 3.6), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        rows = [r for r in sweep if r["cell"] == cell]
        for b in result["backends"]:
            timed = [r for r in rows if b in r["times"]]
            if timed:
                ax.loglog([r["H"] for r in timed], [r["times"][b]["forward_backward_s"] * 1e3 for r in timed],
                          marker="o", label=b)
        ax.set_title(f"{cell}: forward+backward, T=100 B=64 I=H", fontsize=9)
        ax.set_xlabel("hidden size H")
        ax.set_ylabel("ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    paths = [save_figure(fig, os.path.join(out_dir, "bench_time_vs_hidden.png"))]
    pairs = [(gpu, cpu) for gpu, cpu in (("cupy", "numpy"), ("torch_cuda", "torch_cpu"))
             if gpu in result["backends"] and cpu in result["backends"]]
    if pairs:
        fig, ax = new_figure(figsize=(5.5, 3.6))
        for gpu, cpu in pairs:
            for cell in cells:
                rows = [r for r in sweep if r["cell"] == cell and gpu in r["times"] and cpu in r["times"]]
                if not rows:
                    continue
                ax.semilogx([r["H"] for r in rows], [r["times"][cpu]["forward_backward_s"] /
                                                     r["times"][gpu]["forward_backward_s"] for r in rows],
                            marker="o", label=f"{cell}: {cpu} / {gpu}")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("hidden size H")
        ax.set_ylabel("CPU time / GPU time")
        ax.set_title("GPU speed-up over CPU (above 1: GPU wins)", fontsize=9)
        ax.legend(fontsize=7)
        paths.append(save_figure(fig, os.path.join(out_dir, "bench_gpu_speedup.png")))
    return paths
