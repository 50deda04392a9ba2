r"""Products with one step's Jacobians, built from a cell's :class:`~rnn_scratch.functional.StepDerivatives`.

Notation (every algorithm's docstring uses it). Per batch row: the state s_t has n parts of H units,
part 0 being h (n = 2 for the LSTM's (h, c)); a parameter kind p (``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``) has G*H rows, row g*H + j feeding gate g of unit j, and K_p columns (a bias: none).

    D_t = ds_t/ds_{t-1}   (S x S, S = n H)          I_t = ds_t/dtheta   (S x P)      M_t = ds_t/dtheta along the path

RTRL's recursion is M_t = D_t M_{t-1} + I_t. The cell gives both Jacobians factored per unit
(:class:`~rnn_scratch.functional.StepDerivatives`)::

    D_t[(q, j), (q', j')] = delta_jj' local[q, q', j] + [q' = 0] sum_g E_rec[q, g, j] W_rec[g H + j, j']
    I_t[(q, j), (p, g H + j', k)] = delta_jj' E_tau(p)[q, g, j] u_p[k]

so a product with D_t costs one GEMM with W_rec plus unit-local work, and a product with I_t costs
O(P) per row. Layouts used here:

- full ("RTRL layout"): per kind a (B, n, H, G*H[, K]) array, M[b, q, j, r, k] = d s[q, j] / d p[r, k];
- unit ("SnAp-1 layout"): per kind a (B, n, G, H[, K]) array, the entries with j = j' only.
"""

from __future__ import annotations

from ..backend import array_module


def kind_inputs(d):
    """{parameter kind: (term index, u_p or None)} over every term, in the terms' order."""
    return {kind: (index, u) for index, term in enumerate(d.terms) for kind, u in term.inputs.items()}


def sizes(d):
    """(B, n, G, H) of a step's derivatives."""
    B, n, G, H = d.terms[0].E.shape
    return B, n, G, H


def recurrent_product(d, v):
    r"""The part of D_t v that passes through W_rec: sum_g E_rec[q, g, j] (W_rec v_h)[g H + j].

    v: (B, n, H, R), R trailing columns (a state tangent: R = 1; an influence matrix: R = P).
    Returns (B, n, H, R); zeros when the cell has no recurrent weight.
    """
    xp = array_module(v)
    B, n, H, R = v.shape
    if d.recurrent_term is None:
        return xp.zeros_like(v)
    E = d.terms[d.recurrent_term].E
    G = E.shape[2]
    vh = v[:, 0].transpose(1, 0, 2).reshape(H, B * R)  # the h rows, all batch rows side by side (a view for B = 1)
    wv = (d.recurrent_weight @ vh).reshape(G, H, B, R).transpose(2, 0, 1, 3)  # W_rec v_h: one GEMM, (B, G, H, R)
    return xp.einsum("bqgj,bgjr->bqjr", E, wv)


def local_product(local, v):
    """sum_q' local[q, q', j] v[q', j, :]: the unit-local part of D_t v; v (B, n, H, R)."""
    return array_module(v).einsum("bqpj,bpjr->bqjr", local, v)


def state_product(d, v):
    """D_t v for v (B, n, H, R): the unit-local part plus the part through W_rec."""
    return local_product(d.local, v) + recurrent_product(d, v)


def propagate(d, m):
    """D_t m for an array m (B, n, H, ...): its trailing axes flattened to R columns and restored."""
    shape = m.shape
    v = m.reshape(shape[0], shape[1], shape[2], -1)
    return state_product(d, v).reshape(shape)


def unit_diagonal(d, recurrent=True):
    r"""The unit-diagonal blocks of D_t: out[b, q, q', j] = D_t[(q, j), (q', j)] (B, n, n, H).

    local, plus (``recurrent``) the self-connection through W_rec:
    [q' = 0] sum_g E_rec[q, g, j] W_rec[g H + j, j].
    """
    xp = array_module(d.local)
    out = d.local.copy()
    if recurrent and d.recurrent_term is not None:
        E = d.terms[d.recurrent_term].E
        G, H = E.shape[2], E.shape[3]
        units = xp.arange(H)
        self_weight = d.recurrent_weight.reshape(G, H, H)[:, units, units]  # W_rec[g H + j, j] (G, H)
        out[:, :, 0] += (E * self_weight).sum(axis=2)
    return out


def immediate_vjp(d, nu):
    r"""nu^T I_t per row, for nu (B, n, H): {kind: (B, G H, K_p) or (B, G H)}.

    (nu^T I_t)[p, g H + j, k] = (sum_q nu[q, j] E_tau(p)[q, g, j]) u_p[k]: O(P) per row.
    """
    B, n, G, H = sizes(d)
    weighted = [(nu[:, :, None, :] * term.E).sum(axis=1).reshape(B, G * H) for term in d.terms]
    return {kind: weighted[i] if u is None else weighted[i][:, :, None] * u[:, None, :]
            for kind, (i, u) in kind_inputs(d).items()}


