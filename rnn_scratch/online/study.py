"""The comparison behind ``python -m rnn_scratch online``: every method on one task, several seeds, side by side.

:func:`run_study` trains with each method and seed (:func:`~.learner.train_online`, the same stream and
initial weights for every method under one seed) and keeps, per method, block means of the loss, of the
cosine between each update and exact RTRL's gradient on the same trajectory, and of their relative
squared error; :func:`cost_table` summarises them beside each method's theoretical cost; the ``plot_*``
functions return matplotlib Figures (and save them when given a path).
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from ..backend import to_backend
from ..layers import make_layer
from ..progress import progress
from .api import UNBIASED, check_method, check_method_for, estimator_statistics
from .learner import _check_window, train_online
from .tasks import Task, make_task

# theoretical cost per step and batch row, in H (the exponent the cost benchmark fits beside it)
THEORY = {
    "bptt": ("O(H^2) per step", "O(k H) (the window)"),
    "tbptt": ("O(k H^2)", "O(k H)"),
    "rtrl": ("O(H^4)", "O(H^3)"),
    "uoro": ("O(H^2)", "O(H^2) (= O(P))"),
    "kf-rtrl": ("O(H^3)", "O(H^2)"),
    "snap-1": ("O(H^2) (= O(P))", "O(H^2) (= O(P))"),
    "snap-2": ("O(H^4) (= rtrl, dense W_hh; O(H^2) unit-local)", "O(H^3)"),
    "rflo": ("O(H^2) (= O(P))", "O(H^2) (= O(P))"),
}


def check_methods(methods, cell, input_size, hidden, dtype="float64", backend=None):
    """Refuse, before any training, an unknown or repeated method, or one not defined for ``cell`` (ValueError)."""
    checked = []
    layer = make_layer(cell, input_size, hidden, dtype=dtype, backend=backend, seed=0)
    for method in methods:
        method = check_method(method)
        if method in checked:
            raise ValueError(f"method {method!r} is listed twice")
        checked.append(method)
        check_method_for(method, layer)
    return checked


def _blocks(values, every):
    """Means of consecutive blocks of ``every`` entries, NaN entries left out (NaN for an empty block)."""
    n = len(values) // every
    out = np.full(n, np.nan)
    for b in range(n):
        block = values[b * every:(b + 1) * every]
        block = block[np.isfinite(block)]
        if block.size:
            out[b] = block.mean()
    return out


def run_study(task, methods, *, seeds=5, seed=0, cell="rnn_tanh", hidden=16, steps=10000, batch=1,
              optimizer="adam", lr=None, truncation=None, clip=None, exact=True, every=None, dtype="float64",
              backend=None, show_progress=True):
    """Train with every method on ``task`` for ``seeds`` seeds (seed, seed+1, ...). Returns a JSON-ready dict:
    the configuration, the task's reference levels, the block step positions, and per method the block means
    of loss, cosine and relative squared error (one list per seed), the seconds per step of each run, the
    carried bytes and the step at which a run diverged (None if it did not)."""
    if not isinstance(task, Task):
        task = make_task(task)
    for name, value in (("seeds", seeds), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    methods = check_methods(methods, cell, task.input_size, hidden, dtype, backend)
    for method in methods:
        _check_window(method, truncation if method in ("bptt", "tbptt") else None)
    every = every or max(1, steps // 50)
    if every > steps:
        raise ValueError(f"every must be at most steps={steps}, got {every}")
    result = {
        "load_average_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "task": task.name, "task_description": task.describe(), "levels": task.levels, "threshold": task.threshold,
        "config": dict(methods=methods, seeds=seeds, seed=seed, cell=cell, hidden=hidden, steps=steps, batch=batch,
                       optimizer=optimizer, lr=lr, truncation=truncation, clip=clip, exact=exact, every=every,
                       dtype=str(dtype), backend=backend),
        "block_steps": [int((b + 0.5) * every) for b in range(steps // every)],
        "methods": {},
    }
    bar = progress(range(len(methods) * seeds * steps), desc="online", disable=not show_progress)
    ticks = iter(bar)
    try:
        for method in methods:
            runs = {key: [] for key in ("loss", "cosine", "error", "seconds_per_step", "diverged_at", "mean_cosine",
                                        "mean_error", "final_loss", "steps_to_threshold")}
            state_bytes = 0
            for s in range(seed, seed + seeds):
                bar.set(method=method, seed=s)
                run = train_online(task, method, cell=cell, hidden=hidden, steps=steps, batch=batch,
                                   optimizer=optimizer, lr=lr, truncation=truncation if method in (
                                       "bptt", "tbptt") else None, clip=clip, seed=s, exact=exact, dtype=dtype,
                                   backend=backend, on_step=lambda t, out: next(ticks, None))
                for _ in range(steps - 1 - (run["diverged_at"] if run["diverged_at"] is not None else steps - 1)):
                    next(ticks, None)  # the steps a diverged run did not take
                loss = _blocks(run["loss"], every)
                runs["loss"].append(loss.tolist())
                runs["cosine"].append(_blocks(run["cosine"], every).tolist())
                runs["error"].append(_blocks(run["error"], every).tolist())
                runs["seconds_per_step"].append(run["seconds_per_step"])
                runs["diverged_at"].append(run["diverged_at"])
                runs["mean_cosine"].append(_nanmean(run["cosine"]))
                runs["mean_error"].append(_nanmean(run["error"]))
                tail = run["loss"][-max(1, steps // 10):]
                runs["final_loss"].append(_nanmean(tail) if run["diverged_at"] is None else math.nan)
                below = np.nonzero(loss < task.threshold)[0]
                runs["steps_to_threshold"].append(int((below[0] + 1) * every) if below.size else None)
                state_bytes = max(state_bytes, run["state_bytes"])
            runs["state_bytes"] = state_bytes
            runs["parameters"] = run["parameters"]
            result["methods"][method] = runs
        for _ in ticks:
            pass
    finally:
        bar.close()
    result["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["estimator_variance"] = initial_variance(task, methods, cell=cell, hidden=hidden, seed=seed, dtype=dtype,
                                                    backend=backend)
    return result


def json_ready(value):
    """``value`` with every NaN or infinite float replaced by None (strict JSON), tuples as lists."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _nanmean(values):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def initial_variance(task, methods, *, cell, hidden, seed=0, dtype="float64", backend=None, steps=20, samples=500):
    """The total variance of each unbiased method's gradient estimate at the initial weights (seed ``seed``),
    over ``samples`` draws on the first ``steps`` steps of the task's stream, with dout = dloss/dh of the
    untrained readout replaced by the scored positions' indicator (a fixed, method-independent loss)."""
    chosen = [m for m in methods if m in UNBIASED]
    if not chosen:
        return {}
    layer = make_layer(cell, task.input_size, hidden, dtype=dtype, backend=backend, seed=seed)
    x, _, weight = task.stream(steps, 1, np.random.default_rng(seed))
    x = to_backend(x.astype(layer.dtype), layer.backend)
    dout = to_backend(np.broadcast_to(weight[:, :, None], (steps, 1, hidden)).astype(layer.dtype) / hidden,
                      layer.backend)
    out = {}
    for method in chosen:
        stats = estimator_statistics(layer, x, dout, method=method, samples=samples, seed=seed)
        out[method] = stats["total_variance"]
    exact_norm2 = float(sum((v ** 2).sum() for v in stats["exact"].values()))
    out["exact_squared_norm"] = exact_norm2
    if all(m in out for m in UNBIASED):
        out["ratio_kf_rtrl_to_uoro"] = out["kf-rtrl"] / out["uoro"]
    out["steps"], out["samples"] = steps, samples
    return out


