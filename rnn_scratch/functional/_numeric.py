"""Central differences, shared by :mod:`rnn_scratch.gradcheck` and :func:`~rnn_scratch.functional.register_cell`'s
check of a cell's step pair (the functional core cannot import gradcheck, which sits above the layers)."""

from __future__ import annotations

import numpy as np


def numerical_gradient(loss_fn, array, eps=1e-6):
    """Central-difference gradient of ``loss_fn()`` w.r.t. ``array`` (perturbed in place, then restored)."""
    if array.dtype != np.float64:
        raise TypeError(f"array must be float64 for finite differences, got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous so that it can be perturbed in place")
    flat = array.reshape(-1)  # a view: writing to it perturbs the array
    grad = np.zeros(array.size)
    for k in range(array.size):
        orig = float(flat[k])
        flat[k] = orig + eps
        plus = float(loss_fn())
        flat[k] = orig - eps
        minus = float(loss_fn())
        flat[k] = orig
        grad[k] = (plus - minus) / (2 * eps)
    return grad.reshape(array.shape)
