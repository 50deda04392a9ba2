"""A learner's submission with one planted mistake: inplace prev c (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="inplace_prev_c"))
