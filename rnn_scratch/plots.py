"""Plots (matplotlib). Each function returns the :class:`matplotlib.figure.Figure`, and also writes a PNG when
given ``path``; a notebook shows the returned figure, and a caller can restyle it before saving.

Figures are made with matplotlib's object API (no pyplot state, no GUI backend needed), so they work
headless and never pile up in pyplot's figure list.
"""

from __future__ import annotations

import contextlib
import os


def new_figure(nrows=1, ncols=1, figsize=(6, 3.5), **subplots_kw):
    """A fresh ``(Figure, axes)``: ``axes`` as ``Figure.subplots`` returns it."""
    from ._optional import require

    require("matplotlib", "plotting")
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots_kw)


def save_figure(fig, path, dpi=110):
    """Write ``fig`` as a PNG at ``path`` (folders made as needed); returns ``path``. A failed write is an
    OSError naming the file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    with naming_the_file(path):
        fig.savefig(path, dpi=dpi)
    return path


def write_text(path, text):
    """Write ``text`` to ``path``; a failed write (a full disk...) is an OSError naming the file."""
    with naming_the_file(path), open(path, "w") as f:
        f.write(text)
    return path


@contextlib.contextmanager
def naming_the_file(path):
    """An OSError inside becomes one that names ``path`` (``write()`` on a full disk does not say which file)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), path) from exc  # "[Errno 28] No space ...: 'path'"


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_forecast(truth, prediction, *, history=None, title="50-step forecast", path=None, truth_label=None,
                  prediction_label="autoregressive forecast"):
    """The forecast against the true values, after the end of the input series when ``history`` is given."""
    import numpy as np

    fig, ax = new_figure(figsize=(8, 4))
    n_hist = 0 if history is None else len(history)
    if history is not None:
        ax.plot(np.arange(n_hist), history, color="0.6", label="input series (end)")
        ax.axvline(n_hist - 0.5, color="k", lw=0.8, ls=":")
    steps = np.arange(n_hist, n_hist + len(truth))
    ax.plot(steps, truth, color="C0", lw=2, label=truth_label or "true continuation")
    ax.plot(steps, prediction, color="C3", ls="--", lw=2, label=prediction_label)
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize=8, frameon=False)
    return _finish(fig, path)


def plot_loss(losses, *, title="training loss", ylabel="MSE", path=None, start=1):
    """Loss per epoch on a log scale; the x axis counts epochs from ``start``."""
    fig, ax = new_figure()
    ax.semilogy(range(start, start + len(losses)), losses, marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{ylabel} (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, path)


def plot_curves(curves, *, title, xlabel="epoch", ylabel="value", logy=False, start=1, path=None):
    """Several named curves on one axis: curves = {label: list of values}; x runs from ``start``."""
    fig, ax = new_figure()
    for label, values in curves.items():
        (ax.semilogy if logy else ax.plot)(range(start, start + len(values)), values, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)
