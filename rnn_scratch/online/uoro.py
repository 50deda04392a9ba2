r"""Unbiased online recurrent optimisation (Tallec and Ollivier 2018): a rank-one, unbiased estimate of M_t.

Per batch row, M_t = ds_t/dtheta (S x P) is estimated by an outer product s~_t theta~_t^T, s~ (S), theta~ (P).
RTRL's M_t = D_t M_{t-1} + I_t becomes, with a fresh vector nu of independent random signs (+-1) per step,

    s~_t     = rho0 D_t s~_{t-1} + rho1 nu
    theta~_t = theta~_{t-1} / rho0 + (nu^T I_t) / rho1

    rho0 = sqrt(|theta~_{t-1}| / |D_t s~_{t-1}|),    rho1 = sqrt(|nu^T I_t| / |nu|)

Given the past, E[nu nu^T] = 1 and the cross terms are odd in nu (rho1 is even in nu), so
E[s~_t theta~_t^T] = D_t s~_{t-1} theta~_{t-1}^T + I_t: the estimate is unbiased whatever the positive
rho's; these balance the two terms' norms, which minimises the variance of the sum. The gradient
estimate is (c_t^T s~_t) theta~_t.

Cost per step and row: D_t s~ is one forward-mode product (one GEMV with W_rec and unit-local work,
O(G H^2)); nu^T I_t is O(P) from the factored immediate Jacobian; O(S + P) memory. The price is
variance: a rank-one estimate of an S x P matrix.
"""

from __future__ import annotations

import math

from ..backend import array_module
from . import _jacobians as jac
from ._tracker import Tracker


class UORO(Tracker):
    """UORO: per row a state vector s~ (B, n, H) and a parameter vector theta~ ({kind: (B, G H[, K])})."""

    name = "uoro"
    needs_rng = True
    carried = ("s", "theta")

    def step(self, d):
        xp = array_module(d.local)
        B, n, G, H = jac.sizes(d)
        nu = jac.random_signs(self.rng, (B, n, H), xp, d.local.dtype)
        nu_i = jac.immediate_vjp(d, nu)  # nu^T I_t
        if self.s is None:  # s~_0 = 0, theta~_0 = 0: M_0 = 0
            self.s = xp.zeros_like(nu)
            self.theta = {kind: xp.zeros_like(v) for kind, v in nu_i.items()}
        ds = jac.state_product(d, self.s[..., None])[..., 0]  # D_t s~_{t-1}
        rho0 = jac.balance(jac.row_norms(list(self.theta.values())), jac.row_norms([ds]))
        rho1 = jac.balance(jac.row_norms(list(nu_i.values())), jac.row_norms([nu]))
        self.s = rho0[:, None, None] * ds + rho1[:, None, None] * nu
        self.theta = {kind: theta / _lead(rho0, theta) + nu_i[kind] / _lead(rho1, theta)
                      for kind, theta in self.theta.items()}

    def gradient(self, dh, per_row=False):
        weight = (dh * self.s[:, 0]).sum(axis=1)  # c_t^T s~_t per row
        out = {kind: _lead(weight, theta) * theta for kind, theta in self.theta.items()}
        return out if per_row else {kind: g.sum(axis=0) for kind, g in out.items()}

    def state_arrays(self):
        return [] if self.s is None else [self.s, *self.theta.values()]

    def carried_elements(self, d):
        B, n, G, H = jac.sizes(d)
        return B * n * H + sum(math.prod(shape) // (n * H) for shape in jac.full_shapes(d).values())


def _lead(v, like):
    """A per-row (B,) vector shaped to broadcast against ``like`` (B, ...)."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))
