"""Training helpers: data for the sine task, a fit loop, autoregressive forecasting, truncated BPTT."""

from __future__ import annotations

import numpy as np

from .backend import to_backend, to_numpy
from .losses import mse
from .memory import check_available
from .optim import clip_grad_norm
from .progress import progress


def tutorial_sine(n_windows=1000, window=20):
    """The reference tutorial's data, exactly: ``t = linspace(0, N + L, N + L)``, ``data = sin(t)``; window i
    is ``data[i:i+L]`` and its target ``data[i+L]``, for i = 0 .. N-1.

    Returns (data (N+L,), x (N, L, 1), y (N, 1)). The spacing of t is (N+L)/(N+L-1), about 1 radian:
    a period spans about 6.3 samples and a window of 20 about three periods.
    """
    n = n_windows + window  # t and sin(t); then sliding_windows' indices and values, and the targets
    check_available(16 * n + 16 * n * window + 8 * n, f"tutorial_sine: {n_windows} windows of {window}")
    t = np.linspace(0, n_windows + window, n_windows + window)
    data = np.sin(t)
    x, y = sliding_windows(data, window)
    return data, x[:n_windows], y[:n_windows]


def sine_series(n=1000, horizon=0, stop=100.0):
    """``sin(t)`` on the reference grid ``t = linspace(0, stop, n)``, extended by ``horizon`` further steps
    of the same spacing (the values a forecast is scored against)."""
    dt = stop / (n - 1)
    return np.sin(dt * np.arange(n + horizon))


def sliding_windows(series, window=20):
    """Inputs (N, window, 1) and next-value targets (N, 1) with N = len(series) - window: window i is
    ``series[i:i+window]``, its target ``series[i+window]``."""
    n = len(series) - window
    check_available(16 * n * window, f"sliding_windows: {n} windows of {window} (indices and values)")
    idx = np.arange(window)[None, :] + np.arange(n)[:, None]
    return series[idx][..., None], series[window:][:, None]


def fit(model, x, y, optimizer, *, epochs, batch_size=None, loss_fn=mse, clip_norm=None, shuffle=True, seed=0,
        show_progress=True, desc="train", forward_kwargs=None, on_epoch=None):
    """Mini-batch (or full-batch when ``batch_size`` is None) training; returns the mean loss of each epoch.

    Each step: zero_grad, forward, loss and its gradient, backward, optional clipping by global norm,
    optimizer.step(). ``on_epoch(epoch, loss)`` is called after each epoch (epochs count from 0).
    A full-batch epoch's loss is the loss of its one forward pass, before the update (as a plain
    torch loop prints it).
    """
    if epochs < 1 or int(epochs) != epochs:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be None (full batch) or an integer >= 1, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must hold the same number (>= 1) of examples, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    n = len(x)
    bs = n if batch_size is None else min(batch_size, n)
    history = []
    with progress(range(epochs), desc=desc, disable=not show_progress) as bar:
        for epoch in bar:
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
            if on_epoch is not None:
                on_epoch(epoch, history[-1])
    return history


FORECAST_STATES = ("carry", "reset")


def forecast(model, window, steps, state="reset"):
    """Autoregressive forecast: predict one step, append it to the window, drop the oldest value, repeat.

    window: (T, features) host array; returns (steps,) host array of predictions of feature 0.
    ``state``: "reset" starts every call from a zero state (each window read afresh); "carry" passes
    each call's final hidden state as the next call's initial state, as the reference tutorial does
    (``y_pred, h = model(current_input, h)``): the model then reads a window it has mostly seen
    already, starting from a state that has seen it.
    """
    if state not in FORECAST_STATES:
        raise ValueError(f"state must be one of {FORECAST_STATES}, got {state!r}")
    if steps < 1 or int(steps) != steps:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    was_training = model.training
    model.eval()
    w = to_backend(np.asarray(window, dtype=model.dtype)[None], model.backend)
    preds = []
    h = None
    for _ in range(steps):
        nxt, final = model.forward_with_state(w, h)  # (1, 1)
        if state == "carry":
            h = final
        preds.append(float(to_numpy(nxt)[0, 0]))
        w = model.xp.concatenate([w[:, 1:], nxt[:, None, :]], axis=1)
    model.train(was_training)
    return np.array(preds)


SINE_PRESETS = {
    # the reference tutorial exactly: tanh RNN, hidden 50, Adam lr 1e-3, 30 full-batch epochs, MSE, and a
    # forecast that carries the hidden state from call to call
    "seed": dict(cell="rnn_tanh", hidden=50, lr=1e-3, epochs=30, batch_size=None, forecast_state="carry"),
    # the same data; trains to a 50-step forecast MSE well below 1e-3 in seconds
    "default": dict(cell="gru", hidden=32, lr=5e-3, epochs=40, batch_size=64, forecast_state="reset"),
}


def sine_experiment(*, cell, hidden, lr, epochs, batch_size=None, forecast_state="reset", windows=1000, window=20,
                    horizon=50, seed=0, dtype="float32", backend=None, on_epoch=None, model=None):
    """The main job: train a forecaster on the tutorial's sine windows, then forecast ``horizon`` steps
    autoregressively from window 0 and score them against the targets of windows 0 .. horizon-1.

    ``model``: a ManyToOneRegressor to train instead of a fresh one (e.g. with given initial weights).
    Returns {"model", "losses", "forecast", "truth", "mse"} (host arrays).
    """
    from .models import ManyToOneRegressor
    from .optim import Adam

    if horizon > windows:
        raise ValueError(f"horizon={horizon} is scored against the targets of the first windows: it must be at most "
                         f"windows={windows}")
    _, x, y = tutorial_sine(windows, window)
    if model is None:
        model = ManyToOneRegressor(cell, 1, hidden, 1, seed=seed, dtype=dtype, backend=backend)
    xb, yb = (to_backend(a.astype(model.dtype), model.backend) for a in (x, y))
    losses = fit(model, xb, yb, Adam(model.parameters(), lr=lr), epochs=epochs, batch_size=batch_size, seed=seed,
                 show_progress=False, on_epoch=on_epoch)
    pred = forecast(model, x[0], horizon, state=forecast_state)
    truth = y[:horizon, 0]
    return {"model": model, "losses": losses, "forecast": pred, "truth": truth,
            "mse": float(np.mean((pred - truth) ** 2))}


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
