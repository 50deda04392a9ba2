r"""Kronecker-factored RTRL (Mujika, Meier and Steger 2018): an unbiased estimate of M_t as one Kronecker product.

For cells whose immediate Jacobian is one Kronecker product -- every parameter row r = g H + j feeds one
pre-activation, and I_t[s, (r, k)] = E_t[s, r] u_t[k] with u_t = [x_t, h_{t-1}, 1, 1] the concatenated
inputs of the parameter kinds and E_t (S x G H) the state's sensitivity to the pre-activations -- the
influence matrix is estimated per batch row as

    M_t ~ A_t (x) B_t,    M[s, (r, k)] = B_t[s, r] A_t[k],    A_t (K),  B_t (S x G H)

RTRL's M_t = D_t M_{t-1} + I_t = A_{t-1} (x) (D_t B_{t-1}) + u_t (x) E_t is a sum of two Kronecker products;
with two independent random signs nu_0, nu_1 it is replaced by one:

    A_t = nu_0 p_0 A_{t-1} + nu_1 p_1 u_t          B_t = nu_0 / p_0 D_t B_{t-1} + nu_1 / p_1 E_t
    p_0 = sqrt(|D_t B_{t-1}| / |A_{t-1}|),         p_1 = sqrt(|E_t| / |u_t|)

E[A_t (x) B_t] = A_{t-1} (x) D_t B_{t-1} + u_t (x) E_t (the cross terms carry nu_0 nu_1, mean 0): unbiased,
with the p's balancing the factors' norms. Its variance is far below UORO's: the noise only mixes
two terms per step, and B_t keeps the whole S x G H structure. The gradient estimate is
dL/dW[r, k] = (c_t^T B_t)[r] A_t[k].

Cost per step and row: D_t B_{t-1} is a GEMM of W_rec (G H x H) with the h rows of B (H x G H), O(G^2 H^3)
time; O(S G H + K) = O(H^2) memory.

Defined only where I_t is one Kronecker product (``len(step_derivatives.terms) == 1``): the tanh and relu
RNN and the LSTM. A cell whose parameter kinds see different sensitivities (the GRU: its recurrent n rows
see W_hn h_{t-1} through the reset gate, r * (W_hn h), so E_hh != E_ih) is refused with that reason.
"""

from __future__ import annotations

from ..backend import array_module
from . import _jacobians as jac
from ._tracker import Tracker


class KFRTRL(Tracker):
    """KF-RTRL: per row A (B, K) and B ((B, n, H, G H), the full layout with one column per parameter row)."""

    name = "kf-rtrl"
    needs_rng = True
    carried = ("A", "B")

    def check(self, d):
        """None, or why this cell's immediate Jacobian is not one Kronecker product."""
        if len(d.terms) == 1:
            return None
        groups = " and ".join("(" + ", ".join(term.inputs) + ")" for term in d.terms)
        return (f"KF-RTRL estimates M_t as one Kronecker product A_t (x) B_t, which needs the step's immediate "
                f"Jacobian to be one product u_t (x) E_t (Mujika et al. 2018); this cell's is a sum of "
                f"{len(d.terms)}, the parameter groups {groups} seeing different sensitivities E")

    def step(self, d):
        xp = array_module(d.local)
        B, n, G, H = jac.sizes(d)
        (term,) = d.terms
        ones = xp.ones((B, 1), dtype=d.local.dtype)
        self.columns = {kind: None if u is None else u.shape[1] for kind, u in term.inputs.items()}  # None: a vector
        u = xp.concatenate([ones if v is None else v for v in term.inputs.values()], axis=1)  # u_t (B, K)
        E = xp.zeros((B, n, H, G * H), dtype=d.local.dtype)  # E_t in the full layout
        units = xp.arange(H)
        E.reshape(B, n, H, G, H)[:, :, units, :, units] = term.E.transpose(3, 0, 1, 2)
        if self.A is None:  # A_0 (x) B_0 = M_0 = 0
            self.A, self.B = xp.zeros_like(u), xp.zeros_like(E)
        db = jac.propagate(d, self.B)  # D_t B_{t-1}
        p0 = jac.balance(jac.row_norms([db]), jac.row_norms([self.A]))[:, None]
        p1 = jac.balance(jac.row_norms([term.E]), jac.row_norms([u]))[:, None]
        nu0, nu1 = (jac.random_signs(self.rng, (B, 1), xp, d.local.dtype) for _ in range(2))
        self.A = nu0 * p0 * self.A + nu1 * p1 * u
        self.B = (nu0 / p0)[:, :, None, None] * db + (nu1 / p1)[:, :, None, None] * E

    def gradient(self, dh, per_row=False):
        xp = array_module(dh)
        q = xp.einsum("bj,bjr->br", dh, self.B[:, 0])  # c_t^T B_t (B, G H)
        out, start = {}, 0
        for kind, width in self.columns.items():
            a = self.A[:, start:start + (width or 1)]
            start += width or 1
            g = q * a if width is None else q[:, :, None] * a[:, None, :]  # (c^T B)[r] A[k]
            out[kind] = g if per_row else g.sum(axis=0)
        return out

    def state_arrays(self):
        return [] if self.A is None else [self.A, self.B]

    def carried_elements(self, d):
        B, n, G, H = jac.sizes(d)
        K = sum(1 if u is None else u.shape[1] for term in d.terms for u in term.inputs.values())
        return B * (K + n * H * G * H)
