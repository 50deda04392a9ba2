"""A learner's submission with one planted mistake: nan log (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="nan_log"))