def cost_table(result):
    """A markdown table: per method the theoretical cost, the measured time per step and carried memory, the final
    loss, the steps to the threshold, and the mean alignment with exact RTRL."""
    steps = result["config"]["steps"]
    head = (f"| method | time / step (theory) | memory (theory) | ms / step | carried KiB | final loss (mean ± sd, "
            f"last 10%) | steps to loss < {result['threshold']:.3f} (of {steps}) | cosine with RTRL | rel. sq. error |")
    lines = [head, "|" + " --- |" * 9]
    for method, runs in result["methods"].items():
        final = np.asarray(runs["final_loss"], dtype=float)
        finite = final[np.isfinite(final)]
        final_text = f"{finite.mean():.3f} ± {finite.std():.3f}" if finite.size else "diverged"
        diverged = sum(d is not None for d in runs["diverged_at"])
        if diverged:
            final_text += f" ({diverged} diverged)"
        reached = [s for s in runs["steps_to_threshold"] if s is not None]
        reach_text = (f"{int(np.median(reached))} ({len(reached)}/{len(runs['steps_to_threshold'])} seeds)"
                      if reached else f"never (0/{len(runs['steps_to_threshold'])})")
        cos, err = _nanmean(runs["mean_cosine"]), _nanmean(runs["mean_error"])
        theory_time, theory_memory = THEORY[method]
        lines.append(f"| {method} | {theory_time} | {theory_memory} | {1e3 * np.mean(runs['seconds_per_step']):.3f} | "
                     f"{runs['state_bytes'] / 1024:.1f} | {final_text} | {reach_text} | "
                     f"{'-' if math.isnan(cos) else f'{cos:.3f}'} | {'-' if math.isnan(err) else f'{err:.3g}'} |")
    return "\n".join(lines)


