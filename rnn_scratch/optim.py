"""Optimisers and gradient clipping, with torch's update rules and defaults.

An optimiser takes ``module.parameters()``: a list of (name, parameter, gradient) triples,
and updates the parameters in place from the gradients.

SGD with momentum mu (torch's form, dampening 0)::

    b <- mu b + g            (b = g at the first step)
    p <- p - lr * b          (Nesterov: p <- p - lr * (g + mu b))

Adam (Kingma & Ba, as in torch.optim.Adam)::

    m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
"""

from __future__ import annotations

import math

import numpy as np

from .backend import array_module


def _real(value):
    """``value`` as a Python number when it is a real number (int, float, NumPy scalar, or a 0-d array or
    torch tensor, as torch's ``lr`` may be); None otherwise (bools and strings included)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item") and not isinstance(value, np.generic):
        value = value.item()  # a 0-d array or tensor
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return value


def _number(value, name, low=0.0, high=math.inf, low_open=False, high_open=True):
    """A finite real number in [low, high) (or the open/closed variants), as a float; ValueError naming it
    (TypeError when it is not a number at all)."""
    real = _real(value)
    if real is None:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(real)
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


class Optimizer:
    """Base: ``params`` (name, parameter, gradient) triples, a learning rate, a step count and per-parameter
    state. ``hyperparameters`` are what the constructor took besides ``params`` (checkpoints store them)."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: pass module.parameters()")
        for item in self.params:
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise TypeError("params must be (name, parameter, gradient) triples, as module.parameters() gives")
        self.lr = _number(lr, "lr")  # 0 allowed, as torch: warm-up schedules start there
        self.step_count = 0
        self.state: dict = {}

    @property
    def hyperparameters(self) -> dict:
        raise NotImplementedError

    def zero_grad(self):
        for _, _, g in self.params:
            g[...] = 0

    def state_dict(self):
        """Flat {key: array or scalar} for checkpoints."""
        out = {"step_count": self.step_count, "lr": self.lr}
        for key, value in self.state.items():
            out[key] = value
        return out

    def check_state_dict(self, state):
        """Check a state_dict (from :meth:`state_dict`) against this optimiser without changing anything, as
        the constructor and :meth:`step` would: ``lr`` a finite number >= 0, ``step_count`` an integer >= 0,
        every moment a finite real array of its parameter's shape (second moments >= 0). ValueError or
        TypeError naming the first key that does not fit."""
        if not hasattr(state, "items"):
            raise TypeError(f"optimizer state must be a mapping, got {type(state).__name__}")
        keys = self._state_keys()
        for key, value in state.items():
            if key == "lr":
                _number(value, "optimizer state 'lr'")
                continue
            if key == "step_count":
                count = _real(value)
                if not isinstance(count, (int, np.integer)) or count < 0:
                    raise ValueError(f"optimizer state 'step_count' must be an integer >= 0, got {value!r}")
                continue
            if key not in keys:
                kind = key.split("/", 1)[0]
                what = (f"state of another optimiser ({kind!r}; {type(self).__name__} keeps {self.state_kinds})"
                        if kind not in self.state_kinds else "a parameter this optimiser does not have")
                raise ValueError(f"optimizer state has unexpected key {key!r}: {what}")
            expected = tuple(self._param(key.split("/", 1)[1]).shape)
            if tuple(np.shape(value)) != expected:
                raise ValueError(f"optimizer state {key!r} has shape {tuple(np.shape(value))}, expected {expected}")
            dtype = getattr(value, "dtype", None)
            if dtype is None or np.dtype(dtype).kind not in "fiu":
                raise TypeError(f"optimizer state {key!r} must be a real array, got {type(value).__name__} of "
                                f"dtype {dtype}")
            xp = array_module(value)
            if value.size and not bool(xp.isfinite(value).all()):
                raise ValueError(f"optimizer state {key!r} contains NaN or infinity")
            if key.startswith("exp_avg_sq/") and value.size and bool((value < 0).any()):
                raise ValueError(f"optimizer state {key!r} (a running mean of squares) has negative entries")

    def load_state_dict(self, state):
        """Load a state_dict; it is checked whole (:meth:`check_state_dict`) before anything changes."""
        self.check_state_dict(state)
        for key, value in state.items():
            if key not in ("step_count", "lr"):
                target = self.state.setdefault(key, self._zeros_for(key))
                target[...] = array_module(target).asarray(value)
        self.step_count = int(_real(state.get("step_count", self.step_count)))
        self.lr = float(_real(state.get("lr", self.lr)))

    def _param(self, name):
        for n, p, _ in self.params:
            if n == name:
                return p
        raise KeyError(name)

    def _zeros_for(self, key):
        p = self._param(key.split("/", 1)[1])
        return array_module(p).zeros_like(p)

    def _state_keys(self):
        return {f"{kind}/{n}" for kind in self.state_kinds for n, _, _ in self.params}


class SGD(Optimizer):
    state_kinds = ("momentum",)

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum = _number(momentum, "momentum")
        self.weight_decay = _number(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0 (torch's rule)")

    @property
    def hyperparameters(self):
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov)

    def step(self):
        self.step_count += 1
        for name, p, g in self.params:
            d = g + self.weight_decay * p if self.weight_decay else g
            if self.momentum:
                key = f"momentum/{name}"
                if key not in self.state:
                    self.state[key] = d.copy()
                else:
                    buf = self.state[key]
                    buf *= self.momentum
                    buf += d
                d = d + self.momentum * self.state[key] if self.nesterov else self.state[key]
            p -= self.lr * d


class Adam(Optimizer):
    state_kinds = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _number(betas[0], "betas[0]", high=1.0)
        self.beta2 = _number(betas[1], "betas[1]", high=1.0)
        self.eps = _number(eps, "eps")
        self.weight_decay = _number(weight_decay, "weight_decay")

    @property
    def hyperparameters(self):
        return dict(lr=self.lr, betas=[self.beta1, self.beta2], eps=self.eps, weight_decay=self.weight_decay)

    def step(self):
        self.step_count += 1
        t = self.step_count
        bc1, bc2 = 1 - self.beta1**t, 1 - self.beta2**t
        for name, p, g in self.params:
            xp = array_module(p)
            if self.weight_decay:
                g = g + self.weight_decay * p
            m = self.state.setdefault(f"exp_avg/{name}", xp.zeros_like(p))
            v = self.state.setdefault(f"exp_avg_sq/{name}", xp.zeros_like(p))
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            denom = xp.sqrt(v) / math.sqrt(bc2) + self.eps
            p -= (self.lr / bc1) * m / denom


def _grads(params):
    return [g for _, _, g in params]


def grad_norm(params):
    """Global L2 norm of all gradients."""
    return math.sqrt(sum(float((g * g).sum()) for g in _grads(params)))


def clip_grad_norm(params, max_norm):
    """Scale all gradients so their global L2 norm is at most ``max_norm`` (torch's rule: factor
    max_norm / (norm + 1e-6) when below 1; a NaN norm makes every gradient NaN, as in torch). Returns the
    norm before clipping."""
    max_norm = _number(max_norm, "max_norm")
    total = grad_norm(params)
    coef = max_norm / (total + 1e-6)
    if not coef >= 1:  # below 1, or NaN
        for g in _grads(params):
            g *= coef
    return total


def clip_grad_value(params, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value]. Returns the global norm before clipping."""
    clip_value = _number(clip_value, "clip_value")
    total = grad_norm(params)
    for g in _grads(params):
        array_module(g).clip(g, -clip_value, clip_value, out=g)
    return total
