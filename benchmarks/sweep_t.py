"""Time and memory of one forward + backward against the sequence length T, full vs checkpointed BPTT.

B=32, I=H=128, float32, NumPy, LSTM and GRU, T = 10 ... 100 000. The two memory modes take turns at each
T (as the main benchmark does); the peak is measured in a separate, untimed call (``tracemalloc``, which
slows allocation). Two memory figures per case:

- ``peak_bytes``: everything the call allocates, including the input's copy, the output and dx that it
  returns (3 of the T B H-sized arrays for I = H: no BPTT can go below them);
- ``bptt_bytes``: the peak minus those returned and copied arrays: what back-propagation through time
  itself holds (full: every step's activations; checkpointed: the checkpoints and one segment).

Full BPTT at T = 100 000 needs about 23 GiB here and is refused up front (MemoryError, recorded), not
killed by the OS. Writes benchmarks/results/sweep_t.{json,txt,png}.

    python benchmarks/sweep_t.py [--lengths 10 100 1000 10000 100000] [--cells lstm gru]
"""

import argparse
import json
import os

import numpy as np

from rnn_scratch.backend import peak_bytes
from rnn_scratch.benchmark import default_cells, interleaved_times, machine_info, spread
from rnn_scratch.functional import cell_choices
from rnn_scratch.layers import make_layer

HERE = os.path.dirname(os.path.abspath(__file__))
B, I, H = 32, 128, 128


def case(cell, T, memory):
    layer = make_layer(cell, I, H, seed=0, check_finite=False, memory=memory)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype("float32")
    dout = rng.standard_normal((T, B, H)).astype("float32")

    def run():
        out, _ = layer(x)
        layer.backward(dout)

    return layer, run


def measure(cell, T):
    """{memory mode: row} for one cell and length, the modes taking turns."""
    rows, fns = {}, {}
    for memory in ("full", "checkpoint"):
        layer, run = case(cell, T, memory)
        row = {"cell": cell, "T": T, "B": B, "I": I, "H": H, "memory": memory,
               "estimated_bytes": layer.bptt_bytes(T, B)}
        try:
            row["peak_bytes"] = peak_bytes(run)
        except MemoryError as exc:
            row["refused"] = str(exc)
            rows[memory] = row
            continue
        returned = 4 * T * B * (2 * I + H)  # x's copy, dx, out (float32)
        row["bptt_bytes"] = row["peak_bytes"] - returned
        rows[memory] = row
        fns[memory] = run
    repeat = 5 if T <= 1000 else (2 if T <= 10_000 else 1)
    times = interleaved_times(fns, repeat=repeat, warmup=1 if T <= 10_000 else 0) if fns else {}
    for memory, samples in times.items():
        rows[memory]["time"] = spread(samples)
        rows[memory]["seconds"] = rows[memory]["time"]["median_s"]
    return rows


def plot(rows, path):
    from rnn_scratch.plots import new_figure, save_figure

    fig, (ax_t, ax_m) = new_figure(1, 2, figsize=(10, 4))
    colors = iter(f"C{k}" for k in range(10))
    for cell in sorted({r["cell"] for r in rows}):
        color = {memory: next(colors) for memory in ("full", "checkpoint")}
        for memory, style in (("full", "-"), ("checkpoint", "--")):
            pts = [r for r in rows if r["cell"] == cell and r["memory"] == memory and "seconds" in r]
            if not pts:
                continue
            T = [r["T"] for r in pts]
            ax_t.loglog(T, [r["seconds"] for r in pts], style, marker="o", color=color[memory],
                        label=f"{cell} {memory}")
            ax_m.loglog(T, [r["bptt_bytes"] / 2**20 for r in pts], style, marker="o", color=color[memory],
                        label=f"{cell} {memory}")
        refused = [r for r in rows if r["cell"] == cell and "refused" in r]
        if refused:  # what full BPTT would have held (its estimate), had it not been refused
            ax_m.loglog([r["T"] for r in refused], [(r["estimated_bytes"] - 4 * r["T"] * B * (2 * I + H)) / 2**20
                                                    for r in refused], "x", ms=9, color=color["full"],
                        label=f"{cell} full: refused (estimate)")
    Ts = np.array(sorted({r["T"] for r in rows}), dtype=float)
    for ax in (ax_t, ax_m):
        lo, hi = ax.get_ylim()
        anchor = np.sqrt(lo * hi)
        ax.loglog(Ts, anchor * Ts / Ts[len(Ts) // 2], color="0.5", lw=0.8, ls=":", label="slope T")
        ax.loglog(Ts, anchor * np.sqrt(Ts / Ts[len(Ts) // 2]), color="0.5", lw=0.8, ls="-.", label="slope sqrt(T)")
        ax.set_xlabel("sequence length T")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_t.set_ylabel("seconds, forward + backward")
    ax_m.set_ylabel("MiB held by BPTT (beyond x, out, dx)")
    ax_t.set_title(f"time, B={B} I={I} H={H} float32", fontsize=9)
    ax_m.set_title("memory: full BPTT grows as T, checkpointed as sqrt(T)", fontsize=9)
    return save_figure(fig, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[10, 100, 1000, 10_000, 100_000])
    ap.add_argument("--cells", nargs="+", choices=cell_choices(), default=None,
                    help="default: every registered cell but the variants of one torch class")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from the saved JSON")
    args = ap.parse_args()
    if args.replot:
        with open(os.path.join(args.out, "sweep_t.json")) as f:
            print("wrote", plot(json.load(f)["rows"], os.path.join(args.out, "sweep_t.png")))
        return
    rows = []
    lines = [f"{'cell':<6}{'T':>8}  {'full s':>9}{'ckpt s':>9}{'ckpt/full':>10}  {'full MiB':>10}{'ckpt MiB':>10}"
             f"{'ratio':>8}  {'full BPTT MiB':>14}{'ckpt BPTT MiB':>14}{'ratio':>8}"]
    for cell in args.cells or default_cells():
        for T in args.lengths:
            r = measure(cell, T)
            rows += list(r.values())
            f, c = r["full"], r["checkpoint"]
            if "refused" in f:
                lines.append(f"{cell:<6}{T:>8}  {'refused':>9}{c['seconds']:>9.3f}{'':>10}  "
                             f"{f['estimated_bytes'] / 2**20:>9.0f}*{c['peak_bytes'] / 2**20:>10.1f}{'':>8}  "
                             f"{'':>14}{c['bptt_bytes'] / 2**20:>14.2f}")
            else:
                lines.append(f"{cell:<6}{T:>8}  {f['seconds']:>9.3f}{c['seconds']:>9.3f}"
                             f"{c['seconds'] / f['seconds']:>10.2f}  {f['peak_bytes'] / 2**20:>10.1f}"
                             f"{c['peak_bytes'] / 2**20:>10.1f}{f['peak_bytes'] / c['peak_bytes']:>8.1f}  "
                             f"{f['bptt_bytes'] / 2**20:>14.1f}{c['bptt_bytes'] / 2**20:>14.2f}"
                             f"{f['bptt_bytes'] / c['bptt_bytes']:>8.0f}")
            print(lines[-1], flush=True)
    lines.insert(0, "forward + backward, NumPy, float32; ratio = full / checkpointed; * = estimate of a refused call")
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sweep_t.json"), "w") as f:
        json.dump({"machine": machine_info(), "command": "python benchmarks/sweep_t.py", "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "sweep_t.txt"), "w") as f:
        f.write(text + "\n")
    print("wrote", plot(rows, os.path.join(args.out, "sweep_t.png")))


if __name__ == "__main__":
    main()
