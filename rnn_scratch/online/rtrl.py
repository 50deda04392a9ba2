r"""Real-time recurrent learning (Williams and Zipser 1989): the exact gradient, forward in time.

The influence matrix M_t = ds_t/dtheta (S x P per batch row, S = n H state entries, P parameters) obeys

    M_t = D_t M_{t-1} + I_t,        M_0 = 0  (the initial state does not depend on theta)
    dL/dtheta = sum_t  c_t^T M_t,   c_t = dL/ds_t at step t alone  (here [dout_t, 0]: the loss reads h only)

with D_t = ds_t/ds_{t-1} and I_t = ds_t/dtheta|_{s_{t-1}} the step's Jacobians (the cell's
``step_derivatives``). Summed over t this is BPTT's gradient, reassociated: BPTT multiplies the
c_t by the D's backwards, RTRL multiplies the I's forwards.

Cost per step and row: D_t M_{t-1} is one GEMM of W_rec (G H x H) with the h rows of M (H x P),
O(G H^2 P) = O(H^4) time, and M holds S P = O(H^3) numbers. Everything else is O(S P).
"""

from __future__ import annotations

import math

from ..backend import array_module
from . import _jacobians as jac
from ._tracker import Tracker


class RTRL(Tracker):
    """Exact RTRL: M (full layout, per kind (B, n, H, G H[, K])) carried forward."""

    name = "rtrl"
    carried = ("M",)

    def step(self, d):
        if self.M is None:  # M_0 = 0
            xp = array_module(d.local)
            self.M = {kind: xp.zeros(shape, dtype=d.local.dtype) for kind, shape in jac.full_shapes(d).items()}
        else:
            self.M = {kind: jac.propagate(d, m) for kind, m in self.M.items()}  # D_t M_{t-1}
        jac.add_immediate_full(d, self.M)  # + I_t
        self.restrict(d)

    def restrict(self, d):
        """Keep M on a pattern (SnAp-2); RTRL keeps every entry."""

    def gradient(self, dh, per_row=False):
        return jac.contract_full(dh, self.M, per_row)  # c_t^T M_t, c_t = [dh, 0]

    def state_arrays(self):
        return list(self.M.values()) if self.M else []

    def carried_elements(self, d):
        return sum(math.prod(shape) for shape in jac.full_shapes(d).values())
