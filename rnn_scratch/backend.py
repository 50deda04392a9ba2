"""Choosing the array namespace ``xp`` (NumPy or CuPy) and moving arrays between devices.

This is the only module that imports CuPy. Every other module asks it for the
namespace through :func:`get_xp` / :func:`array_module`.

Resolution order for a layer's backend:

1. the ``backend=`` argument of the layer (``"numpy"`` or ``"cupy"``);
2. the environment variable ``RNN_SCRATCH_BACKEND`` (``numpy`` | ``cupy``);
3. automatic: CuPy when it is importable *and* a CUDA device is usable, else NumPy.

Asking for ``cupy`` where it cannot run raises :class:`BackendUnavailableError`
with the reason (not installed, no device, driver error).
"""

from __future__ import annotations

import os
import sys
from functools import cache, lru_cache
from types import ModuleType

import numpy as np

BACKENDS = ("numpy", "cupy")
ENV_VAR = "RNN_SCRATCH_BACKEND"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine."""


@lru_cache(maxsize=1)
def _probe_cupy() -> tuple[ModuleType | None, str]:
    """Import CuPy and check that a CUDA device answers. Returns (module or None, reason)."""
    try:
        import cupy  # the one place cupy is imported
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return None, f"cupy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return None, "cupy is installed but no CUDA device is visible"
        cupy.zeros(1).sum().item()  # a real kernel launch: catches driver/toolkit mismatches
    except Exception as exc:
        return None, f"cupy is installed but no CUDA device is usable ({type(exc).__name__}: {exc})"
    return cupy, "ok"


def cupy_available() -> bool:
    """True when CuPy is importable and a CUDA device runs a kernel."""
    return _probe_cupy()[0] is not None


def cupy_unavailable_reason() -> str:
    """Why CuPy cannot be used here ("ok" when it can)."""
    return _probe_cupy()[1]


def resolve_backend(backend: str | None = None) -> str:
    """Return ``"numpy"`` or ``"cupy"`` for a requested backend (None = env var, then auto)."""
    if backend is None:
        backend = os.environ.get(ENV_VAR) or None
        source = f"environment variable {ENV_VAR}"
    else:
        source = "argument backend"
    if backend is None:
        return "cupy" if cupy_available() else "numpy"
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS} or None, got {backend!r}")
    backend = backend.lower()
    if backend == "cupy" and not cupy_available():
        raise BackendUnavailableError(
            f"backend 'cupy' was requested ({source}) but cannot run: {cupy_unavailable_reason()}"
        )
    return backend


def get_xp(backend: str | None = None) -> ModuleType:
    """The array namespace for a backend name (None = env var, then auto)."""
    if resolve_backend(backend) == "cupy":
        return _probe_cupy()[0]
    return np


def is_cupy_array(array) -> bool:
    """True for a CuPy ndarray (without importing CuPy when it was never probed successfully)."""
    cp = _probe_cupy()[0] if _cupy_imported() else None
    return cp is not None and isinstance(array, cp.ndarray)


def _cupy_imported() -> bool:
    return "cupy" in sys.modules


def backend_of(array) -> str:
    """``"numpy"`` or ``"cupy"`` for an array; anything else raises TypeError."""
    if isinstance(array, np.ndarray):
        return "numpy"
    if is_cupy_array(array):
        return "cupy"
    raise TypeError(f"expected a numpy or cupy ndarray, got {type(array).__name__}")


def array_module(array) -> ModuleType:
    """The namespace an array belongs to (numpy for numpy arrays, cupy for cupy arrays)."""
    return _probe_cupy()[0] if is_cupy_array(array) else np


def to_numpy(array) -> np.ndarray:
    """Copy an array to the host as a NumPy array (no copy for NumPy input)."""
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)


def to_backend(array, backend: str):
    """Move an array (NumPy, CuPy, or anything np.asarray accepts) to ``backend``."""
    if resolve_backend(backend) == "cupy":
        return _probe_cupy()[0].asarray(array)
    return to_numpy(array)


def synchronize(backend: str | None = None) -> None:
    """Wait for the device to finish queued work (no-op on NumPy). Used for timing."""
    if resolve_backend(backend) == "cupy":
        _probe_cupy()[0].cuda.get_current_stream().synchronize()


# -- fused CUDA kernels -------------------------------------------------------------------------------
# The functional core writes each cell's fused step kernels as CUDA C sources beside its NumPy code
# (with ``real`` for the element type); they are compiled here, once per (source, name, dtype).
# They stay switched off until a device run has verified them: RNN_SCRATCH_FUSED=1 or set_fused(True).
FUSED_ENV_VAR = "RNN_SCRATCH_FUSED"
GRAPH_ENV_VAR = "RNN_SCRATCH_CUDA_GRAPHS"
_switches = {"fused": None, "graphs": None}
CUDA_TYPES = {"float32": "float", "float64": "double"}


def set_fused(enabled: bool | None) -> None:
    """Use the fused CUDA step kernels on CuPy (None: the environment variable RNN_SCRATCH_FUSED decides)."""
    _switches["fused"] = None if enabled is None else bool(enabled)


def set_cuda_graphs(enabled: bool | None) -> None:
    """Replay the fused time loop as a captured CUDA graph (None: RNN_SCRATCH_CUDA_GRAPHS decides)."""
    _switches["graphs"] = None if enabled is None else bool(enabled)


def _switch(name, env):
    value = _switches[name]
    return value if value is not None else os.environ.get(env, "0") not in ("", "0", "false", "no")


def fused_enabled(xp) -> bool:
    """True when ``xp`` is CuPy and the fused kernels are switched on (off by default: see above)."""
    return xp is not np and _switch("fused", FUSED_ENV_VAR)


def cuda_graphs_enabled() -> bool:
    return _switch("graphs", GRAPH_ENV_VAR)


def cuda_source(source: str, dtype) -> str:
    """The kernel source for one element type: ``real`` is float or double."""
    return f"typedef {CUDA_TYPES[np.dtype(dtype).name]} real;\n" + source


@cache
def _compiled(source: str, name: str):
    cp = _probe_cupy()[0]
    return cp.RawKernel(source, name, options=("--std=c++14",))


def cuda_kernel(source: str, name: str, dtype):
    """The compiled kernel ``name`` of ``source`` for ``dtype``, memoised (CuPy caches the binary on disk too)."""
    return _compiled(cuda_source(source, dtype), name)


def launch(kernel, n: int, args, block: int = 256):
    """Launch ``kernel`` over ``n`` elements (one thread each) on the current stream."""
    kernel(((n + block - 1) // block,), (block,), args)


def nvrtc_compile(source: str, name: str, dtype, arch: str = "compute_90") -> str:
    """Compile a kernel source with NVRTC, no GPU needed: '' when it compiles, else the compiler's log.

    Raises BackendUnavailableError when NVRTC cannot be loaded (``pip install cupy-cuda12x
    nvidia-cuda-nvrtc-cu12``)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception as exc:
        raise BackendUnavailableError(f"NVRTC is not importable ({type(exc).__name__}: {exc})") from None
    try:
        program = nvrtc.createProgram(cuda_source(source, dtype), f"{name}.cu", [], [])
    except Exception as exc:
        raise BackendUnavailableError(f"NVRTC cannot be used ({type(exc).__name__}: {exc})") from None
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}", "--std=c++14"])
        return ""
    except Exception:
        return nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)


