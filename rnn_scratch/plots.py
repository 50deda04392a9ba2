"""Plots (matplotlib, headless Agg backend). Each function writes a PNG and returns its path."""

from __future__ import annotations

import os


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_forecast(path, history, truth, prediction, title="50-step forecast"):
    """The end of the training series, then the true continuation against the forecast."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    n_hist = len(history)
    ax.plot(np.arange(n_hist), history, color="0.6", label="training series (end)")
    steps = np.arange(n_hist, n_hist + len(truth))
    ax.plot(steps, truth, color="C0", lw=2, label="true continuation")
    ax.plot(steps, prediction, color="C3", ls="--", lw=2, label="autoregressive forecast")
    ax.axvline(n_hist - 0.5, color="k", lw=0.8, ls=":")
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_loss(path, losses, title="training loss", ylabel="MSE"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(range(1, len(losses) + 1), losses, marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{ylabel} (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_curves(path, curves, title, xlabel="epoch", ylabel="value", logy=False, start=1):
    """Several named curves on one axis: curves = {label: list of values}; x runs from ``start``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        (ax.semilogy if logy else ax.plot)(range(start, start + len(values)), values, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
