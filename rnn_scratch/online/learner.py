r"""Online learning: the weights change at every step of an endless stream, with a chosen gradient method.

At step t the layer takes one step, s_t = F(s_{t-1}, x_t; theta), a linear readout gives y_t = W_out h_t + b_out,
and the task's loss l_t(y_t) gives c_t = dl_t/dh_t = dl_t/dy_t W_out. The readout's gradient is exact for
every method; the layer's is the method's:

- forward-mode methods (rtrl, uoro, kf-rtrl, snap-1, snap-2, rflo): g_t = c_t^T M_t with the method's M_t,
  advanced once per step with the step's Jacobians;
- ``tbptt`` (truncation=k): c_t backpropagated through the last k steps (their activations kept);
- ``bptt`` (truncation=k): the stream cut into windows of k steps; at the end of each window one BPTT over
  it, the gradient stopping at the window's start (Marschall et al.'s E-BPTT): one update per window.

The state is carried from step to step and never reset, and so are the influence matrices: M_t mixes
Jacobians taken at the parameters of each past step (RTRL's usual online approximation). tbptt and bptt
backpropagate through stored activations with the current weights. With ``exact=True`` an exact RTRL
runs alongside on the same trajectory; its gradient g*_t (summed over the window for bptt) is what each
update is compared with: the cosine <g, g*> / (|g| |g*|) and the relative squared error |g - g*|^2 / |g*|^2
(for the unbiased methods, the relative variance of the estimate).
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from ..backend import array_module, available_bytes, default_rng, to_backend
from ..layers import Linear, make_layer
from ..optim import SGD, Adam, clip_grad_norm
from ..validation import check_array
from . import bptt as _bptt
from .api import GUARD_FROM, check_layer, check_method, check_method_for, guard_memory, layer_kinds, make_tracker
from .rtrl import RTRL
from .tasks import Task, make_task

OPTIMIZERS = {"sgd": SGD, "adam": Adam}
DEFAULT_LR = {"sgd": 0.05, "adam": 3e-3}


def _check_window(method, truncation):
    if method not in ("bptt", "tbptt"):
        if truncation is not None:
            raise ValueError(f"truncation is the k of 'bptt' (window length) and 'tbptt' (steps back) only; "
                             f"method {method!r} takes truncation=None, got {truncation!r}")
        return None
    if isinstance(truncation, (bool, np.bool_)) or not isinstance(truncation, (int, np.integer)) or truncation < 1:
        what = "the window length of its updates" if method == "bptt" else "the steps each gradient travels back"
        raise ValueError(f"online method {method!r} needs truncation=k, an integer >= 1 ({what}), got {truncation!r}")
    return int(truncation)


def _cache_bytes(cache):
    """The bytes of a step cache's arrays (the parameters it refers to not counted)."""
    return int(sum(getattr(v, "nbytes", 0) for v in cache if not isinstance(v, dict)))


