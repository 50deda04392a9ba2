"""The benchmark harness: spreads and settings in the JSON; plots that need no NumPy column."""

import json

from rnn_scratch import benchmark
from rnn_scratch.functional import CELLS


def _fake_result(backends):
    """A result as run() makes it, with made-up times, for the plotting code."""
    rows = []
    for cell in list(CELLS)[:2]:
        for h in (64, 128, 256):
            times = {}
            for k, b in enumerate(backends):
                t = {"median_s": 1e-3 * h * (k + 1), "min_s": 1e-3 * h, "max_s": 2e-3 * h, "n": 3}
                times[b] = benchmark._row_times(cell, 100, 64, h, h, {"forward": t, "forward_backward": t})
            rows.append({"cell": cell, "size": f"sweep_H{h}", "T": 100, "B": 64, "I": h, "H": h, "times": times})
    return {"backends": backends, "rows": rows, "gemm_gflops_float32": 1.0, "machine": {}}


def test_plot_needs_no_numpy_column(tmp_path):
    paths = benchmark.plot(_fake_result(["cupy", "torch_cuda"]), str(tmp_path))  # raised KeyError: 'numpy' before
    assert [p.split("/")[-1] for p in paths] == ["bench_time_vs_hidden.png"]
    paths = benchmark.plot(_fake_result(["numpy", "cupy", "torch_cpu", "torch_cuda"]), str(tmp_path))
    assert [p.split("/")[-1] for p in paths] == ["bench_time_vs_hidden.png", "bench_gpu_speedup.png"]
    assert benchmark.table(_fake_result(["cupy", "torch_cuda"])).count("\n") >= 7


def test_json_keeps_the_spread_the_method_and_the_settings(tmp_path):
    result = benchmark.run(sizes=["tiny"], cells=["gru"], backends=["numpy"], quick=True, sweep_max=0,
                           show_progress=False, repeat=2, seed=3)
    path = benchmark.save(result, str(tmp_path), "t")
    saved = json.load(open(path))
    timing = saved["rows"][0]["times"]["numpy"]["forward_backward"]
    assert timing["min_s"] <= timing["median_s"] <= timing["max_s"] and timing["n"] >= 2
    assert saved["seed"] == 3 and saved["tf32"] is False and saved["method"]["repeat"] == 2
    assert "cupy_tf32_env" in saved["machine"]["gpu_settings"]
    assert saved["machine"]["blas"]["libraries"][0]["architecture"]  # which OpenBLAS kernel ran
