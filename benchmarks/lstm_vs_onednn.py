"""Where the LSTM time goes, against PyTorch's oneDNN LSTM: is the NumPy target reachable?

PyTorch on the CPU runs ``nn.LSTM`` through oneDNN's fused RNN primitive (``aten::mkldnn_rnn_layer``,
forward and backward), while its GRU and tanh RNN are per-step ATen ops. This script times, for the
LSTM rows of the grid, taking turns as the main benchmark does (forward+backward, float32):

- ``ours``: our NumPy LSTM layer;
- ``gemm_floor``: only the GEMMs our kernel performs (input projection, one GEMM per step forward
  and backward, weight and input gradients), each at OpenBLAS's own multi-threaded speed, with no
  gate math at all: a lower bound for any NumPy/OpenBLAS implementation of this algorithm;
- ``torch``: ``torch.nn.LSTM`` as it comes (oneDNN);
- ``torch_no_onednn``: the same with ``torch.backends.mkldnn`` disabled (per-step ATen ops).

    python benchmarks/lstm_vs_onednn.py [--sizes seed mid large xl] [--repeat 6]

Writes benchmarks/results/lstm_vs_onednn.{json,txt}.
"""

import argparse
import json
import os
import warnings

import numpy as np

from rnn_scratch import LSTM
from rnn_scratch.benchmark import GRID, interleaved_median_times, machine_info
from rnn_scratch.functional._gemm import RecurrentWeight

HERE = os.path.dirname(os.path.abspath(__file__))


def gemm_floor(T, B, I, H, rng):
    """The GEMMs of one LSTM forward+backward (same shapes, count and orientation as the kernel: the recurrent
    products feature-major where :func:`~rnn_scratch.functional._gemm.feature_major` says so), nothing else."""
    G = 4 * H
    x = rng.standard_normal((T * B, I)).astype("float32")
    w_ih = rng.standard_normal((G, I)).astype("float32")
    w_hh = RecurrentWeight(np, rng.standard_normal((G, H)).astype("float32"), B)
    h = rng.standard_normal((T, B, H)).astype("float32")
    dg = rng.standard_normal((T, B, G)).astype("float32")
    fwd_scratch, bwd_scratch, dh = w_hh.scratch(B), w_hh.scratch(B, backward=True), np.empty((B, H), "float32")

    def run():
        x @ w_ih.T  # input projection
        for t in range(T):
            w_hh.h_wt(h[t], fwd_scratch)  # forward recurrence
        for t in range(T):
            w_hh.product(dh, dg[t], bwd_scratch)  # backward recurrence
        d = dg.reshape(T * B, G)
        d.T @ x, d.T @ h.reshape(T * B, H), d @ w_ih  # dW_ih, dW_hh, dx

    return run


def case_fns(T, B, I, H, rng):
    import torch

    x = rng.standard_normal((T, B, I)).astype("float32")
    dout = rng.standard_normal((T, B, H)).astype("float32")
    ours = LSTM(I, H, dtype="float32", backend="numpy", seed=0, check_finite=False)
    module = torch.nn.LSTM(I, H)
    xt, dt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)

    def ours_fb():
        ours(x)
        ours.backward(dout)

    def torch_fb():
        out, _ = module(xt)
        out.backward(dt)

    def torch_plain_fb():
        with torch.backends.mkldnn.flags(enabled=False):
            torch_fb()

    return {"ours": ours_fb, "gemm_floor": gemm_floor(T, B, I, H, rng), "torch": torch_fb,
            "torch_no_onednn": torch_plain_fb}


def main(argv=None):
    warnings.filterwarnings("ignore", message=".*TF32.*")  # torch's note when toggling oneDNN

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["seed", "tiny", "mid", "large", "xl"])
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--name", default="lstm_vs_onednn", help="results file name (default lstm_vs_onednn)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for name in args.sizes:
        T, B, I, H = GRID[name]
        fns = case_fns(T, B, I, H, rng)
        times = interleaved_median_times(fns, args.repeat, warmup=1, min_time=1.0)
        rows.append({"size": name, "T": T, "B": B, "I": I, "H": H, "forward_backward_s": times})
        print(name, "  ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    lines = [f"{'size':<7}" + "".join(f"{k + ' ms':>19}" for k in fns)
             + f"{'ours/torch':>12}{'floor/torch':>13}{'ours/no_onednn':>16}{'ours/floor':>12}"]
    for r in rows:
        t = r["forward_backward_s"]
        lines.append(f"{r['size']:<7}" + "".join(f"{t[k] * 1e3:>19.2f}" for k in fns)
                     + f"{t['ours'] / t['torch']:>12.2f}{t['gemm_floor'] / t['torch']:>13.2f}"
                     + f"{t['ours'] / t['torch_no_onednn']:>16.2f}{t['ours'] / t['gemm_floor']:>12.2f}")
    text = "LSTM forward+backward, float32, taking turns (median)\n" + "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump({"machine": machine_info(), "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, f"{args.name}.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
