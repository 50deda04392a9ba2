"""A learner's submission with one planted mistake: no c carry (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="no_c_carry"))