class OnlineLearner:
    """Updates ``layer`` (single-layer, unidirectional) and ``head`` (a :class:`~rnn_scratch.layers.Linear`
    from hidden_size to the outputs) at every step with ``method`` (module docstring).

    ``optimizer``: "sgd" or "adam" (lr default 0.05 / 3e-3), over the layer's and the head's parameters;
    ``clip``: clip the update's global norm (None: no clipping); ``seed``: the random signs of uoro and
    kf-rtrl; ``exact``: run exact RTRL alongside and report each update's alignment with it.
    """

    def __init__(self, layer, head, method, *, optimizer="adam", lr=None, truncation=None, clip=None, seed=None,
                 exact=False):
        check_layer(layer, "OnlineLearner")
        if not isinstance(head, Linear) or head.in_features != layer.hidden_size:
            raise TypeError(f"head must be an rnn_scratch Linear with in_features = hidden_size = "
                            f"{layer.hidden_size}, got {head!r}")
        if head.backend != layer.backend or head.dtype != layer.dtype:
            raise TypeError(f"head and layer must share backend and dtype: layer {layer.backend}/{layer.dtype}, "
                            f"head {head.backend}/{head.dtype}")
        self.method = check_method(method)
        self.truncation = _check_window(self.method, truncation)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if clip is not None and not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be None or a finite number > 0, got {clip!r}")
        self.layer, self.head, self.clip = layer, head, clip
        self.cell = layer.cell
        self.rng = default_rng(seed)
        check_method_for(self.method, layer)
        self.tracker = make_tracker(self.method, self.cell, self.rng) if self.method not in ("bptt", "tbptt") else None
        self.exact = bool(exact)
        self.shadow = RTRL(self.cell) if self.exact and self.method != "rtrl" else None
        if self.shadow is not None and self.cell.step_derivatives is None:
            raise ValueError(f"exact=True runs RTRL beside {self.method!r}, which cell {self.cell.name!r} does not "
                             f"support (no Cell.step_derivatives): pass exact=False (the command line's --no-exact)")
        live = {name: value for name, value, _ in layer.parameters()}
        self.names = layer_kinds(live)  # {kind: the layer's name}
        self.params = {kind: live[name] for kind, name in self.names.items()}  # the live arrays
        triples = [(f"rnn.{n}", p, g) for n, p, g in layer.parameters()] + [
            (f"head.{n}", p, g) for n, p, g in head.parameters()]
        self.optimizer = OPTIMIZERS[optimizer](triples, lr=DEFAULT_LR[optimizer] if lr is None else lr)
        xp = layer.xp
        self.state = tuple(xp.zeros((1, layer.hidden_size), dtype=layer.dtype) for _ in range(self.cell.num_states))
        self.window = deque(maxlen=self.truncation) if self.method == "tbptt" else []
        self.pending_exact = None
        self.fresh = True
        self.steps = 0
        self.seconds = 0.0  # time in the method's own work: the layer's step, its Jacobians, the gradient

    def reset(self, batch):
        """Start a new stream of ``batch`` rows: a zero state, influence matrices and stored steps forgotten (the
        weights and the optimiser's state stay). The first step does this by itself."""
        xp = self.layer.xp
        self.state = tuple(xp.zeros((batch, self.layer.hidden_size), dtype=self.layer.dtype)
                           for _ in range(self.cell.num_states))
        if self.tracker is not None:
            self.tracker = make_tracker(self.method, self.cell, self.rng)
        if self.shadow is not None:
            self.shadow = RTRL(self.cell)
        self.window.clear()
        self.pending_exact = None
        self.fresh = True

    def state_bytes(self):
        """The memory the method carries from step to step (influence estimates, or stored activations)."""
        if self.tracker is not None:
            return self.tracker.nbytes()
        items = self.window if self.method == "tbptt" else [c for c, _ in self.window]
        return sum(_cache_bytes(c) for c in items)

    def step(self, x_t, target, weight, loss_fn):
        """One step: x_t (B, I), target (B, O), weight (B,) on the layer's backend; ``loss_fn(y, target, weight)
        -> (loss or None, dloss/dy)``. Returns {"loss", "cosine", "error", "updated"} (cosine and error None
        without an update or without ``exact``)."""
        layer = self.layer
        check_array(x_t, "x_t", backend=layer.backend, dtype=layer.dtype, finite=True)
        if x_t.ndim != 2 or x_t.shape[1] != layer.input_size:
            raise ValueError(f"x_t must have shape (batch, input_size={layer.input_size}), got {tuple(x_t.shape)}")
        B = x_t.shape[0]
        check_array(target, "target", backend=layer.backend, dtype=layer.dtype, shape=(B, self.head.out_features),
                    shape_doc=f"(batch={B}, out_features={self.head.out_features})")
        check_array(weight, "weight", backend=layer.backend, dtype=layer.dtype, shape=(B,), finite=True,
                    shape_doc=f"(batch={B},)")
        if self.fresh and self.state[0].shape[0] != x_t.shape[0]:
            self.reset(x_t.shape[0])
        elif self.state[0].shape[0] != x_t.shape[0]:
            raise ValueError(f"x_t has {x_t.shape[0]} rows but this stream has {self.state[0].shape[0]}; call "
                             f"reset(batch) to start a new stream")
        started = time.perf_counter()
        state, cache = self.cell.step_forward(x_t, self.state, self.params)
        d = None
        if self.tracker is not None or self.shadow is not None:
            d = self.cell.step_derivatives(cache)
            if self.fresh:
                guard_memory([t for t in (self.tracker, self.shadow) if t is not None], d)
        self.seconds += time.perf_counter() - started
        y = self.head(state[0])
        loss, dy = loss_fn(y, target, weight)  # a bad target fails here, with nothing changed yet
        dh = self.head.backward(dy)  # c_t = dl_t/dh_t; the head's gradient accumulates
        self.state = state
        started = time.perf_counter()
        grads = self._method_gradient(cache, d, dh)
        self.seconds += time.perf_counter() - started
        exact = self._exact_gradient(d, dh, grads is None)
        cosine = error = None
        if grads is not None:
            if exact is not None:
                cosine, error = _compare(grads, exact)
            for kind, name in self.names.items():
                layer.grads[name][...] = grads[kind]
            if self.clip is not None:
                clip_grad_norm(self.optimizer.params, self.clip)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.steps += 1
        self.fresh = False
        return {"loss": loss, "cosine": cosine, "error": error, "updated": grads is not None}

    def _method_gradient(self, cache, d, dh):
        """The layer's gradient for this step's update ({kind: array}), or None (bptt inside a window)."""
        if self.tracker is not None:
            self.tracker.step(d)
            return self.tracker.gradient(dh)
        if self.method == "tbptt":
            self.window.append(cache)  # the last k steps
            return _bptt.backprop_through(self.cell, list(self.window), dh)
        self.window.append((cache, dh))
        if len(self.window) < self.truncation:
            return None
        return self._window_bptt()

    def _window_bptt(self):
        """BPTT over the window's steps, each with its own c_t; the gradient stops at the window's start."""
        xp = array_module(self.window[0][1])
        dstate = tuple(xp.zeros_like(self.window[0][1]) for _ in range(self.cell.num_states))
        total = None
        for cache, dh in reversed(self.window):
            dstate = (dstate[0] + dh,) + dstate[1:]
            _, dstate, dparams = self.cell.step_backward(dstate, cache)
            total = dparams if total is None else {kind: total[kind] + g for kind, g in dparams.items()}
        self.window.clear()
        return total

    def _exact_gradient(self, d, dh, pending):
        """RTRL's gradient g*_t on this trajectory (summed over a bptt window until its update), or None."""
        if not self.exact:
            return None
        if self.shadow is None:  # the method is RTRL itself
            return self.tracker.gradient(dh)
        self.shadow.step(d)
        g = self.shadow.gradient(dh)
        if self.pending_exact is not None:
            g = {kind: v + self.pending_exact[kind] for kind, v in g.items()}
        self.pending_exact = g if pending else None
        return None if pending else g


