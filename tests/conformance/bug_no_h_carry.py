"""A learner's submission with one planted mistake: no h carry (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="no_h_carry"))
