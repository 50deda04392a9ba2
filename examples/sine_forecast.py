"""Sine-wave forecasting, step by step: the tutorial's windows -> many-to-one GRU -> Adam -> 50-step forecast.

Run:  python examples/sine_forecast.py [--epochs 40] [--cell gru] [--backend numpy|cupy] [--out out]
"""

import argparse
import os

import numpy as np

import rnn_scratch as rs
from rnn_scratch.models import ManyToOneRegressor
from rnn_scratch.optim import Adam
from rnn_scratch.plots import plot_forecast, plot_loss
from rnn_scratch.training import fit, forecast, tutorial_sine

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=40)
parser.add_argument("--cell", default="gru")
parser.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: CuPy if a GPU is usable")
parser.add_argument("--out", default="out")
args = parser.parse_args()

# 1. Data: t = linspace(0, 1020, 1020), sin(t); window i is data[i:i+20], its target data[i+20], i < 1000.
data, x, y = tutorial_sine(n_windows=1000, window=20)  # x: (1000, 20, 1), y: (1000, 1)

# 2. Model: recurrent layer + linear head on the last hidden state. The data goes where the model runs.
model = ManyToOneRegressor(args.cell, input_size=1, hidden_size=32, output_size=1, seed=0, backend=args.backend)
xb, yb = (rs.to_backend(a.astype("float32"), model.backend) for a in (x, y))

# 3. Train: mini-batches of 64, Adam. Every gradient comes from the hand-written backward passes.
losses = fit(model, xb, yb, Adam(model.parameters(), lr=5e-3), epochs=args.epochs, batch_size=64)

# 4. Forecast 50 steps from window 0, each prediction fed back as the next input; score against y[:50].
pred = forecast(model, x[0], steps=50)
mse = float(np.mean((pred - y[:50, 0]) ** 2))
print(f"final training loss {losses[-1]:.2e}; 50-step forecast MSE {mse:.2e} (backend {model.backend})")
forecast_png, loss_png = (os.path.join(args.out, f"example_sine_{k}.png") for k in ("forecast", "loss"))
plot_forecast(y[:50, 0], pred, history=x[0, :, 0], title=f"{args.cell}: forecast MSE {mse:.2e}", path=forecast_png)
plot_loss(losses, path=loss_png)
print("wrote", forecast_png, loss_png)
