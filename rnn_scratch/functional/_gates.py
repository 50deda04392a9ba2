"""The gate nonlinearities: the readable ones of the step functions and the in-place ones of the fast paths."""

from __future__ import annotations

import contextlib

import numpy as np


def sigmoid(xp, a):
    """The logistic function 1 / (1 + exp(-a)), written as the equations read (reference steps)."""
    return 1 / (1 + xp.exp(-a))


def sigmoid_from_negated_(xp, a):
    """In place: a holds -z on entry, sigma(z) = 1 / (1 + exp(-z)) on exit.

    The fast paths pre-scale the sigmoid rows of the weights by -1, so the negation is free: one
    ``exp`` and two cheap passes. Relative accuracy holds everywhere (for very negative z the
    reciprocal of a large number is as accurate as that number). exp overflows to inf for very
    negative z, giving the exact limit 0 (see :func:`quiet_overflow`).

    The tanh gates use NumPy's own ``tanh``: accurate to the last place near 0, and (NumPy 2's SIMD
    loops) faster than any exp-based formula here: 0.37 ns/element in float32 against 0.87 for
    ``2 sigma(2a) - 1`` and 1.25 for an expm1 form (AVX-512 machine, 1M elements, one thread).
    """
    xp.exp(a, out=a)
    a += 1
    xp.reciprocal(a, out=a)


def quiet_overflow(xp):
    """NumPy warns when exp overflows to inf; in the sigmoid that inf is the right answer."""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()
