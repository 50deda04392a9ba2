"""The memory guard (issue 23, F8 and F15): the estimate holds the measured peak over the layer x direction x
mode grid, and every size a user's numbers decide is refused before anything is allocated, in one line naming
the bytes. No test here allocates what it refuses: the sizes are ones the estimate refuses anywhere, or the
machine's free memory is replaced by a fixed figure."""

import os
import resource
import subprocess
import sys
import time
import tracemalloc
from unittest import mock

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import rnn_scratch as rs
from rnn_scratch.backend import peak_bytes
from rnn_scratch.functional import CELLS
from rnn_scratch.layers import make_layer

from .test_cli import run_inline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


def _free(n):
    """The machine's free memory replaced by ``n`` bytes (the guard's only view of the machine)."""
    return mock.patch("rnn_scratch.backend.available_bytes", return_value=n)


def _traced_peak(fn):
    """(exception raised by fn or None, bytes allocated at the peak while it ran)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            fn()
            error = None
        except Exception as exc:  # noqa: BLE001 -- returned for the caller to judge
            error = exc
        return error, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


# -- F8: the estimate against measured peaks -----------------------------------------------------------------
def test_estimate_holds_the_measured_peak_over_the_layer_direction_mode_grid():
    """Every registered cell x 1..3 layers x uni/bidirectional x full/checkpointed BPTT: the tracemalloc peak
    of a forward + backward is at most the estimate, and the estimate at most 1.25 x the peak. Sizes: u = T B H
    = 160k float64 numbers (1.25 MiB), so the call's fixed costs (~0.2 MiB) stay small."""
    T, B, I, H = 40, 64, 32, 64
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    douts = {D: rng.standard_normal((T, B, D * H)) for D in (1, 2)}
    misses = []
    with threadpool_limits(1, "blas"):  # OpenBLAS's spinning threads only cost time here
        for cell in CELLS:
            for num_layers in (1, 2, 3):
                for bidirectional in (False, True):
                    for mode in ("full", "checkpoint"):
                        layer = make_layer(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
                                           memory=mode, dtype="float64", seed=0)

                        def call(layer=layer, dout=douts[2 if bidirectional else 1]):
                            out, _ = layer(x)
                            layer.backward(dout)

                        peak, estimate = peak_bytes(call), layer.bptt_bytes(T, B)
                        if not peak <= estimate <= 1.25 * peak:
                            misses.append(f"{cell} L={num_layers} bi={bidirectional} {mode}: estimate/peak "
                                          f"{estimate / peak:.3f}")
    assert not misses, misses


