"""The fused CUDA kernels executed on the CPU: their own source (byte for byte what NVRTC compiles), built with the
host C++ compiler, run through the real fused time loops on an emulated device (``tests/cuda_on_cpu.py``).

- every cell with a kernel x float32/float64 x padding x dout x direction, against the readable step loop within
  the fast path's rounding bound (``tests/test_fast_path.py``; float32 with float32's unit roundoff, against a
  float64 truth on the same float32 numbers); block sizes that do and do not divide B*H;
- several layers, bidirectional, with lengths, full and checkpointed memory, through the layers API;
- threads in shuffled and reverse order give bit-identical results (a race between threads of one launch is not);
- a sanitizer build (``-fsanitize=address,undefined``) on small cases, in a child process;
- the harness can fail: an out-of-bounds index is caught by the sanitizer, a race by the thread orders, a bad
  launch argument by the checks.
"""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_scratch import backend as be
from rnn_scratch.functional import CELLS, get_cell, reference_backward, reference_forward
from rnn_scratch.layers import make_layer
from rnn_scratch.testing import examples
from rnn_scratch.testing.cases import float32_numbers, random_sequence_case
from tests import cuda_on_cpu as cpu
from tests.test_fast_path import rounding_bound

pytestmark = pytest.mark.skipif(cpu.compiler_unavailable_reason() is not None,
                                reason=f"the kernels cannot run on the CPU: {cpu.compiler_unavailable_reason()}")

REGISTRY = tuple(CELLS)  # every registered cell; one without a fused kernel is skipped with the reason
# the cells whose record names a kernel must launch it (a skip there would hide a break); that no kernel file is
# left without its cell is tests/test_registry.py::test_every_kernel_file_belongs_to_a_cell
WITH_KERNELS = tuple(name for name, cell in CELLS.items() if cell.kernel is not None)
DTYPES = ("float32", "float64")
# padded x dout x reverse, each with a block size: 256 (the loops' own) and 4 and 7 leave idle threads past B*H = 15
# (the k >= B * H guards); 5 and 3 divide it (a grid without idle threads)
CONFIGS = [SimpleNamespace(padded=p, with_dout=d, reverse=r, block=b)
           for (p, d, r), b in zip([(p, d, r) for p in (False, True) for d in (False, True) for r in (False, True)],
                                   (None, 4, 7, 5, None, 3, 4, 7))]
T, B, I, H = 4, 3, 2, 5


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory):
    """Compiled kernels are kept for the session, in one folder the xdist workers share."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    saved = os.environ.get(cpu.CACHE_ENV)
    os.environ[cpu.CACHE_ENV] = str(root / "kernels_on_cpu")
    yield
    if saved is None:
        os.environ.pop(cpu.CACHE_ENV, None)
    else:
        os.environ[cpu.CACHE_ENV] = saved


def ran_kernels(cell, device):
    """The cell's kernels ran (else: a cell without a fused kernel is skipped with the reason)."""
    if not device.launches:
        if cell in WITH_KERNELS:
            pytest.fail(f"{cell}: the fused path launched no kernel on the emulated device")
        pytest.skip(f"{cell} has no fused CUDA kernel (its fused path launched none)")
    return sorted(device.launches)


def reference(cell, case, reverse, with_dout):
    """The readable step loop in float64: the same named arrays as :func:`cuda_on_cpu.run_case`."""
    params, x, state, mask, dout, dstate = case
    with np.errstate(over="ignore"):
        out, final, cache = reference_forward(cell, x, state, params, reverse=reverse, mask=mask)
        dx, d0, dp = reference_backward(cell, dout if with_dout else None, dstate, cache)
    return {"out": out, "dx": dx, **{f"state{k}": s for k, s in enumerate(final)},
            **{f"dstate{k}": d for k, d in enumerate(d0)}, **dp}


def assert_within_bound(got, truth, T, I, H, m, signal, dtype, layers=1):
    """Every tensor within the fast path's rounding bound, scaled to ``dtype``'s unit roundoff (x ``layers``)."""
    assert set(got) == set(truth)
    ratio = np.finfo(dtype).eps / np.finfo(np.float64).eps
    for name in truth:
        assert got[name].dtype == np.dtype(dtype), name
        sig = 1.0 if name == "out" or name.startswith("state") else signal
        diff = float(np.abs(got[name].astype(np.float64) - truth[name]).max(initial=0.0))
        bound = layers * ratio * rounding_bound(truth[name], T, I, H, m, sig)
        assert diff <= bound, f"{name}: |fused - reference| {diff:.3g} > bound {bound:.3g} ({dtype})"


