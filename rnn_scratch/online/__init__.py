r"""Gradient algorithms side by side: BPTT, truncated BPTT, RTRL, UORO, KF-RTRL, SnAp-1/2 and RFLO.

All of them compute or approximate the same gradient, of L = sum_t <dout_t, h_t> (any loss on the outputs
reduces to this with dout_t = dL/dh_t), on the same cells, from the same per-step Jacobians. Per batch
row, with s_t the state (h, or (h, c)), D_t = ds_t/ds_{t-1} and I_t = ds_t/dtheta the step's Jacobians::

    BPTT   backwards:  dL/ds_t = [dout_t, 0] + D_{t+1}^T dL/ds_{t+1},     dL/dtheta = sum_t I_t^T dL/ds_t
    RTRL   forwards:   M_t = D_t M_{t-1} + I_t,                            dL/dtheta = sum_t [dout_t, 0]^T M_t

and the approximations keep a cheaper M_t (:mod:`.uoro`, :mod:`.kf_rtrl`, :mod:`.snap`, :mod:`.rflo`).

==========  ======================  ===============  ============  ==================================
method      time per step (row)     memory            bias          module
==========  ======================  ===============  ============  ==================================
bptt        O(G H^2) (+ T storage)  O(T G H)          exact         :mod:`.bptt` (offline: whole T)
tbptt(k)    O(k G H^2)              O(k G H)          biased        :mod:`.bptt`
rtrl        O(G H^2 P) = O(H^4)     O(n H P) = O(H^3) exact         :mod:`.rtrl`
uoro        O(G H^2 + P)            O(n H + P)        unbiased      :mod:`.uoro`
kf-rtrl     O(G^2 H^3)              O(n G H^2)        unbiased      :mod:`.kf_rtrl`
snap-1      O(n^2 P)                O(n P)            biased        :mod:`.snap`
snap-2      as rtrl (dense W_hh)    as rtrl           = rtrl here   :mod:`.snap`
rflo        O(n^2 P)                O(n P)            biased        :mod:`.rflo`
==========  ======================  ===============  ============  ==================================

P = G H (I + H + 2) parameters, n state parts, G gates. The derivation of each update beside its code:
``docs/online.md``.

- :func:`gradients` -- one loss, one method, the layer's parameter names;
- :func:`estimator_statistics` -- the mean and variance of UORO's or KF-RTRL's estimates over many draws;
- :class:`OnlineLearner` / :func:`train_online` -- update the weights at every step with a method, on the
  tasks of :mod:`.tasks` (copy, add, sine); :mod:`.study` runs the comparison behind
  ``python -m rnn_scratch online``.
"""

from .api import EXACT, METHODS, UNBIASED, estimator_statistics, gradients
from .learner import OnlineLearner, train_online
from .tasks import TASKS, make_task

__all__ = ["EXACT", "METHODS", "TASKS", "UNBIASED", "OnlineLearner", "estimator_statistics", "gradients",
           "make_task", "train_online"]
