"""The fused CUDA kernels executed on the CPU: their own source, compiled with the host C++ compiler, launched
thread by thread on NumPy memory by an emulated device that the real fused loops run on unchanged.

Test code, not the package: nothing in ``rnn_scratch/`` needs a C++ compiler.

- :func:`compile_source` compiles the exact text NVRTC compiles (``backend.cuda_source(source, dtype)``, written
  to ``kernel.cu`` byte for byte) with a small shim header (``__global__``, ``threadIdx``/``blockIdx``/
  ``blockDim``/``gridDim``, CUDA's math names) and a generated launcher per ``__global__`` kernel: a loop that
  sets the indices and calls the kernel once per thread of the grid, in an order given by the caller. A second
  build (``sanitize=True``) adds ``-fsanitize=address,undefined``; it runs in a child process that preloads the
  ASan runtime (:func:`run_sanitized`), and copies every buffer a launch touches into a heap block of exactly its
  size, so a read or write one element out of bounds lands in ASan's red zone.
- :class:`EmulatedDevice` replaces ``backend.cuda_kernel``, ``backend.launch`` and ``backend.fused_enabled`` (and
  every name an ``rnn_scratch`` module bound to them) and keeps CUDA graphs off: each launch runs the compiled
  kernel over the whole grid (``grid = ceil(n / block)`` blocks, so threads past ``n`` exercise the kernels'
  ``k >= n`` guards), threads in forward, reverse or shuffled order. Arguments are checked as CuPy's RawKernel
  would need them: a pointer parameter takes a C-contiguous array of the kernel's element type, a scalar
  parameter a NumPy scalar of its exact type (``np.int32`` for ``int``); anything else is a :class:`HarnessError`,
  never a silent copy. The recurrent GEMM keeps CuPy's orientation (``h W^T`` into a C-contiguous scratch).

``python -m tests.cuda_on_cpu`` (what :func:`run_sanitized` starts) runs :func:`sanitizer_cases` on the sanitizer
build and prints one line per case.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from unittest import mock

import numpy as np

import rnn_scratch.layers  # noqa: F401  (every module whose bound names the device patches is loaded first)
from rnn_scratch import backend
from rnn_scratch.functional import CELLS, _gemm, sequence_backward, sequence_forward
from rnn_scratch.testing.cases import random_sequence_case

CACHE_ENV = "RNN_SCRATCH_KERNEL_CACHE"  # where compiled kernels are kept (default: a fresh temporary folder)
FLAGS = ("-O2", "-std=c++14", "-shared", "-fPIC")
SANITIZE_FLAGS = ("-O1", "-g", "-std=c++14", "-shared", "-fPIC", "-fno-omit-frame-pointer",
                  "-fsanitize=address,undefined", "-fno-sanitize-recover=all")

# What a kernel source may use from CUDA, for the host compiler. One thread runs at a time, so the indices are
# plain globals (defined by the launcher). C++'s <math.h> gives exp, tanh, ... their float and double overloads,
# as CUDA's headers do.
SHIM = r"""// CUDA for the host compiler: each launch runs one thread at a time, so the indices are globals.
#include <math.h>
#include <stddef.h>
struct harness_dim3 { unsigned int x, y, z; };
extern harness_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// not emulated (a block's threads run one after another): shared memory and __syncthreads do not compile
#define __shared__ __shared___is_not_emulated_threads_run_one_at_a_time
template <class T> static inline T rsqrt(T v) { return 1 / sqrt(v); }
template <class T> static inline T min(T a, T b) { return b < a ? b : a; }
template <class T> static inline T max(T a, T b) { return a < b ? b : a; }
"""

LAUNCHER_HEAD = r"""#include "shim.h"
#include "kernel.cu"
#include <stdlib.h>
harness_dim3 threadIdx, blockIdx, blockDim, gridDim;
extern "C" void* harness_alloc(size_t n) { return malloc(n); }
extern "C" void harness_free(void* p) { free(p); }
"""

# one per kernel: every thread of the grid, in the order given (linear thread ids blockIdx.x * block + threadIdx.x)
LAUNCHER = r"""
extern "C" void harness_launch_{name}(const long long* order, long long threads, unsigned int grid,
                                      unsigned int block, void* const* args)
{{
    blockDim = harness_dim3{{block, 1, 1}};
    gridDim = harness_dim3{{grid, 1, 1}};
    for (long long i = 0; i < threads; ++i) {{
        blockIdx = harness_dim3{{(unsigned int)(order[i] / block), 0, 0}};
        threadIdx = harness_dim3{{(unsigned int)(order[i] % block), 0, 0}};
        {name}({args});
    }}
}}
"""


class HarnessError(RuntimeError):
    """The emulated device was used in a way a GPU launch would not accept (or the harness cannot run)."""


# -- the compiler -------------------------------------------------------------------------------------------------
def compiler() -> str | None:
    """The host C++ compiler: $CXX, else g++, else c++ (None when none is found)."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@functools.cache