def scale_of(case):
    params, x, state, _, dout, dstate = case
    m = max([1.0, np.abs(x).max()] + [np.abs(v).max() for v in params.values() if v is not None]
            + [np.abs(s).max() for s in state])
    return m, max([np.abs(dout).max()] + [np.abs(d).max() for d in dstate])


@pytest.mark.parametrize("k", range(len(CONFIGS)), ids=lambda k: "padded={padded}-dout={with_dout}-reverse="
                         "{reverse}".format(**vars(CONFIGS[k])) + f"-block={CONFIGS[k].block or 256}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", REGISTRY)
def test_fused_loops_on_the_cpu_match_the_reference(cell, dtype, k):
    """Forward and backward kernels of the cell, on the emulated device, threads shuffled, against the step loop."""
    cfg = CONFIGS[k]
    case = random_sequence_case(100 + k, cell, T, B, I, H, padded=cfg.padded)
    if dtype == "float32":
        case = float32_numbers(case)
    with cpu.EmulatedDevice(order="shuffle", block=cfg.block, seed=k) as device:
        got = cpu.run_case(cell, case, dtype, reverse=cfg.reverse, with_dout=cfg.with_dout)
    kernels = ran_kernels(cell, device)
    assert len(kernels) == 2 and all(device.launches[n] == T for n in kernels), device.launches  # one per step
    assert_within_bound(got, reference(cell, case, cfg.reverse, cfg.with_dout), T, I, H, *scale_of(case), dtype)


@settings(max_examples=examples(30))
@given(cell=st.sampled_from(REGISTRY), dtype=st.sampled_from(DTYPES), T=st.integers(1, 6), B=st.integers(1, 5),
       I=st.integers(1, 4), H=st.integers(1, 7), bias=st.booleans(), padded=st.booleans(), reverse=st.booleans(),
       with_dout=st.booleans(), block=st.sampled_from([None, 1, 2, 3, 8, 32]), seed=st.integers(0, 2**31),
       scale=st.floats(0.1, 3.0))
