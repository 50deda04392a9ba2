"""Central finite differences, to check hand-written backward passes.

For a scalar loss L and a tensor W, each element is nudged both ways::

    dL/dW[k]  ~=  (L(W + eps e_k) - L(W - eps e_k)) / (2 eps)        error O(eps^2)

and compared with the analytic gradient. The reported error of a tensor is
``max_k |analytic[k] - numeric[k]| / max(max_k |numeric[k]|, max_k |analytic[k]|)``: the worst
element error relative to the tensor's gradient scale, which stays meaningful when single
elements are near zero. In float64 with eps = 1e-6 a correct backward lands near 1e-9.

Their truncation error is about eps^2/6 times L's third derivative, small unless L curves sharply on the scale
of eps (a layer norm of a vector near zero variance curves on the scale sqrt(1e-5)): a tensor that fails is
measured again by Richardson extrapolation, (4 D(eps/2) - D(eps)) / 3, whose truncation error is O(eps^4),
before it is reported (:func:`refined_gradient`). A wrong backward is off by the size of its error either way.

The differences themselves are noisy: L is computed with rounding error of about u * M, where
u = 2^-53 and M = sum |terms of L| (its magnitude), so each numeric derivative carries about
u * M / eps of noise (1e-9 for M = 10). A tensor whose gradient is as small as that noise
cannot be checked relatively: :func:`gradcheck` measures it against ``NOISE_UNITS`` times the
noise when given M (``loss_magnitude``), and against ``floor`` in any case.

Usable on anything: :func:`gradcheck` takes a loss closure and the arrays it reads (perturbed
in place), :func:`check_layer` wraps it for the recurrent layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import to_numpy
from .functional._numeric import numerical_gradient

U = 2.0**-53  # float64 unit roundoff
NOISE_UNITS = 16  # benchmarks/fd_noise.py: correct backwards measure at most 3.1 units (2000 configurations)


def relative_error(analytic, numeric, floor=0.0) -> float:
    """max |a - n| / max(max |n|, max |a|, floor); 0 when both are exactly zero.

    ``floor`` > 0 turns the check absolute for tensors whose values are all far below it: useful in
    float32, where a gradient that is a near-cancelling sum of O(1) terms carries rounding error of
    the size of those terms, not of the result.
    """
    a, n = to_numpy(analytic).astype(np.float64), to_numpy(numeric).astype(np.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic has shape {a.shape} but numeric has shape {n.shape}")
    scale = max(np.abs(n).max(initial=0.0), np.abs(a).max(initial=0.0), floor)
    diff = np.abs(a - n).max(initial=0.0)
    if scale == 0.0:
        return float(diff)
    return float(diff / scale)


def refined_gradient(loss_fn, array, eps=1e-6, coarse=None, levels=1):
    """Richardson extrapolation of central differences. Level 1: R1(eps) = (4 D(eps/2) - D(eps)) / 3, truncation
    error O(eps^4) instead of O(eps^2), noise about 3 times D(eps)'s; level 2: (16 R1(eps/2) - R1(eps)) / 15,
    O(eps^6), noise about 7 times (:data:`REFINED_NOISE`). ``coarse``: D(eps) when already computed."""
    coarse = numerical_gradient(loss_fn, array, eps) if coarse is None else coarse
    half = numerical_gradient(loss_fn, array, eps / 2)
    r1 = (4 * half - coarse) / 3
    if levels == 1:
        return r1
    r1_half = (4 * numerical_gradient(loss_fn, array, eps / 4) - half) / 3
    return (16 * r1_half - r1) / 15


REFINED_NOISE = {1: 3, 2: 7}  # the extrapolations' noise in units of D(eps)'s: (4*2 + 1)/3; (16*6 + 3)/15
MEASURED_NOISE_UNITS = 8  # level 2's noise (~6.6 D(eps)'s) against the measured |R1(1.01 eps) - R1(eps)| (~4.2),
# with room for the maximum over a few entries (the LayerNorm LSTM's x gradient below: 5.0)
SHIFT = 1.01  # R1 at eps and at SHIFT * eps: their noise is independent, their truncation nearly the same


@dataclass
class GradCheckRow:
    name: str
    shape: tuple
    max_abs_error: float
    rel_error: float
    passed: bool
    scale: float = 0.0  # max(max |analytic|, max |numeric|): the tensor's own gradient scale


@dataclass
class GradCheckReport:
    rows: list = field(default_factory=list)
    tol: float = 1e-6
    noise: float = 0.0  # estimated absolute noise of each numeric derivative, u * M / eps (0: not estimated)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def worst(self) -> float:
        return max((r.rel_error for r in self.rows), default=0.0)

    def failures(self):
        return [r for r in self.rows if not r.passed]

    def __str__(self):
        width = max([len(r.name) for r in self.rows] + [6])
        lines = [f"{'tensor':<{width}}  {'shape':<16} {'max |a-n|':>10} {'rel error':>10}  ok",
                 "-" * (width + 44)]
        for r in self.rows:
            lines.append(f"{r.name:<{width}}  {str(r.shape):<16} {r.max_abs_error:>10.2e} {r.rel_error:>10.2e}  "
                         f"{'yes' if r.passed else 'NO'}")
        noise = f"; finite-difference noise ~{self.noise:.1e}" if self.noise else ""
        lines.append(f"worst relative error {self.worst:.2e} (tolerance {self.tol:.0e}{noise}): "
                     f"{'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def gradcheck(loss_fn, arrays, analytic, *, eps=1e-6, tol=1e-6, floor=1e-3, loss_magnitude=None) -> GradCheckReport:
    """Compare analytic gradients with central differences.

    Central differences in float64 carry absolute noise near u * M / eps (module docstring); a tensor
    whose whole gradient is far below ``floor``, or below NOISE_UNITS * u * M / eps / tol when
    ``loss_magnitude`` M is given, is measured against that instead of its own size (an absolute
    error of at most tol * floor = 1e-9 by default). A tensor that fails is measured again with
    :func:`refined_gradient`, one level of extrapolation and then two (its noise counted 3 and 7 times), and
    judged by that (a loss that curves on a scale near eps, as a layer norm of a zero vector through two layers
    of norms, needs the second). At the second level the extrapolations' noise is also measured, as the change of
    R1 when eps moves by 1% (its truncation barely moves), and an error within MEASURED_NOISE_UNITS of it is
    noise: rounding amplified
    inside the loss (a layer norm's 1/sqrt(1e-5) slope at a zero state) can exceed the estimate u * M / eps.
    A wrong backward is off by the size of the gradient itself and still fails.

    loss_fn: () -> scalar, reading the arrays in ``arrays`` (name -> float64 array, perturbed in place).
    analytic: name -> gradient of the same shape.
    loss_magnitude: sum of |terms| of the loss at the unperturbed arrays, or None.
    """
    noise = 0.0 if loss_magnitude is None else U * float(loss_magnitude) / eps
    floor = max(floor, NOISE_UNITS * noise / tol)
    report = GradCheckReport(tol=tol, noise=noise)
    for name, array in arrays.items():
        if name not in analytic:
            raise KeyError(f"no analytic gradient given for {name!r}")
        numeric = numerical_gradient(loss_fn, array, eps)
        a = to_numpy(analytic[name])
        err = relative_error(a, numeric, floor)
        coarse, r1 = numeric, None
        for levels in (1, 2):  # truncation error or a wrong gradient: measure again, O(eps^4), then O(eps^6)
            if err < tol:
                break
            numeric = refined_gradient(loss_fn, array, eps, coarse, levels)
            measured = 0.0
            if levels == 1:
                r1 = numeric
            else:  # the extrapolations' own noise, measured: R1 moved by 1% of eps
                measured = float(np.abs(refined_gradient(loss_fn, array, SHIFT * eps) - r1).max(initial=0.0))
            err = relative_error(a, numeric, max(floor, NOISE_UNITS * REFINED_NOISE[levels] * noise / tol,
                                                 MEASURED_NOISE_UNITS * measured / tol))
        scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(numeric).max(initial=0.0)))
        report.rows.append(GradCheckRow(name, tuple(array.shape), float(np.abs(a - numeric).max(initial=0.0)),
                                        err, err < tol, scale))
    return report


def check_layer(layer, x, state=None, lengths=None, *, eps=1e-6, tol=1e-6, floor=1e-3, seed=0, params=True,
                dropout_masks=None) -> GradCheckReport:
    """Finite-difference check of a recurrent layer (float64) over x, the initial state(s) and every parameter.

    The loss is a fixed random projection of everything the layer returns,
    ``L = sum(R_out * out) + sum(R_h * h_n) [+ sum(R_c * c_n)]``, so every output path is exercised.
    In training mode with dropout, the masks of a first forward pass are held fixed.
    """
    if layer.dtype != np.float64:
        raise TypeError(f"layer must be float64 for finite differences, got {layer.dtype}")
    xp = layer.xp
    B = x.shape[0 if layer.batch_first else 1]
    shape = (layer.num_layers * layer.num_directions, B, layer.hidden_size)
    names = tuple(f"{s}0" for s in layer.cell.state_names)
    states = layer.to_states(state) or (None,) * len(names)
    states = [xp.zeros(shape) if s is None else s.copy() for s in states]
    x = x.copy()

    def run():
        return layer.forward_states(x, tuple(states), lengths, dropout_masks=dropout_masks)

    out, finals = run()
    if dropout_masks is None:
        dropout_masks = layer.last_dropout_masks
    rng = np.random.default_rng(seed)
    r_out = xp.asarray(rng.standard_normal(out.shape))
    r_fin = [xp.asarray(rng.standard_normal(f.shape)) for f in finals]

    def loss():
        o, f = run()
        return float((r_out * o).sum() + sum((r * v).sum() for r, v in zip(r_fin, f)))

    magnitude = float(xp.abs(r_out * out).sum() + sum(xp.abs(r * v).sum() for r, v in zip(r_fin, finals)))

    layer.zero_grad()  # the first run() above left the forward cache backward needs
    dx, dstates = layer.backward_states(r_out, tuple(r_fin))
    arrays = {"x": x, **dict(zip(names, states))}
    analytic = {"x": dx, **dict(zip(names, dstates))}
    if params:
        arrays.update(layer.params)
        analytic.update(layer.grads)
    return gradcheck(loss, arrays, analytic, eps=eps, tol=tol, floor=floor, loss_magnitude=magnitude)


def min_abs_preactivation(layer):
    """Smallest |argument of the cell's non-differentiable function| (``Cell.nonsmooth_at``: a relu RNN's
    pre-activation W_ih x_t + b + W_hh h_{t-1}) over every valid step, layer and direction of a layer's last
    forward; inf for a smooth cell. Finite differences are meaningless across a kink: check only when this is
    well above the difference step ``eps``."""
    from .functional import CheckpointedCache, ReferenceCache

    at = layer.cell.nonsmooth_at
    if at is None:
        return np.inf
    smallest = np.inf
    for cache in (c for layer_caches in layer._saved()["caches"] for c in layer_caches):
        parts = [cache]
        if isinstance(cache, CheckpointedCache):  # each segment's cache, recomputed from its checkpoint
            parts = [cache.forward(cache.cell, cache.x[seg], state, cache.params, reverse=cache.reverse,
                                   mask=None if cache.mask is None else cache.mask[seg])[2]
                     for seg, state in cache.checkpoints]
        for part in parts:
            if isinstance(part, ReferenceCache):
                args = np.stack([at(part.x[t], part.before[t], part.params) for t in range(len(part.steps))])
            else:
                args = at(part.x, tuple(part.prev(k) for k in range(len(part.states))), part.params)
            args = to_numpy(args)
            if part.mask is not None:
                args = np.where(to_numpy(part.mask), args, np.inf)
            smallest = min(smallest, float(np.abs(args).min()))
    return smallest