def compiler_unavailable_reason() -> str | None:
    """None when a C++ compiler builds a shared library here, else why not."""
    cxx = compiler()
    if cxx is None:
        return "no C++ compiler found ($CXX, g++ or c++)"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write('extern "C" int probe(void) { return 1; }\n')
        r = subprocess.run([cxx, *FLAGS, src, "-o", os.path.join(tmp, "probe.so")], capture_output=True, text=True)
        if r.returncode != 0:
            return f"{cxx} cannot build a shared library: {r.stderr.strip()[-500:]}"
    return None


@functools.cache
def asan_runtime() -> str | None:
    """The path of the compiler's ASan runtime (libasan.so), which a Python process must preload to load a
    sanitized library; None when there is none."""
    cxx = compiler()
    if cxx is None:
        return None
    r = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = r.stdout.strip()
    return path if r.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


@functools.cache
def sanitizer_unavailable_reason() -> str | None:
    """None when the sanitizer build can run here, else why not."""
    reason = compiler_unavailable_reason()
    if reason is not None:
        return reason
    if asan_runtime() is None:
        return f"{compiler()} has no ASan runtime (libasan.so) to preload"
    return None


# -- the kernels' signatures ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One kernel parameter: its name, its C type as written, and its element type with ``const`` and ``*`` taken
    off (``real`` is the dtype the source was built for)."""

    name: str
    ctype: str
    pointer: bool
    element: str


SCALAR_TYPES = {"bool": np.bool_, "int": np.int32, "unsigned int": np.uint32, "long long": np.int64,
                "float": np.float32, "double": np.float64, "size_t": np.uint64}


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def kernel_signatures(text: str) -> dict[str, tuple[Param, ...]]:
    """Every ``extern "C" __global__ void name(params)`` in a source, its parameters in order."""
    kernels = {}
    pattern = r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)'
    for name, params in re.findall(pattern, _strip_comments(text)):
        parsed = []
        for part in (p.strip() for p in params.split(",") if p.strip()):
            match = re.fullmatch(r"(.*?)(\w+)", part, flags=re.S)
            ctype = " ".join(match.group(1).split())
            if not ctype:
                raise HarnessError(f"kernel {name}: cannot read the parameter {part!r}")
            element = " ".join(w for w in ctype.replace("*", " ").split() if w not in ("const", "__restrict__"))
            parsed.append(Param(match.group(2), ctype, "*" in ctype, element))
        kernels[name] = tuple(parsed)
    return kernels


def _launcher(kernels) -> str:
    code = [LAUNCHER_HEAD]
    for name, params in kernels.items():
        args = []
        for k, p in enumerate(params):
            if p.pointer:
                args.append(f"({p.ctype})args[{k}]")
            else:
                args.append(f"*({p.element}*)args[{k}]")
        code.append(LAUNCHER.format(name=name, args=", ".join(args)))
    return "".join(code)


# -- compiling ------------------------------------------------------------------------------------------------------
@dataclass
class Library:
    """A compiled kernel source: the text (what NVRTC compiles), the folder it was built in, its kernels'
    signatures, the element type ``real`` stands for, whether it is the sanitizer build, and the loaded library."""

    text: str
    folder: str
    kernels: dict
    dtype: np.dtype
    sanitize: bool
    dll: object


def cache_dir() -> str:
    """The folder compiled kernels are kept in: $RNN_SCRATCH_KERNEL_CACHE, else a temporary folder made once."""
    path = os.environ.get(CACHE_ENV)
    if not path:  # made here: removed when this process ends (child processes it starts share it meanwhile)
        path = os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="rnn_scratch_kernels_")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    return path


_LIBRARIES: dict = {}


def compile_source(text: str, dtype, *, sanitize: bool = False) -> Library:
    """Compile ``text`` (a kernel source as ``backend.cuda_source`` gives it, ``real`` typedef'd to ``dtype``) for
    the CPU, once per process and once per cache folder (keyed by the text, the shim, the launcher and the flags)."""
    dtype = np.dtype(dtype)
    memo = (text, dtype.name, sanitize)
    if memo in _LIBRARIES:
        return _LIBRARIES[memo]
    reason = sanitizer_unavailable_reason() if sanitize else compiler_unavailable_reason()
    if reason is not None:
        raise HarnessError(reason)
    kernels = kernel_signatures(text)
    if not kernels:
        raise HarnessError('no extern "C" __global__ kernel in the source')
    flags = SANITIZE_FLAGS if sanitize else FLAGS
    launcher = _launcher(kernels)
    key = hashlib.sha256("\0".join((compiler(), *flags, SHIM, launcher, text)).encode()).hexdigest()[:24]
    folder = os.path.join(cache_dir(), key)
    if not os.path.exists(folder):  # built in a private folder, then renamed: parallel workers may race here
        build = tempfile.mkdtemp(prefix=f"{key}.", dir=cache_dir())
        for name, content in (("kernel.cu", text), ("shim.h", SHIM), ("launch.cpp", launcher)):
            with open(os.path.join(build, name), "w", newline="") as f:
                f.write(content)
        debug_paths = f"-fdebug-prefix-map={build}={folder}"  # reports name the folder the library ends up in
        r = subprocess.run([compiler(), *flags, debug_paths, "launch.cpp", "-o", "kernel.so"], cwd=build,
                           capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(build, ignore_errors=True)
            raise HarnessError(f"{compiler()} cannot compile the kernel source:\n{r.stderr}")
        try:
            os.rename(build, folder)
        except OSError:  # another process got there first
            shutil.rmtree(build, ignore_errors=True)
    lib = os.path.join(folder, "kernel.so")
    with open(os.path.join(folder, "kernel.cu"), newline="") as f:
        if f.read() != text:
            raise HarnessError(f"{folder}/kernel.cu is not the source it was built from")
    dll = ctypes.CDLL(lib)
    dll.harness_alloc.restype = ctypes.c_void_p
    dll.harness_alloc.argtypes = [ctypes.c_size_t]
    dll.harness_free.argtypes = [ctypes.c_void_p]
    for name in kernels:
        fn = getattr(dll, f"harness_launch_{name}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        fn.restype = None
    _LIBRARIES[memo] = Library(text, folder, kernels, dtype, sanitize, dll)
    return _LIBRARIES[memo]


# -- the emulated device ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmulatedKernel:
    """What the emulated ``backend.cuda_kernel`` hands the fused loops: a kernel of a compiled :class:`Library`."""

    name: str
    params: tuple
    library: Library

    def element_dtype(self, param: Param):
        if param.element == "real":
            return self.library.dtype
        if param.element in SCALAR_TYPES:
            return np.dtype(SCALAR_TYPES[param.element])
        raise HarnessError(f"kernel {self.name}: parameter {param.name} has a type the harness does not know "
                           f"({param.ctype})")


ORDERS = ("forward", "reverse", "shuffle")


class EmulatedDevice:
    """The fused path on NumPy arrays, each launch running the kernel's own compiled source (see the module
    docstring). Use as a context manager.

    ``order``: the order threads run in ("forward", "reverse" or "shuffle": a new permutation per launch, from
    ``seed``); ``block``: the block size every launch uses (None: the caller's); ``sanitize``: the sanitizer build
    (only in a process that preloaded the ASan runtime: :func:`run_sanitized`); ``mutations``: (old, new) text
    replacements applied to every source before it is compiled (each must apply somewhere: checked on exit).

    Records ``launches`` (a Counter of kernel names), ``threads`` (threads run, guards included) and ``requests``
    (per ``cuda_kernel`` call: the source, the kernel name, the dtype's name and the :class:`Library`).
    """

    def __init__(self, order="forward", block=None, sanitize=False, seed=0, mutations=()):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if block is not None and not 1 <= block <= 1024:
            raise ValueError(f"block must be None or 1..1024 (CUDA's limit), got {block!r}")
        self.order, self.block, self.sanitize = order, block, sanitize
        self.rng = np.random.default_rng(seed)
        self.mutations = tuple(mutations)
        self.mutated = set()
        self.launches: Counter = Counter()
        self.threads = 0
        self.requests: list = []
        self._stack = None

    # the two entry points the fused loops use
    def cuda_kernel(self, source, name, dtype):
        text = backend.cuda_source(source, dtype)  # exactly what NVRTC compiles
        for k, (old, new) in enumerate(self.mutations):
            if old in text:
                text = text.replace(old, new)
                self.mutated.add(k)
        library = compile_source(text, dtype, sanitize=self.sanitize)
        if name not in library.kernels:
            raise HarnessError(f"no kernel {name!r} in the source (it has {sorted(library.kernels)})")
        self.requests.append((source, name, np.dtype(dtype).name, library))
        return EmulatedKernel(name, library.kernels[name], library)

    def launch(self, kernel, n, args, block=256):
        if not isinstance(kernel, EmulatedKernel):
            raise HarnessError(f"launch got {type(kernel).__name__}, not a kernel from the emulated cuda_kernel")
        block = self.block or block
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise HarnessError(f"{kernel.name}: n must be a positive int (a launch of 0 blocks fails), got {n!r}")
        if len(args) != len(kernel.params):
            raise HarnessError(f"{kernel.name} takes {len(kernel.params)} arguments "
                               f"({', '.join(p.name for p in kernel.params)}), the launch passed {len(args)}")
        grid = -(-int(n) // block)
        threads = grid * block
        if self.order == "forward":
            order = np.arange(threads, dtype=np.int64)
        elif self.order == "reverse":
            order = np.arange(threads - 1, -1, -1, dtype=np.int64)
        else:
            order = self.rng.permutation(threads).astype(np.int64)
        pointers, keep = self._arguments(kernel, args)
        fn = getattr(kernel.library.dll, f"harness_launch_{kernel.name}")
        with self._device_memory(kernel, args, pointers):
            fn(order.ctypes.data, threads, grid, block, ctypes.cast(pointers, ctypes.c_void_p))
        del keep
        self.launches[kernel.name] += 1
        self.threads += threads

    def _arguments(self, kernel, args):
        """The argument pointers, every argument checked against the kernel's parameter."""
        pointers = (ctypes.c_void_p * len(args))()
        keep = []
        for k, (param, arg) in enumerate(zip(kernel.params, args)):
            expected = kernel.element_dtype(param)
            where = f"{kernel.name} argument {k} ({param.ctype} {param.name})"
            if param.pointer:
                if not isinstance(arg, np.ndarray):
                    raise HarnessError(f"{where}: expected a device array, got {type(arg).__name__}")
                if arg.dtype != expected:
                    raise HarnessError(f"{where}: expected {expected.name} elements, got {arg.dtype.name}")
                if not arg.flags.c_contiguous:
                    raise HarnessError(f"{where}: the array is not C-contiguous (shape {arg.shape}, strides "
                                       f"{arg.strides}); a kernel reads it as a dense buffer")
                if arg.size == 0:
                    raise HarnessError(f"{where}: an empty array")
                pointers[k] = arg.ctypes.data
            else:
                if not isinstance(arg, np.generic) or arg.dtype != expected:
                    raise HarnessError(f"{where}: expected a numpy {expected.name} scalar, got {arg!r} "
                                       f"({type(arg).__name__})")
                value = np.array(arg, dtype=expected)
                keep.append(value)
                pointers[k] = value.ctypes.data
        return pointers, keep

    @contextlib.contextmanager
    def _device_memory(self, kernel, args, pointers):
        """Sanitizer build: each set of overlapping buffers the launch touches is copied into one heap block of
        exactly its size (and back after the launch), so that one element past it is in ASan's red zone."""
        if not self.sanitize:
            yield
            return
        spans = sorted((arg.ctypes.data, arg.ctypes.data + arg.nbytes, k) for k, arg in enumerate(args)
                       if isinstance(arg, np.ndarray))
        groups = []
        for start, end, k in spans:
            if groups and start < groups[-1][1]:
                groups[-1][1] = max(groups[-1][1], end)
                groups[-1][2].append((k, start))
            else:
                groups.append([start, end, [(k, start)]])
        dll = kernel.library.dll
        blocks = []
        try:
            for start, end, members in groups:
                block = dll.harness_alloc(end - start)
                blocks.append((block, start, end))
                ctypes.memmove(block, start, end - start)
                for k, address in members:
                    pointers[k] = block + (address - start)
            yield
            for block, start, end in blocks:
                ctypes.memmove(start, block, end - start)
        finally:
            for block, _, _ in blocks:
                dll.harness_free(block)

    # patching the package
    def __enter__(self):
        replacements = [(backend.cuda_kernel, self.cuda_kernel), (backend.launch, self.launch),
                        (backend.fused_enabled, lambda xp: True), (backend.cuda_graphs_enabled, lambda: False)]
        stack = contextlib.ExitStack()
        for module_name, module in list(sys.modules.items()):
            if module_name != "rnn_scratch" and not module_name.startswith("rnn_scratch."):
                continue
            for attr, value in list(vars(module).items()):
                for original, replacement in replacements:
                    if value is original:
                        stack.enter_context(mock.patch.object(module, attr, replacement))
        # CuPy's orientation of the recurrent GEMM: h W^T into a C-contiguous (B, G) scratch
        stack.enter_context(mock.patch.object(_gemm, "FORCE_ORIENTATION", False))
        self._stack = stack.__enter__()
        return self

    def __exit__(self, *exc):
        self._stack.__exit__(*exc)
        missing = [self.mutations[k] for k in range(len(self.mutations)) if k not in self.mutated]
        if missing and exc[0] is None:
            raise HarnessError(f"mutations that matched no compiled source: {missing}")
        return False


# -- running a case --------------------------------------------------------------------------------------------------
def run_case(cell, case, dtype, *, reverse=False, with_dout=True, checkpoint_every=None):
    """The fast path's forward and backward of one :func:`random_sequence_case` in ``dtype``: a dict of named
    arrays (out, the final state parts, dx, the initial state gradients, the parameter gradients)."""
    params, x, state, mask, dout, dstate = case
    dt = np.dtype(dtype)
    params = {k: None if v is None else v.astype(dt, copy=False) for k, v in params.items()}
    x, dout = x.astype(dt, copy=False), dout.astype(dt, copy=False) if with_dout else None  # views stay views
    state, dstate = tuple(s.astype(dt, copy=False) for s in state), tuple(d.astype(dt, copy=False) for d in dstate)
    with np.errstate(over="ignore"):
        out, final, cache = sequence_forward(cell, x, state, params, reverse=reverse, mask=mask,
                                             checkpoint_every=checkpoint_every)
        dx, d0, dp = sequence_backward(cell, dout, dstate, cache)
    result = {"out": out, "dx": dx}
    result.update({f"state{k}": s for k, s in enumerate(final)})
    result.update({f"dstate{k}": d for k, d in enumerate(d0)})
    result.update(dp)
    return result


def sanitizer_cases(cells=None, mutations=(), dtypes=("float32", "float64")):
    """Small cases for the sanitizer build: per cell and dtype, padded with dout (reverse, block 4) and unpadded
    without dout (forward, block 256). Yields (label, device) after each has run."""
    for cell in cells or list(CELLS):
        for dtype in dtypes:
            for padded, with_dout, reverse, block in ((True, True, True, 4), (False, False, False, None)):
                case = random_sequence_case(7, cell, 3, 3, 2, 5, padded=padded)
                with EmulatedDevice(block=block, sanitize=True, mutations=mutations) as device:
                    run_case(cell, case, dtype, reverse=reverse, with_dout=with_dout)
                yield f"{cell} {dtype} padded={padded} dout={with_dout} reverse={reverse} block={block}", device


def run_sanitized(cells=None, mutations=(), timeout=300) -> subprocess.CompletedProcess:
    """Run :func:`sanitizer_cases` in a child process that preloads the ASan runtime (a sanitized library cannot be
    loaded otherwise); its exit status is non-zero, with ASan's or UBSan's report on stderr, at the first error."""
    reason = sanitizer_unavailable_reason()
    if reason is not None:
        raise HarnessError(reason)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "LD_PRELOAD": asan_runtime(), "ASAN_OPTIONS": "detect_leaks=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", CACHE_ENV: cache_dir(),
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    spec = json.dumps({"cells": cells, "mutations": [list(m) for m in mutations]})
    return subprocess.run([sys.executable, "-m", "tests.cuda_on_cpu", spec], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the fused kernels' sanitizer cases (preload libasan first).")
    parser.add_argument("spec", nargs="?", default="{}", help='JSON: {"cells": [...], "mutations": [[old, new]]}')
    spec = json.loads(parser.parse_args(argv).spec)
    cases = 0
    for label, device in sanitizer_cases(spec.get("cells"), [tuple(m) for m in spec.get("mutations", [])]):
        print(f"{label}: {dict(device.launches)} launches, {device.threads} threads", flush=True)
        cases += 1
    print(f"sanitizer cases passed: {cases}")


if __name__ == "__main__":
    main()
