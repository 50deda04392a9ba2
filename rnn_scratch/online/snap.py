r"""Sparse n-step approximations, SnAp-n (Menick, Elsen, Evci, Osindero, Simonyan and Graves 2021).

RTRL's M_t = D_t M_{t-1} + I_t is kept only on a fixed pattern: the entries (state entry, parameter) that a
parameter can reach within n steps. Entries off the pattern are dropped (set to zero) after every step:

    M_t = (D_t M_{t-1} + I_t) . P_n          P_1 = pattern of I_t,   P_{k+1} = P_k  or  pattern(D_t) P_k

Biased (the dropped entries feed later steps), deterministic (no variance).

SnAp-1. Row g H + j of a parameter reaches only unit j's state in one step: P_1 keeps, per parameter,
the state parts q of its own unit with ``reach[q][g]`` (the o rows of an LSTM reach h_j but not c_j).
Only D_t's unit-diagonal blocks act on such an M:

    J_t[q, g, j, k] = sum_q' Dd_t[q, q', j] J_{t-1}[q', g, j, k] + E_t[q, g, j] u_t[k],  then . P_1
    Dd_t[q, q', j] = local[q, q', j] + [q' = 0] sum_g E_rec[q, g, j] W_rec[g H + j, j]

O(n^2 P) time and O(n P) memory per step and row: about BPTT's cost per step, with no storage over time.

SnAp-2. After two steps a parameter of unit j reaches every unit that h_j feeds through W_rec. With the
dense recurrent weights of our layers that is every unit, so P_2 is full and SnAp-2 *is* RTRL: same
numbers, same cost. The pattern is read from W_rec's nonzero entries at the first step, so a sparse
W_rec (exact zeros) gets a sparser, cheaper-in-principle pattern; here it is applied as a mask on RTRL's
full matrices (SnAp-2's values, RTRL's cost). With an elementwise recurrence (diagonal blocks in W_rec)
P_2 is each unit's own block: SnAp-1 already equals RTRL for the RNN and GRU (their state is h alone),
and SnAp-2 does for the LSTM (its o rows need the second step to reach c_j, through h_{t-1}).
"""

from __future__ import annotations

import math

from ..backend import array_module
from . import _jacobians as jac
from ._tracker import Tracker
from .rtrl import RTRL


class UnitLocal(Tracker):
    """M kept on each parameter's own unit (the unit layout): SnAp-1, and RFLO (:mod:`.rflo`).

    ``recurrent``: whether the unit-diagonal blocks include the self-connection through W_rec (SnAp-1) or
    only the unit's own dynamics (RFLO); ``masked``: whether entries off the one-step pattern are dropped.
    """

    recurrent = True
    masked = True
    carried = ("J",)

    def step(self, d):
        immediate = jac.immediate_unit(d)  # I_t in the unit layout
        if self.J is None:  # J_0 = 0
            self.J = immediate
        else:
            xp = array_module(d.local)
            dd = jac.unit_diagonal(d, recurrent=self.recurrent)  # Dd_t
            self.J = {kind: xp.einsum("bqpj,bpgj...->bqgj...", dd, j) + immediate[kind]
                      for kind, j in self.J.items()}
        if self.masked:
            terms = jac.kind_inputs(d)
            for kind, j in self.J.items():
                reach = d.terms[terms[kind][0]].reach
                if not all(all(row) for row in reach):
                    keep = array_module(j).asarray(reach, dtype=j.dtype)  # P_1: (n, G)
                    self.J[kind] = j * keep.reshape(keep.shape + (1,) * (j.ndim - 3))

    def gradient(self, dh, per_row=False):
        return jac.contract_unit(dh, self.J, per_row)

    def state_arrays(self):
        return list(self.J.values()) if self.J else []

    def carried_elements(self, d):
        return sum(math.prod(shape) for shape in jac.unit_shapes(d).values())


class SnAp1(UnitLocal):
    """SnAp-1: the one-step pattern, propagated with D_t's unit-diagonal blocks."""

    name = "snap-1"


class SnApN(RTRL):
    """SnAp-n on RTRL's full layout: M masked by the n-step pattern P_n after every step (n >= 1).

    ``snap-2`` is SnApN with n = 2. SnApN(1) equals :class:`SnAp1`, computed the expensive way.
    """

    def __init__(self, cell, rng=None, n=2):
        super().__init__(cell, rng)
        self.n = n
        self.name = f"snap-{n}"
        self.masks = None

    def restrict(self, d):
        if self.masks is None:
            self.masks = pattern_masks(d, self.n)
        for kind, mask in self.masks.items():
            if mask is not None:
                self.M[kind] *= mask.reshape(mask.shape + (1,) * (self.M[kind].ndim - 4))


def pattern_masks(d, steps):
    r"""{kind: P_steps as a (1, n, H, G H) 0/1 array, or None when it keeps every entry}.

    P_1[(q, j), g H + j'] = delta_jj' reach[q][g]; one more step adds what D_t's structure reaches:
    pattern(D_t)[(q, j), (q', j')] = delta_jj' local_reach[q][q'] or ([q' = 0] and some g with
    rec_reach[q][g] and W_rec[g H + j, j'] != 0).
    """
    xp = array_module(d.local)
    B, n, G, H = jac.sizes(d)
    eye = xp.eye(H)
    structure = xp.zeros((n, H, n, H))
    for q in range(n):
        for q2 in range(n):
            if d.local_reach[q][q2]:
                structure[q, :, q2, :] += eye
    if d.recurrent_term is not None:
        linked = (d.recurrent_weight != 0).reshape(G, H, H).astype(structure.dtype)  # [g, j, j']
        reach = xp.asarray(d.terms[d.recurrent_term].reach, dtype=structure.dtype)  # [q, g]
        structure[:, :, 0, :] += xp.einsum("qg,gjk->qjk", reach, linked)
    structure = structure.reshape(n * H, n * H) > 0
    masks = {}
    for kind, (i, _) in jac.kind_inputs(d).items():
        reach = xp.asarray(d.terms[i].reach, dtype=structure.dtype)  # [q, g]
        pattern = (reach[:, None, :, None] * eye[None, :, None, :]).reshape(n * H, G * H) > 0  # P_1
        for _ in range(steps - 1):
            pattern = pattern | ((structure.astype(float) @ pattern.astype(float)) > 0)
        masks[kind] = None if bool(pattern.all()) else pattern.reshape(1, n, H, G * H).astype(d.local.dtype)
    return masks