def test_fused_loops_on_the_cpu_at_any_size(cell, dtype, T, B, I, H, bias, padded, reverse, with_dout, block, seed,
                                            scale):
    """The same, over sizes (B = 1, H = 1, B*H below, at and above a block) and weight scales hypothesis draws."""
    case = random_sequence_case(seed, cell, T, B, I, H, bias=bias, padded=padded, scale=scale)
    if dtype == "float32":
        case = float32_numbers(case)
    with cpu.EmulatedDevice(order="shuffle", block=block, seed=seed) as device:
        got = cpu.run_case(cell, case, dtype, reverse=reverse, with_dout=with_dout)
    ran_kernels(cell, device)
    assert_within_bound(got, reference(cell, case, reverse, with_dout), T, I, H, *scale_of(case), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", REGISTRY)
def test_the_compiled_text_is_what_nvrtc_compiles(cell, dtype):
    """Each kernel's library was built from ``backend.cuda_source(source, dtype)``, byte for byte."""
    with cpu.EmulatedDevice() as device:
        cpu.run_case(cell, random_sequence_case(0, cell, 2, 2, 2, 3), dtype)
    ran_kernels(cell, device)
    for source, name, dt, library in device.requests:
        with open(os.path.join(library.folder, "kernel.cu"), newline="") as f:
            assert f.read() == be.cuda_source(source, dt)
        assert name in library.kernels and dt == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", REGISTRY)
def test_thread_order_does_not_change_any_bit(cell, dtype):
    """The same launches with threads in forward, reverse and two shuffled orders: identical results."""
    case = random_sequence_case(3, cell, 5, 3, 2, 5, padded=True)
    results = []
    for order, seed in (("forward", 0), ("reverse", 0), ("shuffle", 1), ("shuffle", 2)):
        with cpu.EmulatedDevice(order=order, block=4, seed=seed) as device:
            results.append(cpu.run_case(cell, case, dtype, reverse=True))
        ran_kernels(cell, device)
    for other in results[1:]:
        for name in results[0]:
            assert np.array_equal(results[0][name], other[name], equal_nan=True), name


@pytest.mark.parametrize("padded", [False, True], ids=["whole", "lengths"])
@pytest.mark.parametrize("memory", ["full", "checkpoint"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", REGISTRY)
def test_layers_run_the_fused_kernels(cell, dtype, memory, padded):
    """Two bidirectional layers with initial states, whole sequences or lengths (batch_first when checkpointed),
    through the layers API on the emulated device, against the NumPy path in float64 on the same float32 numbers.
    (Without lengths each direction's dout is a strided half of the layer's: dbe5125 launched it as it was.)"""
    rng = np.random.default_rng(5)
    T_, B_, I_, H_, L = 6, 4, 3, 4, 2
    kw = dict(num_layers=L, bidirectional=True, backend="numpy", check_finite=False, memory=memory,
              batch_first=memory == "checkpoint")
    layer = make_layer(cell, I_, H_, dtype=dtype, seed=1, **kw)
    truth = make_layer(cell, I_, H_, dtype="float64", seed=1, **kw)
    truth.load_state_dict({k: v.astype(np.float64) for k, v in layer.state_dict().items()})
    shape = (B_, T_) if kw["batch_first"] else (T_, B_)
    x = rng.standard_normal((*shape, I_)).astype(dtype)
    dout = rng.standard_normal((*shape, 2 * H_)).astype(dtype)
    states = tuple(rng.standard_normal((2 * L, B_, H_)).astype(dtype) for _ in get_cell(cell).state_names)
    dstates = tuple(rng.standard_normal((2 * L, B_, H_)).astype(dtype) for _ in states)
    lengths = np.array([6, 2, 5, 1]) if padded else None

    def run(lay, dt, device=None):
        out, final = lay.forward_states(x.astype(dt), tuple(s.astype(dt) for s in states), lengths)
        dx, d0 = lay.backward_states(dout.astype(dt), tuple(d.astype(dt) for d in dstates))
        return {"out": out, "dx": dx, **{f"state{k}": f for k, f in enumerate(final)},
                **{f"dstate{k}": d for k, d in enumerate(d0)}, **lay.grads}

    with cpu.EmulatedDevice(order="shuffle", block=3) as device:
        got = run(layer, dtype)
    ran_kernels(cell, device)
    # per layer and direction T_ forward and T_ backward launches; checkpointed: the forward again in the backward
    assert sum(device.launches.values()) == (4 if memory == "full" else 6) * L * T_, device.launches
    m = max([1.0, float(np.abs(x).max())] + [float(np.abs(v).max()) for v in layer.state_dict().values()]
            + [float(np.abs(s).max()) for s in states])
    signal = max(float(np.abs(dout).max()), *(float(np.abs(d).max()) for d in dstates))
    assert_within_bound(got, run(truth, np.float64), T_, max(I_, 2 * H_), H_, m, signal, dtype, layers=L)


@pytest.mark.parametrize("cell", REGISTRY)
def test_a_strided_dout_reaches_the_kernels_dense(cell):
    """A kernel reads a raw pointer as a dense buffer: one direction's half of a bidirectional dout (a strided view)
    must be made contiguous before its steps are launched (dbe5125 passed the view: wrong elements on a GPU).
    Unpadded: with a mask the backward's dout is a fresh array anyway."""
    case = random_sequence_case(11, cell, T, B, I, H)
    wide = np.concatenate([case.dout, np.full_like(case.dout, np.nan)], axis=2)
    with cpu.EmulatedDevice() as device:
        got = cpu.run_case(cell, case._replace(dout=wide[:, :, :H]), "float64", reverse=True)
    ran_kernels(cell, device)
    assert_within_bound(got, reference(cell, case, True, True), T, I, H, *scale_of(case), "float64")


# -- the sanitizer build -----------------------------------------------------------------------------------------------
sanitizer = pytest.mark.skipif(cpu.sanitizer_unavailable_reason() is not None,
                               reason=f"no sanitizer build here: {cpu.sanitizer_unavailable_reason()}")


@sanitizer
def test_the_kernels_under_address_and_undefined_behaviour_sanitizers():
    """Every cell with a kernel, both dtypes, padded/reverse/block 4 and plain/block 256, every buffer a launch
    touches in a heap block of exactly its size: no out-of-bounds access, no undefined behaviour."""
    r = cpu.run_sanitized()
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-4000:]
    lines = [line for line in r.stdout.splitlines() if "launches" in line]
    assert len(lines) == len(REGISTRY) * len(DTYPES) * 2, r.stdout
    assert "sanitizer cases passed" in r.stdout


@sanitizer
@pytest.mark.parametrize("cell, old, new, report", [
    ("lstm", "if (k >= B * H) return;", "", "heap-buffer-overflow"),  # the grid's idle threads write past B*H
    ("lstm", "c_new[k] = keep ? c : c_prev[k];", "c_new[k] = keep ? c : c_prev[k + 1];", "heap-buffer-overflow"),
    ("rnn_tanh", "int b = k / H;", "int b = k / H; int spare = (k + 2147483647) / H; (void)spare;",
     "signed integer overflow"),
], ids=["no-guard", "index-off-by-one", "int-overflow"])
def test_the_sanitizers_catch_a_bad_kernel(cell, old, new, report):
    """The harness can fail: a kernel with an out-of-bounds access is stopped by ASan, one with undefined
    behaviour (a signed overflow that changes no result) by UBSan, each pointing into the kernel's own source."""
    r = cpu.run_sanitized(cells=[cell], mutations=[(old, new)])
    assert r.returncode != 0 and report in r.stderr, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "kernel.cu:" in r.stderr


def test_thread_orders_catch_a_race_between_threads():
    """The harness can fail: an RNN kernel whose thread k reads gates[k - 1], which thread k - 1 of the same launch
    writes, gives different results in different thread orders."""
    racy = ("real a = gates[k] + a_hh[k];", "real a = gates[k] + a_hh[k] + (k > 0 ? gates[k - 1] : 0);")
    case = random_sequence_case(3, "rnn_tanh", 4, 2, 2, 3)
    results = []
    for order in ("forward", "reverse"):
        with cpu.EmulatedDevice(order=order, mutations=[racy]):
            results.append(cpu.run_case("rnn_tanh", case, "float64"))
    assert not np.array_equal(results[0]["out"], results[1]["out"])


# -- the harness's own checks ----------------------------------------------------------------------------------------
AXPY = r"""
extern "C" __global__ void axpy(real* y, const real* x, real a, int n)  // y += a x
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    y[k] += a * x[k];
}
"""


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_launch_runs_every_thread_once_and_checks_its_arguments(dtype):
    """Grid x block threads (10 elements, block 4: 12 threads, 2 idle), and a CuPy RawKernel's argument rules."""
    dt = np.dtype(dtype)
    x, y = np.arange(10, dtype=dt), np.ones(10, dtype=dt)
    with cpu.EmulatedDevice(order="shuffle") as device:
        kernel = be.cuda_kernel(AXPY, "axpy", dtype)
        be.launch(kernel, 10, (y, x, dt.type(2), np.int32(10)), block=4)
        assert device.threads == 12
        np.testing.assert_array_equal(y, 1 + 2 * np.arange(10))
        bad = {"a strided array": ((np.ones(20, dt)[::2], x, dt.type(2), np.int32(10)), "not C-contiguous"),
               "another dtype": ((y.astype(np.float16), x, dt.type(2), np.int32(10)), "elements"),
               "a Python int": ((y, x, dt.type(2), 10), "numpy int32 scalar"),
               "an int64": ((y, x, dt.type(2), np.int64(10)), "numpy int32 scalar"),
               "too few": ((y, x, dt.type(2)), "takes 4 arguments")}
        for args, message in bad.values():
            with pytest.raises(cpu.HarnessError, match=message):
                be.launch(kernel, 10, args)
        with pytest.raises(cpu.HarnessError, match="no kernel"):
            be.cuda_kernel(AXPY, "saxpy", dtype)
    np.testing.assert_array_equal(y, 1 + 2 * np.arange(10))  # the refused launches wrote nothing
    assert be.fused_enabled(np) is False  # the package is back as it was


def test_the_kernel_signatures_are_read_from_the_source():
    sigs = cpu.kernel_signatures(be.cuda_source(AXPY, "float32"))
    assert [(p.name, p.ctype, p.pointer, p.element) for p in sigs["axpy"]] == [
        ("y", "real*", True, "real"), ("x", "const real*", True, "real"), ("a", "real", False, "real"),
        ("n", "int", False, "int")]


def test_the_package_needs_no_compiler(tmp_path):
    """rnn_scratch imports and trains with no compiler on PATH, and never loads the harness."""
    code = ("import sys, numpy as np, rnn_scratch as rs\n"
            "layer = rs.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)\n"
            "out, _ = layer(np.ones((5, 2, 3), 'float32'), lengths=np.array([5, 3]))\n"
            "layer.backward(np.ones_like(out))\n"
            "assert not [m for m in sys.modules if m.startswith('tests')], 'the package imported test code'\n")
    env = {**os.environ, "PATH": str(tmp_path), "CXX": ""}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