class CudaGraphs:
    """Replays of captured CUDA graphs, one per key (the shapes and the buffers' addresses: a graph launches the
    exact pointers it captured, and CuPy's memory pool hands the same addresses back in a steady loop).

    ``run(key, issue)``: on a hit, launch the graph; on a miss, capture ``issue()`` (the time loop's launches,
    on preallocated buffers only) and launch it. A capture that fails (an allocation or a synchronisation
    inside, an old driver) is remembered, and ``issue()`` runs plainly from then on for that key. ``last``
    says what the last call did: "replayed", "captured" or "plain: <reason>".
    """

    def __init__(self, size: int = 8):
        self.size = size
        self.graphs: dict = {}
        self.failed: dict = {}
        self.last = None

    def run(self, key, issue):
        cp = _probe_cupy()[0]
        if key in self.failed:
            self.last = f"plain: {self.failed[key]}"
            return issue()
        current = cp.cuda.get_current_stream()
        graph = self.graphs.get(key)
        if graph is None:
            stream = cp.cuda.Stream(non_blocking=True)
            stream.wait_event(current.record())
            try:
                with stream:
                    stream.begin_capture()
                    try:
                        issue()
                    finally:
                        graph = stream.end_capture()
            except Exception as exc:
                self.failed[key] = f"capture failed ({type(exc).__name__}: {exc})"
                self.last = f"plain: {self.failed[key]}"
                return issue()
            if len(self.graphs) >= self.size:
                self.graphs.pop(next(iter(self.graphs)))
            self.graphs[key] = (graph, stream)
            self.last = "captured"
        else:
            graph, stream = graph
            self.last = "replayed"
        stream.wait_event(current.record())
        graph.launch(stream)
        current.wait_event(stream.record())
        return None