def test_checkpointed_bptt_is_guarded_too_and_the_guard_comes_before_the_copy_and_the_finiteness_check():
    """F8: memory='checkpoint' was never checked, and the full-BPTT check ran after x.copy() and a full-size
    isfinite temporary. Both modes are refused now with (almost) nothing allocated."""
    x = np.zeros((100_000, 32, 1), dtype="float32")  # 12.8 MB: the copy would show in the peak
    for mode in ("full", "checkpoint"):
        layer = rs.LSTM(1, 128, memory=mode)
        need = layer.bptt_bytes(100_000, 32)
        with _free(need // 2):
            error, peak = _traced_peak(lambda layer=layer: layer(x))
        assert isinstance(error, MemoryError), (mode, error)
        assert f"memory={mode!r}: seq_len=100000, batch=32 needs about" in str(error)
        assert peak < x.nbytes // 10, (mode, peak)
        with _free(need * 2):  # and a call that fits runs
            layer(x[:50])


def test_the_estimate_counts_what_stays_alive_in_both_directions_and_all_layers():
    """F8's worst cases (5-layer bidirectional tanh RNN, 3-layer bidirectional LSTM, measured up to 1.76 x the
    old estimate): the measured peak stays below the estimate at a second, differently shaped size."""
    T, B, I, H = 60, 24, 8, 48
    x = np.random.default_rng(1).standard_normal((T, B, I))
    dout = np.ones((T, B, 2 * H))
    with threadpool_limits(1, "blas"):
        for cell, num_layers in (("rnn_tanh", 5), ("lstm", 3)):
            for mode in ("full", "checkpoint"):
                layer = make_layer(cell, I, H, num_layers=num_layers, bidirectional=True, memory=mode,
                                   dtype="float64", seed=0)

                def call(layer=layer):
                    layer(x)
                    layer.backward(dout)

                assert peak_bytes(call) <= layer.bptt_bytes(T, B), (cell, mode)


# -- F15: sizes that cannot fit --------------------------------------------------------------------------------
@pytest.mark.parametrize("make, what", [
    (lambda: rs.GRU(1, 10**9), r"GRU\(1, 1000000000.*\): the parameters needs about .* EiB"),
    (lambda: rs.LSTM(3, 4, num_layers=10**7, dtype="float64"), r"num_layers=10000000.*needs about 47.7 GiB"),
    (lambda: rs.RNN(1, 1, num_layers=10**400), r"needs more than 10\^24 bytes"),
    (lambda: rs.Linear(10**6, 10**6), r"Linear\(1000000, 1000000\): the parameters needs about 14.6 TiB"),
    (lambda: rs.Embedding(10**9, 100), r"Embedding\(1000000000, 100\): the parameters needs about 1.5 TiB"),
])
def test_parameters_that_cannot_fit_are_refused_before_any_is_allocated(make, what):
    with _free(8 * GIB):
        start = time.perf_counter()
        error, peak = _traced_peak(make)
        elapsed = time.perf_counter() - start
    assert isinstance(error, MemoryError) and error.args, error
    message = str(error)
    assert __import__("re").search(what, message), message
    assert message.endswith(" bytes, only about 8.0 GiB (8,589,934,592 bytes) is available") or message.endswith(
        " bytes), only about 8.0 GiB (8,589,934,592 bytes) is available"), message
    assert "\n" not in message
    assert peak < 1 << 20 and elapsed < 2, (peak, elapsed)


def test_a_size_that_fits_is_not_refused():
    with _free(8 * GIB):
        assert rs.GRU(4, 64, num_layers=2).num_parameters() == 3 * 64 * (4 + 64 + 2) + 3 * 64 * (64 + 64 + 2)


def _limited_child():
    resource.setrlimit(resource.RLIMIT_AS, (6 * GIB, 6 * GIB))  # a safety net: a regression cannot take the machine


def test_cli_sine_with_a_billion_hidden_units_exits_1_at_once_with_one_line_naming_the_memory(tmp_path):
    """F15: ``sine --hidden 1000000000`` was killed by the OOM killer after 40 s with all memory in use."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rnn_scratch", "sine", "--hidden", "1000000000", "--no-progress",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=_limited_child)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs about" in lines[0] and "bytes), only about" in lines[0], proc.stderr
    assert cpu < 2, cpu  # the process's own work (wall time on this shared machine also counts the others' load)
    assert wall < 30, wall
    assert not (tmp_path / "out").exists()  # F17: a refused command leaves no empty folder


@pytest.mark.parametrize("argv", [
    ["gradcheck", "--layers", "10000000"],
    ["gradcheck", "--seq-len", "1000000000"],
    ["gradcheck", "--hidden", "1000000"],
    ["sine", "--windows", "1000000000", "--out", "OUT"],
    ["sine", "--batch-size", "0", "--windows", "100000", "--window", "200", "--out", "OUT"],
    ["char", "--hidden", "100000000", "--out", "OUT"],
    ["char", "--batch-size", "100000000", "--out", "OUT"],
    ["gradflow", "--steps", "1000000000", "--out", "OUT"],
])
def test_cli_sizes_that_cannot_fit_are_refused_before_the_work(argv, tmp_path):
    """Every CLI number that decides an allocation passes the guard first (the machine's free memory fixed at
    8 GiB, so the verdict does not depend on this machine)."""
    with _free(8 * GIB):
        start = time.perf_counter()
        status, out, err = run_inline(*[str(tmp_path / "out") if a == "OUT" else a for a in argv])
    assert status == 1 and "needs about" in err and "only about 8.0 GiB" in err, (argv, err)
    assert len(err.strip().splitlines()) == 1 and time.perf_counter() - start < 5


# -- the guard's parts -------------------------------------------------------------------------------------
def test_param_shapes_and_counts_agree_with_constructed_layers_and_cost_nothing_for_huge_configs():
    from rnn_scratch import memory

    for mode in CELLS:
        for kw in (dict(num_layers=3, bidirectional=True), dict(bias=False), dict(num_layers=2)):
            layer = make_layer(mode, 3, 5, **kw)
            shapes = {n: tuple(p.shape) for n, p, _ in layer.named_parameters()}
            args = (mode, 3, 5, kw.get("num_layers", 1), kw.get("bias", True), kw.get("bidirectional", False))
            assert memory.param_shapes(*args) == shapes and list(memory.param_shapes(*args)) == list(shapes)
            sizes = [int(np.prod(s)) for s in shapes.values()]
            assert memory.param_count(*args) == (sum(sizes), len(sizes), max(sizes))
    start = time.perf_counter()
    numbers, arrays, _ = memory.param_count("lstm", 3, 4, 10**12)
    assert arrays == 4 * 10**12 and time.perf_counter() - start < 0.01
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        memory.param_shapes("gru", 3, 4, 0)
    with pytest.raises(ValueError, match="cell must be one of"):
        memory.param_count("elman", 3, 4)


def test_format_bytes_and_the_guard_floor():
    from rnn_scratch import memory

    assert memory.format_bytes(3 * GIB // 2) == "about 1.5 GiB (1,610,612,736 bytes)"
    assert memory.format_bytes(10**30) == "more than 10^24 bytes"
    with _free(0):
        memory.check_available(memory.GUARD_FLOOR - 1, "small")  # not worth asking the machine
        with pytest.raises(MemoryError, match="big needs about 64.0 MiB"):
            memory.check_available(memory.GUARD_FLOOR, "big")
    with _free(None):
        memory.check_available(10**30, "unknown machine")  # nothing to compare with: no verdict


def test_cgroup_headroom_reads_v2_and_v1_limits(tmp_path):
    from rnn_scratch.backend import cgroup_headroom

    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("805306368\n")
    (tmp_path / "memory.stat").write_text("anon 1\ninactive_file 100\n")
    assert cgroup_headroom(str(tmp_path)) == (1 << 30) - 805306368 + 100
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_headroom(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2147483648\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("2147483648\n")
    assert cgroup_headroom(str(v1)) == 0
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_headroom(str(v1)) is None
    assert cgroup_headroom(str(tmp_path / "none")) is None
