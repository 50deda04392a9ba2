"""What the time loops share: torch's parameter names and unpacking, time slots, the sequence cache, setup.

Sizes throughout the functional core: T steps, B batch rows, I input features, H hidden units,
G gates (1 RNN, 4 LSTM, 3 GRU). Sequences are time-major: x (T, B, I), outputs (T, B, H).
A cell's state is always a tuple: ``(h,)`` for the RNN and GRU, ``(h, c)`` for the LSTM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..backend import array_module

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # torch's four, in the RNN, LSTM and GRU


class Weights(NamedTuple):
    """torch's parameters of one layer and direction: W_ih (G*H, I), W_hh (G*H, H), b_ih and b_hh (G*H,) or None."""

    weight_ih: object
    weight_hh: object
    bias_ih: object
    bias_hh: object


def unpack(params) -> Weights:
    """The :class:`Weights` in a params dict (missing biases are None)."""
    return Weights(*(params.get(name) for name in PARAM_NAMES))


class Sizes(NamedTuple):
    T: int
    B: int
    I: int
    H: int


@dataclass(frozen=True)
class TimeSlots:
    """Where one direction's states live in a (T+1, B, H) buffer, and the order it visits the steps.

    Forward: slot 0 holds the initial state and slot t+1 the state after step t.
    Reverse: slot T holds the initial state and slot t the state after step t.
    Either way the states after the steps (:attr:`after`) and before them (:attr:`before`) are
    contiguous slices in time order.
    """

    T: int
    reverse: bool

    @property
    def order(self) -> range:
        """The steps in the order the forward pass visits them."""
        return range(self.T - 1, -1, -1) if self.reverse else range(self.T)

    @property
    def backward_order(self) -> range:
        """The steps in the order BPTT visits them (the reverse of :attr:`order`)."""
        return self.order[::-1]

    @property
    def initial(self) -> int:
        """The slot of the initial state."""
        return self.T if self.reverse else 0

    @property
    def final(self) -> int:
        """The slot of the state after the last step visited."""
        return 0 if self.reverse else self.T

    def slot_before(self, t: int) -> int:
        """The slot of the state that step t reads (h_{t-1} in visiting order)."""
        return t + 1 if self.reverse else t

    def slot_after(self, t: int) -> int:
        """The slot that step t writes."""
        return t if self.reverse else t + 1

    @property
    def after(self) -> slice:
        """The states after each step, in time order."""
        return slice(0, self.T) if self.reverse else slice(1, self.T + 1)

    @property
    def before(self) -> slice:
        """The states before each step, in time order."""
        return slice(1, self.T + 1) if self.reverse else slice(0, self.T)


@dataclass(frozen=True, eq=False)
class SequenceCache:
    """What every cell's whole-sequence backward needs (each cell adds its own fields).

    x (T, B, I); h (T+1, B, H): the hidden states, placed by ``slots``; params; slots
    (:class:`TimeSlots`); mask: None or bool (T, B, 1), True at valid steps.
    """

    x: object
    h: object
    params: dict
    slots: TimeSlots
    mask: object

    @property
    def h_prev(self):
        """The hidden state before each step, in time order (T, B, H)."""
        return self.h[self.slots.before]


CHUNK_ELEMENTS = 1 << 18  # elements (1 MB of float32) a run of steps may span and stay in cache


