"""What every forward-mode algorithm shares: the interface the gradient driver and the online learner call."""

from __future__ import annotations


class Tracker:
    """A forward-mode gradient algorithm: it carries (an estimate of) the influence matrix M_t = ds_t/dtheta
    forward, one step at a time, and turns a gradient on h_t into a gradient on the parameters.

    ``step(d)`` advances M_{t-1} -> M_t with the step's :class:`~rnn_scratch.functional.StepDerivatives`;
    ``gradient(dh, per_row=False)`` returns {parameter kind: dh^T M_t[h]} for dh = dL/dh_t (B, H), summed
    over the batch rows (each row carries its own M) or, with ``per_row``, one per row (leading axis B);
    ``nbytes()`` is the memory the algorithm carries from step to step.
    """

    name = ""
    needs_rng = False
    carried = ()  # the names of the arrays carried from step to step, None before the first step

    def __init__(self, cell, rng=None):
        self.cell = cell
        self.rng = rng
        for attr in self.carried:
            setattr(self, attr, None)

    def check(self, d):
        """None when the algorithm is defined for a step with derivatives ``d``, else the reason it is not."""
        return None

    def step(self, d):
        raise NotImplementedError

    def gradient(self, dh, per_row=False):
        raise NotImplementedError

    def state_arrays(self):
        """The arrays carried from step to step."""
        raise NotImplementedError

    def nbytes(self):
        return int(sum(a.nbytes for a in self.state_arrays()))

    def carried_elements(self, d):
        """How many numbers the algorithm carries for a step with derivatives ``d`` (all batch rows), before
        allocating them."""
        raise NotImplementedError
