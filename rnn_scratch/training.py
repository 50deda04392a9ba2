"""Training helpers: data for the sine task, a fit loop, autoregressive forecasting, truncated BPTT."""

from __future__ import annotations

import numpy as np

from .backend import to_backend, to_numpy
from .losses import mse
from .optim import clip_grad_norm
from .progress import progress


def sine_series(n=1000, horizon=0, stop=100.0):
    """``sin(t)`` on the reference grid ``t = linspace(0, stop, n)``, extended by ``horizon`` further steps
    of the same spacing (the values a forecast is scored against)."""
    dt = stop / (n - 1)
    return np.sin(dt * np.arange(n + horizon))


def sliding_windows(series, window=20):
    """Inputs (N, window, 1) and next-value targets (N, 1) with N = len(series) - window."""
    n = len(series) - window
    idx = np.arange(window)[None, :] + np.arange(n)[:, None]
    return series[idx][..., None], series[window:][:, None]


def fit(model, x, y, optimizer, *, epochs, batch_size=None, loss_fn=mse, clip_norm=None, shuffle=True, seed=0,
        show_progress=True, desc="train", forward_kwargs=None):
    """Mini-batch (or full-batch when ``batch_size`` is None) training; returns the mean loss of each epoch.

    Each step: zero_grad, forward, loss and its gradient, backward, optional clipping by global norm,
    optimizer.step().
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    bs = n if batch_size is None else batch_size
    history = []
    bar = progress(range(epochs), desc=desc, disable=not show_progress)
    for _ in bar:
        order = rng.permutation(n) if shuffle and bs < n else np.arange(n)
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            xb, yb = (x, y) if bs == n else (x[idx], y[idx])
            optimizer.zero_grad()
            pred = model(xb, **(forward_kwargs or {}))
            loss, dpred = loss_fn(pred, yb)
            model.backward(dpred)
            if clip_norm is not None:
                clip_grad_norm(optimizer.params, clip_norm)
            optimizer.step()
            total += loss * len(idx)
        history.append(total / n)
        bar.set(loss=history[-1])
    return history


def forecast(model, window, steps):
    """Autoregressive forecast: predict one step, append it to the window, drop the oldest value, repeat.

    window: (T, features) host array; returns (steps,) host array of predictions of feature 0.
    """
    was_training = model.training
    model.eval()
    w = to_backend(np.asarray(window, dtype=model.dtype)[None], model.backend)
    preds = []
    for _ in range(steps):
        nxt = model(w)  # (1, 1)
        preds.append(float(to_numpy(nxt)[0, 0]))
        w = model.xp.concatenate([w[:, 1:], nxt[:, None, :]], axis=1)
    model.train(was_training)
    return np.array(preds)


def tbptt_gradients(layer, head, stream, targets, chunk_len, state=None):
    """Truncated BPTT over a long stream, one chunk at a time.

    The state is carried from chunk to chunk but treated as a constant: no gradient flows back
    across a chunk boundary (torch: ``h = h.detach()``). The per-step loss is MSE of ``head(out_t)``
    against ``targets`` (mean over each chunk); parameter gradients of all chunks accumulate into
    ``layer.grads`` / ``head.grads``. stream: (B, T, I) batch-first; returns (list of chunk losses, final state).
    """
    T = stream.shape[1]
    losses = []
    for start in range(0, T, chunk_len):
        xs, ys = stream[:, start:start + chunk_len], targets[:, start:start + chunk_len]
        out, state = layer(xs, state)
        loss, dpred = mse(head(out), ys)
        layer.backward(head.backward(dpred))  # the gradient stops at this chunk's initial state
        losses.append(loss)
    return losses, state
