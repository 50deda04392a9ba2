"""Vanishing and exploding gradients, read top to bottom.

A loss sits on the last output of a 100-step sequence. Back-propagating it, the gradient reaching
h_{T-k} is a product of k step Jacobians. For a vanilla tanh RNN each Jacobian is
diag(1 - h^2) W_hh, so its size is governed by W_hh: below 1 the gradient shrinks geometrically,
above 1 it can grow. Everything below comes from the hand-written step backward functions.

Run:  python examples/vanishing_gradients.py [--steps 100] [--backend numpy|cupy] [--out out]
"""

import argparse
import os

import numpy as np

import rnn_scratch as rs
from rnn_scratch.analysis import (
    jacobian_products,
    set_spectral_radius,
    spectral_norms,
    step_jacobians,
    trace_gradients,
)
from rnn_scratch.plots import plot_curves

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=100, help="sequence length T (>= 2; default 100)")
parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                    help="where the layers live (default: CuPy if a GPU is usable); the analysis runs on the host")
parser.add_argument("--out", default="out")
args = parser.parse_args()
if args.steps < 2:
    parser.error(f"--steps must be an integer >= 2, got {args.steps}")
T, H = args.steps, 16
BACK = [k for k in (10, 50) if k < T] or [T - 1]  # how far back the printed ratios look (what T allows)


def steps_back(ratio):
    return ", ".join(f"{k} back {ratio[k]:.1e}" for k in BACK)


rng = np.random.default_rng(0)
x = rng.standard_normal((T, 4, 1))
dout = np.zeros((T, 4, H))
dout[-1] = rng.standard_normal((4, H))  # the loss only sees the last step

# 1. One tanh RNN, three scales of the recurrent matrix.
curves = {}
for radius in (0.5, 1.0, 2.0):
    rnn = rs.RNN(1, H, dtype="float64", seed=0, backend=args.backend)
    set_spectral_radius(rnn, radius)
    norms = trace_gradients(rnn, x, dout=dout).hidden_grad_norms[(0, 0)]
    ratio = norms[::-1] / norms[-1]  # index k = steps back
    curves[f"tanh RNN, spectral radius {radius}"] = ratio
    print(f"radius {radius}: the gradient relative to the last step's: {steps_back(ratio)}")

# 2. The same measurement for an LSTM: its cell state adds instead of multiplying through W_hh.
lstm = rs.LSTM(1, H, dtype="float64", seed=0, backend=args.backend)
lstm.params["bias_hh_l0"][H:2 * H] = 3.0  # forget gate biased open (a common initialisation trick)
norms = trace_gradients(lstm, x, dout=dout).hidden_grad_norms[(0, 0)]
curves["LSTM, forget bias +3"] = norms[::-1] / norms[-1]
print(f"LSTM with forget bias 3: {steps_back(curves['LSTM, forget bias +3'])}")

# 3. The step Jacobians themselves, and the norm of their products dh_T/dh_t (first 30 steps).
rnn = rs.RNN(1, H, dtype="float64", seed=0, backend=args.backend)
set_spectral_radius(rnn, 0.9)
jac = step_jacobians(rnn, x[:30])
print("||J_t|| for the first 5 steps:", np.round(spectral_norms(jac[:5]), 3))
products = jacobian_products(jac)
shown = sorted({t for t in (0, 10, 20, len(jac) - 1) if t < len(jac)})
print(f"||dh_T/dh_t|| for t = {shown}:", [f"{v:.1e}" for v in spectral_norms(products[shown])])

path = os.path.join(args.out, "example_vanishing.png")
plot_curves({k: np.maximum(v, 1e-300) for k, v in curves.items()}, title="gradient reaching h_{T-k}, relative to h_T",
            xlabel="steps back k", ylabel="ratio", logy=True, start=0, path=path)
print("wrote", path)
