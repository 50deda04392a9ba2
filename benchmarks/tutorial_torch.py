"""The reference tutorial's PyTorch forecaster, as its code does it: the seed preset's twin.

Data: ``t = np.linspace(0, N + L, N + L)``, ``data = np.sin(t)``, window i = ``data[i:i+L]``, target
``data[i+L]``; ``nn.RNN(1, 50, batch_first=True, nonlinearity='tanh')`` + ``nn.Linear(50, 1)`` on the
last step; MSE; Adam lr 1e-3; 30 full-batch epochs printing ``Epoch k, Loss: x.xxxx``; a 50-step
forecast from window 0 that passes each call's hidden state to the next call
(``y_pred, h = model(current_input, h)``); a plot of the forecast against ``y[:50]``.

    python benchmarks/tutorial_torch.py [--seed 0] [--out out]

:func:`run` is what ``benchmarks/seed_study.py`` and the tests call (optionally from given initial
weights, in float64).
"""

import argparse
import os

import numpy as np
import torch
import torch.nn as nn

N, L = 1000, 20


def tutorial_data():
    t = np.linspace(0, N + L, N + L)
    data = np.sin(t)
    X, y = [], []
    for i in range(N):
        X.append(data[i:i + L])
        y.append(data[i + L])
    return np.array(X), np.array(y)


class RNNModel(nn.Module):
    def __init__(self, input_size=1, hidden_size=50, output_size=1):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True, nonlinearity="tanh")
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x, h=None):
        out, h = self.rnn(x, h)
        return self.fc(out[:, -1, :]), h


def run(seed=None, dtype=torch.float32, initial_state_dict=None, verbose=True):
    """Train and forecast as the tutorial does. ``seed``: torch.manual_seed (None: unseeded, as the tutorial);
    ``initial_state_dict``: start from these weights. Returns {"losses", "predictions", "truth"}."""
    if seed is not None:
        torch.manual_seed(seed)
    X_np, y_np = tutorial_data()
    X = torch.tensor(X_np, dtype=dtype).unsqueeze(-1)
    y = torch.tensor(y_np, dtype=dtype).unsqueeze(-1)
    model = RNNModel().to(dtype)
    if initial_state_dict is not None:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in initial_state_dict.items()})
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    losses = []
    for epoch in range(30):
        model.train()
        optimizer.zero_grad()
        output, _ = model(X)
        loss = criterion(output, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if verbose:
            print(f"Epoch {epoch}, Loss: {loss.item():.4f}")
    model.eval()
    predictions = []
    current_input = X[0:1]
    h = None
    with torch.no_grad():
        for _ in range(50):
            y_pred, h = model(current_input, h)
            predictions.append(y_pred.item())
            current_input = torch.cat((current_input[:, 1:, :], y_pred.unsqueeze(1)), dim=1)
    return {"losses": losses, "predictions": np.array(predictions), "truth": y_np[:50]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None, help="torch seed (default: unseeded, as the tutorial)")
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    result = run(args.seed)
    mse = float(np.mean((result["predictions"] - result["truth"]) ** 2))
    print(f"forecast MSE over 50 steps (carried state): {mse:.3e}")
    from rnn_scratch.plots import plot_forecast

    path = os.path.join(args.out, "tutorial_torch_forecast.png")
    plot_forecast(result["truth"], result["predictions"], title="RNN Time-Series Forecasting vs Original Sine Wave",
                  truth_label="Original", prediction_label="Predicted", path=path)
    print("wrote", path)


if __name__ == "__main__":
    main()
