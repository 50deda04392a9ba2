"""The ``gradflow`` experiments: vanishing/exploding gradients for each cell, over training, and under clipping."""

from __future__ import annotations

import os

import numpy as np

from ..functional import cell_names
from ..losses import mse
from ..memory import check_available
from ..models import ManyToOneRegressor, make_recurrent
from ..optim import Adam, clip_grad_norm, grad_norm
from ..progress import progress
from ..training import sine_series, sliding_windows
from .gradflow import set_spectral_radius, trace_gradients, vanishing_horizon


def norms_vs_distance(cells=None, radii=(0.5, 1.0, 1.5), steps=200, hidden=32, batch=8, seed=0,
                      show_progress=True):
    """||dL/dh_{T-k}|| / ||dL/dh_T|| for k = 0..T-1 with a loss on the last output only.

    Beyond T = 1000 steps the traces use checkpointed BPTT (bounded memory), so T can be many thousands.

    ``cells``: names (default every registered cell). Returns {(cell, radius): ratios array indexed by k
    (steps back)}.
    """
    cells = cell_names() if cells is None else cells
    check_available(8 * batch * steps * (1 + hidden), f"gradflow: the inputs of {steps} steps")  # then each trace
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, 1))
    dout = np.zeros((batch, steps, hidden))
    dout[:, -1] = rng.standard_normal((batch, hidden))
    results = {}
    for cell, radius in progress([(c, r) for c in cells for r in radii], desc="gradflow", disable=not show_progress):
        layer = make_recurrent(cell, 1, hidden, dtype="float64", backend="numpy", seed=seed)
        set_spectral_radius(layer, radius, seed=seed)
        with np.errstate(over="ignore", invalid="ignore"):
            norms = trace_gradients(layer, x, dout=dout, contributions=False).hidden_grad_norms[(0, 0)]
            results[(cell, radius)] = norms[::-1] / norms[-1]
    return results


def heatmap_over_training(cell="rnn", epochs=20, window=50, hidden=32, seed=0):
    """Train a forecaster on sine windows; after each epoch record ||dL/dh_t|| over one batch.

    Returns (epochs x window array of ratios to the last step, loss history).
    """
    series = sine_series(1000)
    x, y = sliding_windows(series, window)
    model = ManyToOneRegressor(cell, 1, hidden, 1, seed=seed, dtype="float64", backend="numpy")
    opt = Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    probe = rng.choice(len(x), 64, replace=False)
    rows, losses = [], []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), 64):
            idx = order[s:s + 64]
            opt.zero_grad()
            loss, dy = mse(model(x[idx]), y[idx])
            model.backward(dy)
            opt.step()
        loss, dy = mse(model(x[probe]), y[probe])
        losses.append(loss)
        dtop = model.head.backward(dy)
        model.zero_grad()
        dh_n = np.zeros((1, len(probe), hidden))
        dh_n[0] = dtop
        dstate = model.rnn.from_states((dh_n,) + (None,) * (model.rnn.cell.num_states - 1))  # a loss on h_n only
        norms = trace_gradients(model.rnn, x[probe], dstate_n=dstate, contributions=False).hidden_grad_norms[(0, 0)]
        rows.append(norms[::-1] / norms[-1])
    return np.array(rows), losses