def _compare(g, exact):
    """(cosine, relative squared error) of two gradient dicts over all their entries."""
    dot = sum(float((g[k] * exact[k]).sum()) for k in exact)
    ng = math.sqrt(sum(float((g[k] ** 2).sum()) for k in exact))
    ne = math.sqrt(sum(float((exact[k] ** 2).sum()) for k in exact))
    diff = sum(float(((g[k] - exact[k]) ** 2).sum()) for k in exact)
    if ng == 0 or ne == 0:
        return None, None
    return dot / (ng * ne), diff / ne**2


def train_online(task, method, *, cell="rnn_tanh", hidden=16, steps=2000, batch=1, optimizer="adam", lr=None,
                 truncation=None, clip=None, seed=0, exact=True, dtype="float64", backend=None, on_step=None):
    """Train a fresh layer and readout online on ``task`` (a :class:`~.tasks.Task` or a name in ``TASKS``).

    The same ``seed`` gives every method the same initial weights and the same stream. ``on_step(t, record)``
    is called after each step. Returns {"method", "loss", "cosine", "error" (per step, NaN where there is
    none), "seconds_per_step" (the method's own work), "state_bytes", "parameters"}.
    """
    if not isinstance(task, Task):
        task = make_task(task)
    for name, value in (("steps", steps), ("batch", batch), ("hidden", hidden)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    need = steps * (batch * (task.input_size + task.output_size + 1) * 2 + 3) * 8  # the stream, twice; the records
    free = available_bytes("numpy")
    if need > GUARD_FROM and free is not None and need > free:
        raise MemoryError(f"a stream of {steps} steps x {batch} rows and its records need about {need / 2**30:.1f} "
                          f"GiB, {free / 2**30:.1f} GiB is available")
    head_seed, sign_seed = (int(v) for v in np.random.SeedSequence((seed, 28)).generate_state(2))
    layer = make_layer(cell, task.input_size, hidden, dtype=dtype, backend=backend, seed=seed)
    head = Linear(hidden, task.output_size, dtype=dtype, backend=layer.backend, seed=head_seed)
    learner = OnlineLearner(layer, head, method, optimizer=optimizer, lr=lr, truncation=truncation, clip=clip,
                            seed=sign_seed, exact=exact)
    x, target, weight = (to_backend(a.astype(layer.dtype), layer.backend)
                         for a in task.stream(steps, batch, np.random.default_rng(seed)))
    record = {key: np.full(steps, np.nan) for key in ("loss", "cosine", "error")}
    state_bytes, diverged = 0, None
    for t in range(steps):
        with np.errstate(over="ignore", invalid="ignore"):
            out = learner.step(x[t], target[t], weight[t], task.loss)
        for key in record:
            if out[key] is not None:
                record[key][t] = out[key]
        state_bytes = max(state_bytes, learner.state_bytes())
        if on_step is not None:
            on_step(t, out)
        if out["loss"] is not None and not math.isfinite(out["loss"]):
            diverged = t  # the weights are no longer finite: the run ends here, the rest stays NaN
            break
    return {"method": learner.method, **record, "seconds_per_step": learner.seconds / max(learner.steps, 1),
            "state_bytes": int(state_bytes), "parameters": int(layer.num_parameters()), "diverged_at": diverged}