def backward_time_chunks(slots: TimeSlots, per_step: int):
    """The steps in BPTT order, cut into runs of consecutive steps of at most ``CHUNK_ELEMENTS``
    elements (``per_step`` each; at least one step)."""
    order = slots.backward_order
    k = max(1, CHUNK_ELEMENTS // max(per_step, 1))
    return [order[j : j + k] for j in range(0, slots.T, k)]


def span(steps: range) -> slice:
    """The slice of the time axis that a run of consecutive steps covers."""
    return slice(min(steps), max(steps) + 1)


def forward_setup(x, state, reverse, mask):
    """The prologue of every whole-sequence forward.

    Returns (xp, x, :class:`Sizes`, :class:`TimeSlots`, and per state part a (T+1, B, H) buffer holding the
    initial state in its slot). H is the state's width. With a mask, the returned x is a copy that is zero at
    padded steps: whatever the caller left there (even NaN) cannot reach a gradient through 0 * NaN in the
    all-steps GEMMs.
    """
    xp = array_module(x)
    if mask is not None:
        x = xp.where(mask, x, 0).astype(x.dtype, copy=False)
    sizes = Sizes(*x.shape, state[0].shape[-1])
    slots = TimeSlots(sizes.T, reverse)
    buffers = []
    for part in state:
        buf = xp.empty((sizes.T + 1, *part.shape), dtype=x.dtype)
        buf[slots.initial] = part
        buffers.append(buf)
    return xp, x, sizes, slots, tuple(buffers)


def backward_setup(cache: SequenceCache, dout, dstate_n, num_states: int):
    """The prologue of every whole-sequence backward.

    Returns (xp, :class:`Sizes`, dout with padded steps zeroed (outputs there are constant zeros; None stays
    None), and a tuple of ``num_states`` fresh (B, H) accumulators: copies of ``dstate_n``'s parts, zeros for
    missing ones).
    """
    xp = array_module(cache.x)
    sizes = Sizes(*cache.x.shape, cache.h.shape[-1])
    if dout is not None and cache.mask is not None:
        dout = xp.where(cache.mask, dout, 0)
    parts = tuple(dstate_n) if dstate_n is not None else (None,) * num_states
    acc = tuple(xp.zeros((sizes.B, sizes.H), dtype=cache.x.dtype) if d is None else d.copy() for d in parts)
    return xp, sizes, dout, acc


def split_padded(xp, d, valid, carried):
    """Padded steps pass a state gradient straight through to the step before.

    Before a step's backward: ``carried`` gets the part of ``d`` at padded rows and ``d`` keeps only
    the valid rows (in place). After it, :func:`rejoin_padded` adds ``carried`` back.
    """
    xp.multiply(d, ~valid, out=carried)
    d *= valid


def rejoin_padded(d, carried):
    """See :func:`split_padded`."""
    d += carried


class ImmediateTerm(NamedTuple):
    r"""One Kronecker-factored term of a step's immediate Jacobian dS_t/dtheta (S_{t-1} and x_t held fixed).

    For each parameter kind p in ``inputs`` (a subset of ``PARAM_NAMES``) with u_p = inputs[p]::

        d s_t[q, j] / d p[g*H + j', k] = delta_{j j'} E[q, g, j] u_p[k]      u_p (B, K_p): a weight (G*H, K_p)
        d s_t[q, j] / d p[g*H + j']    = delta_{j j'} E[q, g, j]             u_p None: a vector (G*H,)

    q indexes the state parts (h, or h and c), g the gates, j the hidden units: row g*H + j of a parameter
    reaches only unit j's state (the cells' weights act row by row on pre-activations). E: (B, n, G, H), the
    sensitivity of the state to the pre-activations this term's parameters feed. ``reach``: (n, G) bools,
    whether E[q, g] can be nonzero at all (the structure, whatever the values).
    """

    E: object
    inputs: dict
    reach: tuple


class StepDerivatives(NamedTuple):
    r"""The Jacobians of one step s_t = F(s_{t-1}, x_t; theta), factored per hidden unit.

    The state s has n parts of H units (n = 1: h; n = 2: h, c), part 0 being h. The state Jacobian is a
    unit-local part plus what passes through the recurrent weight W_rec (G*H, H), which reads h_{t-1} and
    belongs to ``terms[recurrent_term]``::

        D_t[(q, j), (q', j')] = d s_t[q, j] / d s_{t-1}[q', j']
                              = delta_{j j'} local[q, q', j] + [q' = 0] sum_g E_rec[q, g, j] W_rec[g*H + j, j']

    local: (B, n, n, H); ``local_reach``: (n, n) bools, its structure. The immediate Jacobian dS_t/dtheta is
    the sum of ``terms`` (:class:`ImmediateTerm`), each parameter kind in exactly one. ``recurrent_term`` is
    None (and ``recurrent_weight`` None) for a cell whose units see only their own past state.
    """

    local: object
    local_reach: tuple
    terms: tuple
    recurrent_term: int | None
    recurrent_weight: object