def available_bytes(backend: str) -> int | None:
    """Memory that can still be allocated: for NumPy the host's MemAvailable (Linux), or less when this
    process's control group (a container's memory limit) has less headroom; for CuPy the device's free
    memory plus what CuPy's memory pool holds free. None when unknown."""
    if backend == "cupy":
        if not cupy_available():
            return None
        cp = _probe_cupy()[0]
        return int(cp.cuda.runtime.memGetInfo()[0] + cp.get_default_memory_pool().free_bytes())
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    headroom = cgroup_headroom()
    if headroom is not None:
        free = headroom if free is None else min(free, headroom)
    return free


CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_headroom(root: str = CGROUP_ROOT) -> int | None:
    """Bytes this control group may still use: its limit minus its usage, counting inactive file pages as
    free (the kernel reclaims them first); None without a limit (cgroup v2 ``memory.max``, else v1
    ``memory/memory.limit_in_bytes``)."""

    def read(*parts):
        try:
            with open(os.path.join(root, *parts)) as f:
                return f.read()
        except OSError:
            return None

    for limit_file, usage_file, stat_file, inactive in (
            (("memory.max",), ("memory.current",), ("memory.stat",), "inactive_file"),
            (("memory", "memory.limit_in_bytes"), ("memory", "memory.usage_in_bytes"), ("memory", "memory.stat"),
             "total_inactive_file")):
        limit, usage = read(*limit_file), read(*usage_file)
        if limit is None or usage is None:
            continue
        try:
            limit, usage = limit.strip(), int(usage)
            if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 writes a huge number)
                return None
            stats = dict(line.split() for line in (read(*stat_file) or "").splitlines() if len(line.split()) == 2)
            return max(0, int(limit) - usage + int(stats.get(inactive, 0)))
        except ValueError:
            return None
    return None


def peak_bytes(fn, backend: str = "numpy") -> int:
    """The peak of the bytes allocated while ``fn()`` runs, above what was allocated before it.

    NumPy: ``tracemalloc`` (NumPy reports its array buffers to it; tracing slows allocation, so time
    separately). CuPy: a memory hook on the memory pool counting bytes handed out and given back (what
    the arrays use, whether or not the pool already held the memory), with the device synchronised.
    """
    if resolve_backend(backend) == "cupy":
        cp = _probe_cupy()[0]

        class _Peak(cp.cuda.MemoryHook):
            name = "rnn_scratch_peak"

            def __init__(self):
                self.current = self.peak = 0

            def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
                self.current += mem_size
                self.peak = max(self.peak, self.current)

            def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
                self.current -= mem_size

        hook = _Peak()
        cp.cuda.Device().synchronize()
        with hook:
            fn()
            cp.cuda.Device().synchronize()
        return int(hook.peak)
    import tracemalloc

    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return int(tracemalloc.get_traced_memory()[1] - before)
    finally:
        if started:
            tracemalloc.stop()


def default_rng(seed: int | None = None) -> np.random.Generator:
    """Host random generator; parameters are drawn on the host so every backend gets the same values.

    ``seed``: None (fresh entropy) or an integer >= 0; anything else is a ValueError naming it."""
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
    return np.random.default_rng(seed)


def cupy_benchmark(fn, n_repeat=20, n_warmup=3):
    """``cupyx.profiler.benchmark`` of ``fn()`` (CUDA events, synchronised): {"gpu_times": seconds on the
    device, "cpu_times": seconds on the host}, one per repeat."""
    if not cupy_available():
        raise BackendUnavailableError(cupy_unavailable_reason())
    from cupyx.profiler import benchmark

    result = benchmark(fn, n_repeat=n_repeat, n_warmup=n_warmup)
    return {"gpu_times": [float(t) for t in result.gpu_times[0]], "cpu_times": [float(t) for t in result.cpu_times]}


def device_name() -> str | None:
    """The CUDA device's name, when CuPy can see one."""
    if not cupy_available():
        return None
    cp = _probe_cupy()[0]
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