def immediate_product(d, dtheta):
    r"""I_t dtheta per row for a parameter tangent dtheta = {kind: array of the parameter's shape}: (B, n, H).

    (I_t dtheta)[q, j] = sum_p sum_g E_tau(p)[q, g, j] (dtheta_p u_p)[g H + j] (a bias: dtheta_p[g H + j]).
    """
    B, n, G, H = sizes(d)
    out = 0
    for kind, (i, u) in kind_inputs(d).items():
        rows = dtheta[kind][None] if u is None else u @ dtheta[kind].T  # (B or 1, G H)
        out = out + (d.terms[i].E * rows.reshape(-1, 1, G, H)).sum(axis=2)
    return out


def immediate_unit(d):
    """I_t in the unit layout: {kind: (B, n, G, H, K_p) or (B, n, G, H)}, I[b, q, g, j, k] = E[q, g, j] u[k]."""
    return {kind: d.terms[i].E.copy() if u is None else d.terms[i].E[..., None] * u[:, None, None, None, :]
            for kind, (i, u) in kind_inputs(d).items()}


def add_immediate_full(d, m):
    """m[kind] += I_t in the full layout, in place: the entries (q, j, g H + j, k), one per unit j."""
    B, n, G, H = sizes(d)
    xp = array_module(d.local)
    units = xp.arange(H)
    for kind, (i, u) in kind_inputs(d).items():
        E = d.terms[i].E.transpose(3, 0, 1, 2)  # (H, B, n, G): the order advanced indexing gives
        target = m[kind].reshape(B, n, H, G, H, *(() if u is None else (u.shape[1],)))
        target[:, :, units, :, units] += E if u is None else E[..., None] * u[None, :, None, None, :]


def full_shapes(d):
    """{kind: shape of its influence matrix in the full layout}."""
    B, n, G, H = sizes(d)
    return {kind: (B, n, H, G * H) + (() if u is None else (u.shape[1],)) for kind, (_, u) in kind_inputs(d).items()}


def unit_shapes(d):
    """{kind: shape of its influence matrix in the unit layout}."""
    B, n, G, H = sizes(d)
    return {kind: (B, n, G, H) + (() if u is None else (u.shape[1],)) for kind, (_, u) in kind_inputs(d).items()}


def contract_full(dh, m, per_row=False):
    """dh^T M_h for each kind (dh (B, H), m[kind] (B, n, H, G H, ...)): the gradient, summed over rows unless
    ``per_row`` (then a leading batch axis)."""
    xp = array_module(dh)
    if per_row:
        return {kind: xp.einsum("bj,bj...->b...", dh, value[:, 0]) for kind, value in m.items()}
    return {kind: xp.tensordot(dh, value[:, 0], axes=([0, 1], [0, 1])) for kind, value in m.items()}


def contract_unit(dh, m, per_row=False):
    """dh^T M_h in the unit layout: (G, H[, K]) per kind reshaped to the parameter's (G H[, K])."""
    xp = array_module(dh)
    out = {}
    for kind, value in m.items():
        g = xp.einsum("bj,bgj...->bgj...", dh, value[:, 0])  # (B, G, H[, K])
        g = g if per_row else g.sum(axis=0)
        lead = g.shape[:1] if per_row else ()
        out[kind] = g.reshape(lead + (g.shape[len(lead)] * g.shape[len(lead) + 1],) + g.shape[len(lead) + 2:])
    return out


def row_norms(arrays):
    """The Euclidean norm of each batch row over a list of (B, ...) arrays: (B,)."""
    xp = array_module(arrays[0])
    total = sum((a.reshape(a.shape[0], -1) ** 2).sum(axis=1) for a in arrays)
    return xp.sqrt(total)


def balance(numerator, denominator):
    """sqrt(numerator / denominator) per row, 1 where either is 0 (any positive factor keeps the estimators
    unbiased; this one balances the two norms)."""
    xp = array_module(numerator)
    ok = (numerator > 0) & (denominator > 0)
    return xp.where(ok, xp.sqrt(xp.where(ok, numerator, 1) / xp.where(ok, denominator, 1)), 1)


def random_signs(rng, shape, xp, dtype):
    """Independent +-1 entries (Rademacher), drawn on the host from ``rng`` (numpy Generator)."""
    return xp.asarray(rng.integers(0, 2, size=shape) * 2 - 1, dtype=dtype)
