"""One-to-many: a 2-vector (frequency, phase) sets the initial state; the GRU unrolls the whole wave from it.

Every step's input is zero, so all the information must flow through the initial state. (With
``feedback=True`` the model instead reads its previous output, teacher-forced in training; errors then
compound when it generates freely: try ``--feedback``.) The plot shows generated waves for unseen
(frequency, phase) pairs.

Run:  python examples/one_to_many.py [--epochs 60] [--backend numpy|cupy] [--out out]
"""

import argparse
import os

import numpy as np

import rnn_scratch as rs
from rnn_scratch.losses import mse
from rnn_scratch.models import OneToManyGenerator
from rnn_scratch.optim import Adam
from rnn_scratch.plots import new_figure, save_figure
from rnn_scratch.progress import progress

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=60)
parser.add_argument("--feedback", action="store_true")
parser.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: CuPy if a GPU is usable")
parser.add_argument("--out", default="out")
args = parser.parse_args()

T = 30
rng = np.random.default_rng(0)


model = OneToManyGenerator("gru", cond_size=2, hidden_size=48, output_size=1, feedback=args.feedback, seed=0,
                           backend=args.backend)


def batch(n):
    """(conditions, waves) on the host, and the same on the model's backend."""
    cond = np.stack([rng.uniform(0.2, 0.6, n), rng.uniform(0, np.pi, n)], axis=1)
    t = np.arange(T)
    waves = np.sin(cond[:, :1] * t[None, :] + cond[:, 1:])[..., None]
    cond, waves = cond.astype("float32"), waves.astype("float32")
    return cond, waves, rs.to_backend(cond, model.backend), rs.to_backend(waves, model.backend)


opt = Adam(model.parameters(), lr=5e-3)
with progress(range(args.epochs), desc="one-to-many") as bar:
    for _ in bar:
        for _ in range(10):
            _, _, cond_b, waves_b = batch(64)
            opt.zero_grad()
            loss, dy = mse(model(cond_b, waves_b), waves_b)
            model.backward(dy)
            opt.step()
        bar.set(loss=loss)

cond, waves, cond_b, _ = batch(200)
generated = rs.to_numpy(model.generate(cond_b, T))
print(f"training loss {loss:.2e}; free-running generation MSE on unseen conditions "
      f"{float(np.mean((generated - waves) ** 2)):.2e}")
fig, axes = new_figure(1, 3, figsize=(10, 3), sharey=True)
for ax, k in zip(axes, range(3)):
    ax.plot(waves[k, :, 0], label="true")
    ax.plot(generated[k, :, 0], "--", label="generated")
    ax.set_title(f"freq {cond[k, 0]:.2f}, phase {cond[k, 1]:.2f}", fontsize=9)
axes[0].legend(fontsize=8)
print("wrote", save_figure(fig, os.path.join(args.out, "example_one_to_many.png")))
