r"""Streams for online learning: the add task, the copy task and the sine forecaster.

Each task is an endless stream, one step at a time, with a loss at each step (the learner updates at
every step): ``stream(steps, batch, rng)`` gives inputs x (T, B, I), targets (T, B, O) and weights (T, B)
(1 where the step's output is scored, 0 where it is not), all host float64 arrays; ``loss(y, target,
weight)`` gives the step's loss (the mean over the scored rows; None when none is scored) and its
gradient dloss/dy. ``levels``: reference losses for the plots (what a model without memory, with part
of it, or a perfect one scores); ``threshold``: the loss that counts as "learned" in the study's table.

- :class:`AddTask` -- Marschall, Cho and Savin (2020), after Pitis (2016): x_t ~ Bernoulli(1/2), presented
  as (x_t, 1 - x_t); the target is the probability y_t = 1/2 + 1/2 x_{t - t1} - 1/4 x_{t - t2}, scored by
  the cross-entropy of softmax(y-hat) against (y_t, 1 - y_t). Without memory the best loss is
  H(5/8) = 0.662; knowing x_{t-t1}, 0.519; knowing both, E[H(y_t)] = 0.454 (H the binary entropy, nats).
- :class:`CopyTask` -- episodes of n random bits shown one per step, a delimiter, then n recall steps on
  which the bits must come back in order (cross-entropy, scored on the recall steps only); chance is
  ln 2 = 0.693, perfect 0. Episodes follow each other without a reset.
- :class:`SineTask` -- the seed's forecaster as a stream: x_t = sin(dt (t + phi)), the target x_{t+1}, MSE;
  dt = 1020/1019 (the tutorial's ``linspace(0, 1020, 1020)``), a random phase phi per row. Predicting 0
  scores 1/2, repeating x_t scores 1 - cos(dt) = 0.457; x_{t+1} = 2 cos(dt) x_t - x_{t-1} needs one step of
  memory.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import array_module
from ..losses import log_softmax


def _entropy(p):
    """Binary entropy in nats."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def soft_cross_entropy(logits, target, weight):
    """Mean over the scored rows of -sum_k target_k log softmax(logits)_k, and its gradient (softmax - target)
    weight / count. logits, target (B, C); weight (B,). Returns (loss or None, dlogits)."""
    xp = array_module(logits)
    count = float(weight.sum())
    if count == 0:
        return None, xp.zeros_like(logits)
    logp = log_softmax(logits)
    loss = float(-(weight[:, None] * target * logp).sum() / count)
    return loss, (xp.exp(logp) - target) * (weight / count)[:, None]


def squared_error(y, target, weight):
    """Mean over the scored rows and the outputs of (y - target)^2, and its gradient."""
    xp = array_module(y)
    count = float(weight.sum()) * y.shape[1]
    if count == 0:
        return None, xp.zeros_like(y)
    diff = (y - target) * weight[:, None]
    return float((diff * diff).sum() / count), 2 * diff / count


class Task:
    name = ""
    input_size = output_size = 1
    levels: dict = {}
    threshold = 0.0

    def stream(self, steps, batch, rng):
        raise NotImplementedError

    def loss(self, y, target, weight):
        raise NotImplementedError

    def describe(self):
        return self.name


class _BinaryTask(Task):
    """A task whose targets are soft two-class labels, scored by cross-entropy."""

    def loss(self, y, target, weight):
        return soft_cross_entropy(y, target, weight)


class AddTask(_BinaryTask):
    """Marschall et al.'s add task with lags (t1, t2) (module docstring)."""

    name = "add"
    input_size = output_size = 2

    def __init__(self, lags=(3, 5)):
        t1, t2 = (int(v) for v in lags)
        if not 1 <= t1 < t2:
            raise ValueError(f"lags must be two integers 1 <= t1 < t2, got {tuple(lags)!r}")
        self.t1, self.t2 = t1, t2
        none, one = _entropy(0.625), 0.5 * (_entropy(0.375) + _entropy(0.875))
        both = sum(_entropy(0.5 + 0.5 * a - 0.25 * b) for a in (0, 1) for b in (0, 1)) / 4
        self.levels = {"no memory": none, f"x(t-{t1}) known": one, "both known": both}
        self.threshold = 0.5 * (one + both)  # between learning one lag and learning both

    def stream(self, steps, batch, rng):
        bits = rng.integers(0, 2, size=(steps + self.t2, batch)).astype(float)  # t2 steps of history first
        x_t = bits[self.t2:]
        y = 0.5 + 0.5 * bits[self.t2 - self.t1:steps + self.t2 - self.t1] - 0.25 * bits[:steps]
        x = np.stack([x_t, 1 - x_t], axis=-1)
        return x, np.stack([y, 1 - y], axis=-1), np.ones((steps, batch))

    def describe(self):
        return f"add (lags {self.t1}, {self.t2})"


class CopyTask(_BinaryTask):
    """Copy n bits back after a delimiter (module docstring)."""

    name = "copy"
    input_size, output_size = 3, 2

    def __init__(self, length=3):
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        self.length = int(length)
        self.levels = {"chance": math.log(2), "perfect": 0.0}
        self.threshold = 0.5 * math.log(2)

    def stream(self, steps, batch, rng):
        n = self.length
        period = 2 * n + 1
        episodes = -(-steps // period)
        bits = rng.integers(0, 2, size=(episodes, n, batch)).astype(float)
        x = np.zeros((episodes, period, batch, 3))
        x[:, :n, :, 0], x[:, :n, :, 1] = bits, 1 - bits  # the bits, one-hot
        x[:, n, :, 2] = 1  # the delimiter
        target = np.zeros((episodes, period, batch, 2))
        target[:, n + 1:, :, 0], target[:, n + 1:, :, 1] = bits, 1 - bits
        weight = np.zeros((episodes, period, batch))
        weight[:, n + 1:] = 1  # scored on the recall steps

        def flat(a):
            return a.reshape((episodes * period,) + a.shape[2:])[:steps]

        return flat(x), flat(target), flat(weight)

    def describe(self):
        return f"copy ({self.length} bits)"


class SineTask(Task):
    """The seed's sine forecaster as a stream (module docstring)."""

    name = "sine"
    dt = 1020 / 1019

    def __init__(self):
        self.levels = {"predict 0": 0.5, "repeat x_t": 1 - math.cos(self.dt)}
        self.threshold = 0.05

    def stream(self, steps, batch, rng):
        phase = rng.uniform(0, 2 * math.pi / self.dt, size=batch)
        values = np.sin(self.dt * (np.arange(steps + 1)[:, None] + phase[None, :]))
        return values[:-1, :, None], values[1:, :, None], np.ones((steps, batch))

    def loss(self, y, target, weight):
        return squared_error(y, target, weight)


TASKS = ("add", "copy", "sine")


def make_task(name, **options):
    """The task called ``name`` (``TASKS``): ``add`` takes lags=(t1, t2), ``copy`` takes length=n."""
    if name == "add":
        return AddTask(**options)
    if name == "copy":
        return CopyTask(**options)
    if name == "sine":
        if options:
            raise ValueError(f"the sine task takes no options, got {sorted(options)}")
        return SineTask()
    raise ValueError(f"task must be one of {list(TASKS)}, got {name!r}")