def _band(ax, x, rows, label, index):
    """The mean over seeds as a line (solid, dashed and dotted in turn, so that curves which coincide -- rtrl and
    snap-2 -- stay visible), the band from the lowest to the highest seed shaded."""
    color, style = f"C{index % 10}", ("-", "--", ":")[index % 3]
    rows = np.asarray([[math.nan if v is None else v for v in row] for row in rows], dtype=float)
    with warnings.catch_warnings():  # a block where every seed is NaN (a diverged run) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, low, high = np.nanmean(rows, 0), np.nanmin(rows, 0), np.nanmax(rows, 0)
    ax.plot(x, mean, color=color, ls=style, label=label, lw=1.5)
    if rows.shape[0] > 1:
        ax.fill_between(x, low, high, color=color, alpha=0.15, lw=0)


def plot_learning_curves(result, path=None):
    """Loss against steps, per method the mean over seeds and the band from the lowest to the highest seed; the
    task's reference levels dashed."""
    from ..plots import _finish, new_figure

    fig, ax = new_figure(figsize=(8, 4.5))
    x = result["block_steps"]
    for i, (method, runs) in enumerate(result["methods"].items()):
        _band(ax, x, runs["loss"], method, i)
    for label, level in result["levels"].items():
        ax.axhline(level, color="0.4", ls="--", lw=0.8)
        ax.annotate(label, (x[-1], level), fontsize=7, color="0.3", ha="right", va="bottom")
    cfg = result["config"]
    ax.set_title(f"online learning, {result['task_description']}: {cfg['cell']} H={cfg['hidden']}, "
                 f"{cfg['seeds']} seeds (mean, min-max band)", fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (mean over blocks of {cfg['every']} steps)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def plot_alignment(result, path=None):
    """The cosine between each method's update and exact RTRL's gradient on the same trajectory, over training."""
    from ..plots import _finish, new_figure

    fig, ax = new_figure(figsize=(8, 4.5))
    x = result["block_steps"]
    for i, (method, runs) in enumerate(result["methods"].items()):
        _band(ax, x, runs["cosine"], method, i)
    ax.set_ylim(-0.2, 1.05)
    ax.set_title(f"alignment with exact RTRL's gradient, {result['task_description']}", fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine (block mean)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def plot_variance(result, path=None):
    """|g - g*|^2 / |g*|^2 over training: the relative variance of the unbiased estimators, the relative error
    (bias) of the others."""
    from ..plots import _finish, new_figure

    fig, ax = new_figure(figsize=(8, 4.5))
    x = result["block_steps"]
    for i, (method, runs) in enumerate(result["methods"].items()):
        rows = np.asarray([[math.nan if v is None else v for v in row] for row in runs["error"]], dtype=float)
        if np.isfinite(rows).any() and np.nanmax(rows) > 0:  # exact methods (error 0) have no line on a log axis
            _band(ax, x, rows, method + (" (variance)" if method in UNBIASED else ""), i)
    ax.set_yscale("log")
    ax.set_title("relative squared error against exact RTRL, |g - g*|^2 / |g*|^2", fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("block mean")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, path)
