"""Cost of the gradient algorithms against the hidden size: time per step and peak memory, fitted growth exponents.

For every method of ``rnn_scratch.online.gradients`` and each hidden size H, one call on a sequence of T steps
(batch 1, input size 2, float64, a tanh RNN unless ``--cell``) is timed -- the methods and sizes taking turns,
the median of the repeats -- and its peak of allocated bytes is measured separately (tracemalloc slows
allocation). BLAS runs on one thread (threadpoolctl): with batch 1 the GEMMs are small, and on a shared
machine a second BLAS thread mostly spins. The growth exponent is the least-squares slope of log(cost)
against log(H) over the sizes from ``--fit-from`` up (the smaller sizes are dominated by Python's per-call
overhead), printed beside the theoretical one.

    python benchmarks/online_cost.py [--sizes 8 16 32 64 128] [--steps 16] [--repeat 5] [--cell rnn_tanh]

Writes benchmarks/results/online_cost.{json,txt,png} (``--out`` and ``--name`` change the folder and name).
Timings on a shared machine drift; the JSON records the load average before and after, and the BLAS in use.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rnn_scratch.backend import peak_bytes  # noqa: E402
from rnn_scratch.benchmark import interleaved_times, machine_info, spread  # noqa: E402
from rnn_scratch.layers import make_layer  # noqa: E402
from rnn_scratch.online import METHODS, gradients  # noqa: E402
from rnn_scratch.progress import progress  # noqa: E402

# theoretical growth in H of (time per step, peak memory of a T-step call) for T, I fixed and H large:
# P = H (I + H + 2) parameters; bptt and tbptt keep T (or k) steps of activations, O(T H), below the O(P) of
# the parameter gradients once H > T.
THEORY = {"bptt": (2, 2), "tbptt": (2, 2), "rtrl": (4, 3), "uoro": (2, 2), "kf-rtrl": (3, 2), "snap-1": (2, 2),
          "snap-2": (4, 3), "rflo": (2, 2)}
TRUNCATION = 4


def fit_exponent(hs, values):
    """The slope of log(values) against log(hs), least squares."""
    return float(np.polyfit(np.log(hs), np.log(values), 1)[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--steps", type=int, default=16, help="sequence length T of each call (default 16)")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per method and size (default 5)")
    ap.add_argument("--cell", default="rnn_tanh")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--fit-from", type=int, default=32, help="smallest H in the exponent fit (default 32)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--name", default="online_cost", help="file name of the results, without extension")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    if min(args.sizes) < 1 or args.steps < 1 or args.repeat < 1:
        ap.error("sizes, steps and repeat must be >= 1")
    fit_sizes = [h for h in args.sizes if h >= args.fit_from]
    if len(fit_sizes) < 2:
        ap.error(f"--fit-from {args.fit_from} leaves fewer than two sizes to fit")
    rng = np.random.default_rng(0)
    T, I = args.steps, 2
    calls = {}
    for H in args.sizes:
        layer = make_layer(args.cell, I, H, dtype="float64", seed=0)
        x, dout = rng.standard_normal((T, 1, I)), rng.standard_normal((T, 1, H))
        for method in args.methods:
            kw = dict(truncation=TRUNCATION) if method == "tbptt" else {}
            calls[(method, H)] = (lambda layer=layer, x=x, dout=dout, method=method, kw=kw:
                                  gradients(layer, x, dout, method=method, seed=0, **kw))
    load_before = os.getloadavg()
    started = time.perf_counter()
    with threadpool_limits(1):
        times = interleaved_times({f"{m}@{h}": fn for (m, h), fn in calls.items()}, repeat=args.repeat, warmup=1,
                                  block=1)
        peaks = {}
        with progress(list(calls.items()), desc="peak memory") as bar:
            for (method, H), fn in bar:
                peaks[(method, H)] = peak_bytes(fn)
    load_after = os.getloadavg()
    result = {"cell": args.cell, "steps": T, "input_size": I, "batch": 1, "dtype": "float64", "truncation": TRUNCATION,
              "sizes": args.sizes, "fit_sizes": fit_sizes, "blas_threads": 1, "seconds": time.perf_counter() - started,
              "load_average_before": load_before, "load_average_after": load_after, "machine": machine_info(),
              "command": "python benchmarks/online_cost.py " + " ".join(sys.argv[1:]), "methods": {}}
    for method in args.methods:
        per_step = [spread(times[f"{method}@{h}"])["median_s"] / T for h in args.sizes]
        memory = [peaks[(method, h)] for h in args.sizes]
        pick = [args.sizes.index(h) for h in fit_sizes]
        result["methods"][method] = {
            "seconds_per_step": per_step, "peak_bytes": memory,
            "spread": [spread(times[f"{method}@{h}"]) for h in args.sizes],
            "time_exponent": fit_exponent(fit_sizes, [per_step[i] for i in pick]),
            "memory_exponent": fit_exponent(fit_sizes, [memory[i] for i in pick]),
            "theory_time_exponent": THEORY[method][0], "theory_memory_exponent": THEORY[method][1]}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, args.name)
    with open(path + ".json", "w") as f:
        json.dump(result, f, indent=1)
    text = table(result)
    with open(path + ".txt", "w") as f:
        f.write(text + "\n")
    print(text)
    if not args.no_plot:
        plot(result, path + ".png")
        print("wrote", path + ".json", path + ".txt", path + ".png")


def table(result):
    hs = result["sizes"]
    lines = [f"{result['cell']}, T = {result['steps']} steps, batch 1, float64; exponents fitted over H in "
             f"{result['fit_sizes']}; BLAS on 1 thread; load average {result['load_average_before'][0]:.1f} before, "
             f"{result['load_average_after'][0]:.1f} after",
             "| method | " + " | ".join(f"ms/step H={h}" for h in hs) + " | time exponent (theory) | "
             + " | ".join(f"peak MiB H={h}" for h in hs) + " | memory exponent (theory) |",
             "|" + " --- |" * (2 * len(hs) + 3)]
    for method, r in result["methods"].items():
        lines.append(f"| {method} | " + " | ".join(f"{1e3 * s:.3g}" for s in r["seconds_per_step"])
                     + f" | {r['time_exponent']:.2f} ({r['theory_time_exponent']}) | "
                     + " | ".join(f"{b / 2**20:.3g}" for b in r["peak_bytes"])
                     + f" | {r['memory_exponent']:.2f} ({r['theory_memory_exponent']}) |")
    return "\n".join(lines)


def plot(result, path):
    from rnn_scratch.plots import new_figure, save_figure

    fig, (ax_t, ax_m) = new_figure(1, 2, figsize=(11, 4.2))
    hs = result["sizes"]
    for i, (method, r) in enumerate(result["methods"].items()):
        style = dict(color=f"C{i}", ls="-" if i % 2 == 0 else "--", marker="o", ms=3, label=method)
        ax_t.loglog(hs, np.array(r["seconds_per_step"]) * 1e3, **style)
        ax_m.loglog(hs, np.array(r["peak_bytes"]) / 2**20, **style)
    for ax, title, unit in ((ax_t, "time per step", "ms"), (ax_m, f"peak memory of a {result['steps']}-step call",
                                                             "MiB")):
        ax.set_xlabel("hidden size H")
        ax.set_ylabel(unit)
        ax.set_title(f"{title} ({result['cell']}, batch 1)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
