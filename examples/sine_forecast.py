"""Sine-wave forecasting, step by step: windows -> many-to-one GRU -> Adam -> 50-step autoregressive forecast.

Run:  python examples/sine_forecast.py [--epochs 40] [--cell gru] [--out out]
"""

import argparse

import numpy as np

from rnn_scratch.models import ManyToOneRegressor
from rnn_scratch.optim import Adam
from rnn_scratch.plots import plot_forecast, plot_loss
from rnn_scratch.training import fit, forecast, sine_series, sliding_windows

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=40)
parser.add_argument("--cell", default="gru")
parser.add_argument("--out", default="out")
args = parser.parse_args()

# 1. Data: 1000 samples of sin(t) to learn from, 50 more to score the forecast against.
series = sine_series(1000, horizon=50)
train, truth = series[:1000], series[1000:]
x, y = sliding_windows(train, window=20)  # x: (980, 20, 1), y: (980, 1) the value after each window

# 2. Model: recurrent layer + linear head on the last hidden state.
model = ManyToOneRegressor(args.cell, input_size=1, hidden_size=32, output_size=1, seed=0)

# 3. Train: mini-batches of 64, Adam. Every gradient comes from the hand-written backward passes.
losses = fit(model, x.astype("float32"), y.astype("float32"), Adam(model.parameters(), lr=5e-3),
             epochs=args.epochs, batch_size=64)

# 4. Forecast 50 steps, each prediction fed back as the next input.
pred = forecast(model, train[-20:, None], steps=50)
mse = float(np.mean((pred - truth) ** 2))
print(f"final training loss {losses[-1]:.2e}; 50-step forecast MSE {mse:.2e}")
print("wrote", plot_forecast(f"{args.out}/example_sine_forecast.png", train[-100:], truth, pred,
                             f"{args.cell}: forecast MSE {mse:.2e}"),
      plot_loss(f"{args.out}/example_sine_loss.png", losses))
