"""Losses, each returning ``(loss, dL/dinput)`` so the backward pass starts right there.

MSE (mean over every element)::

    L = mean((y - t)^2)                 dL/dy = 2 (y - t) / N

Softmax cross-entropy over the last axis, mean over the counted positions::

    p = softmax(z) = exp(z - max z) / sum exp(z - max z)      (shifted: no overflow)
    L = -(1/N) sum_n log p[n, t_n]      dL/dz[n] = (p[n] - onehot(t_n)) / N

Positions whose target equals ``ignore_index`` (or where ``mask`` is False) count in neither
the sum nor N and get zero gradient, as in torch's ``ignore_index``.
"""

from __future__ import annotations

from .backend import array_module


def mse(pred, target):
    """Mean squared error and its gradient w.r.t. ``pred``."""
    if pred.shape != target.shape:
        raise ValueError(f"target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    diff = pred - target
    n = diff.size
    return float((diff * diff).sum() / n), (2.0 / n) * diff


def log_softmax(z, axis=-1):
    """Numerically stable log-softmax: z - max - log(sum(exp(z - max)))."""
    xp = array_module(z)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z, axis=-1):
    xp = array_module(z)
    return xp.exp(log_softmax(z, axis))


def softmax_cross_entropy(logits, targets, ignore_index=None, mask=None):
    """Mean cross-entropy of integer ``targets`` (shape ``logits.shape[:-1]``) and its gradient.

    ``ignore_index``: target value to leave out; ``mask``: boolean array, False = leave out.
    """
    xp = array_module(logits)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape {tuple(logits.shape[:-1])} (logits without the class axis), "
                         f"got {tuple(targets.shape)}")
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be integers, got dtype {targets.dtype}")
    C = logits.shape[-1]
    keep = xp.ones(targets.shape, dtype=bool) if mask is None else mask.astype(bool)
    if ignore_index is not None:
        keep = keep & (targets != ignore_index)
    safe = xp.where(keep, targets, 0)
    if bool(((safe < 0) | (safe >= C)).any()):
        raise ValueError(f"targets must lie in 0..{C - 1} (or equal ignore_index), got values out of range")
    logp = log_softmax(logits)
    picked = xp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    count = int(keep.sum())
    if count == 0:
        return 0.0, xp.zeros_like(logits)
    loss = float(-(picked * keep).sum() / count)
    grad = xp.exp(logp)
    xp.put_along_axis(grad, safe[..., None], xp.take_along_axis(grad, safe[..., None], axis=-1) - 1, axis=-1)
    grad *= (keep / count)[..., None]
    return loss, grad.astype(logits.dtype)
