r"""Random-feedback local online learning, RFLO (Murray 2019), and e-prop's eligibility traces (Bellec et al. 2020).

Both keep, per parameter, an eligibility trace: the influence of the parameter on its own unit's state,
carried forward by the unit's *own* dynamics only -- the recurrent synapses W_rec, the self-connection
included, are left out:

    J_t[q, g, j, k] = sum_q' local_t[q, q', j] J_{t-1}[q', g, j, k] + E_t[q, g, j] u_t[k]
    dL/dtheta ~ sum_t c_t^T J_t

For Murray's leaky RNN, h_t = (1 - alpha) h_{t-1} + alpha tanh(W [x_t, h_{t-1}, 1]), local = 1 - alpha and
this is his trace; in the GRU local = z (the trace decays with the update gate), in the LSTM the cell's
dc_t/dc_{t-1} = f and dh_t/dc_{t-1} = o (1 - tanh(c_t)^2) f (e-prop's LSTM traces). The tanh and relu RNN
have no leak: their units keep nothing of their own (local = 0), the trace is the immediate term alone,
and RFLO equals truncated BPTT with k = 1. Murray's random feedback (a fixed random readout in place of
W_out^T for c_t) is a choice of c_t, left to the caller: here c_t is the exact dL/dh_t.

Cost per step and row: O(n^2 P) time, O(n P) memory; biased, no variance.
"""

from __future__ import annotations

from .snap import UnitLocal


class RFLO(UnitLocal):
    """RFLO / e-prop: the unit-local trace with the unit's own dynamics only."""

    name = "rflo"
    recurrent = False
    masked = False
