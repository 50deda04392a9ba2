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

from .backend import array_module


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: pass module.parameters()")
        for item in self.params:
            if len(item) != 3:
                raise TypeError("params must be (name, parameter, gradient) triples, as module.parameters() gives")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict = {}

    def zero_grad(self):
        for _, _, g in self.params:
            g[...] = 0

    def state_dict(self):
        """Flat {key: array or scalar} for checkpoints."""
        out = {"step_count": self.step_count, "lr": self.lr}
        for key, value in self.state.items():
            out[key] = value
        return out

    def load_state_dict(self, state):
        for key, value in state.items():
            if key in ("step_count", "lr"):
                continue
            if key not in self._state_keys():
                raise ValueError(f"optimizer state has unexpected key {key!r}")
            target = self.state.setdefault(key, self._zeros_for(key))
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"optimizer state {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(target.shape)}")
        for key, value in state.items():
            if key not in ("step_count", "lr"):
                self.state[key][...] = array_module(self.state[key]).asarray(value)
        self.step_count = int(state.get("step_count", 0))
        self.lr = float(state.get("lr", self.lr))

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
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)

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
        self.beta1, self.beta2 = map(float, betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)

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
    """Scale all gradients so their global L2 norm is at most ``max_norm`` (torch's rule:
    factor max_norm / (norm + 1e-6) when below 1). Returns the norm before clipping."""
    total = grad_norm(params)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in _grads(params):
            g *= coef
    return total


def clip_grad_value(params, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value]. Returns the global norm before clipping."""
    total = grad_norm(params)
    for g in _grads(params):
        array_module(g).clip(g, -clip_value, clip_value, out=g)
    return total