def clipping_on_exploding_run(radius=3.0, epochs=30, clip=1.0, seed=0, lr=1e-2):
    """Vanilla tanh RNN started with recurrent spectral radius ``radius`` on the sine task, with and
    without clipping by global norm. Returns {label: (losses, pre-clip gradient norms)}."""
    series = sine_series(1000)
    x, y = sliding_windows(series, 50)
    out = {}
    for label, max_norm in (("no clipping", None), (f"clip_grad_norm({clip})", clip)):
        model = ManyToOneRegressor("rnn", 1, 32, 1, seed=seed, dtype="float64", backend="numpy")
        set_spectral_radius(model.rnn, radius, seed=seed)
        opt = Adam(model.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        losses, norms = [], []
        for _ in range(epochs):
            order = rng.permutation(len(x))
            ep_loss, ep_norm = 0.0, 0.0
            for s in range(0, len(x), 64):
                idx = order[s:s + 64]
                opt.zero_grad()
                loss, dy = mse(model(x[idx]), y[idx])
                model.backward(dy)
                norm = clip_grad_norm(opt.params, max_norm) if max_norm else grad_norm(opt.params)
                opt.step()
                ep_loss += loss * len(idx)
                ep_norm = max(ep_norm, norm)
            losses.append(ep_loss / len(x))
            norms.append(ep_norm)
        out[label] = (losses, norms)
    return out


def plot_all(out_dir, distance, heat, clipping):
    from ..plots import new_figure, save_figure

    radii = sorted({r for _, r in distance})
    cells = list(dict.fromkeys(c for c, _ in distance))
    fig, axes = new_figure(1, len(radii), figsize=(4.2 * len(radii), 3.6), sharey=True, squeeze=False)
    for ax, radius in zip(axes[0], radii):
        for cell in cells:
            r = distance[(cell, radius)]
            r = np.where(np.isfinite(r) & (r > 0), r, np.nan)
            ax.semilogy(np.arange(len(r)), r, label=cell)
        ax.axhline(1e-6, color="k", lw=0.7, ls=":")
        ax.set_title(f"recurrent spectral radius {radius}", fontsize=9)
        ax.set_xlabel("steps back from the loss (k)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("||dL/dh_{T-k}|| / ||dL/dh_T||")
    axes[0][0].legend(fontsize=8)
    p1 = save_figure(fig, os.path.join(out_dir, "gradflow_distance.png"))

    fig, axes = new_figure(1, len(heat), figsize=(4.2 * len(heat), 3.4), squeeze=False)
    for ax, (cell, (rows, _)) in zip(axes[0], heat.items()):
        im = ax.imshow(np.log10(np.maximum(rows, 1e-30)), aspect="auto", origin="lower", cmap="viridis",
                       vmin=-8, vmax=1)
        ax.set_title(f"{cell}: log10 gradient ratio", fontsize=9)
        ax.set_xlabel("steps back from the last step")
        ax.set_ylabel("epoch")
        fig.colorbar(im, ax=ax)
    p2 = save_figure(fig, os.path.join(out_dir, "gradflow_training_heatmap.png"))

    fig, (a1, a2) = new_figure(1, 2, figsize=(9, 3.4))
    for label, (losses, norms) in clipping.items():
        a1.semilogy(range(1, len(losses) + 1), losses, label=label)
        a2.semilogy(range(1, len(norms) + 1), norms, label=label)
    a1.set_title("training loss, exploding start", fontsize=9)
    a2.set_title("largest gradient norm per epoch (before clipping)", fontsize=9)
    for a in (a1, a2):
        a.set_xlabel("epoch")
        a.legend(fontsize=8)
        a.grid(True, which="both", alpha=0.3)
    p3 = save_figure(fig, os.path.join(out_dir, "gradflow_clipping.png"))
    return [p1, p2, p3]


def horizon_table(distance, threshold=1e-6):
    radii = sorted({r for _, r in distance})
    cells = list(dict.fromkeys(c for c, _ in distance))
    T = len(next(iter(distance.values())))
    width = max(10, *(len(c) + 2 for c in cells))  # the longest cell name and two spaces
    lines = [f"steps back until the gradient falls below {threshold:g} of its last-step value (T={T}; '>T': never)",
             f"{'cell':<{width}}" + "".join(f"{'radius ' + str(r):>14}" for r in radii)]
    for cell in cells:
        row = f"{cell:<{width}}"
        for r in radii:
            h = vanishing_horizon(distance[(cell, r)][::-1], threshold)
            grew = np.nanmax(np.where(np.isfinite(distance[(cell, r)]), distance[(cell, r)], np.inf))
            row += (f">{T}" + (" (grows)" if grew > 1 else "") if h is None else str(h)).rjust(14)
        lines.append(row)
    return "\n".join(lines)
