"""A learner's submission with one planted mistake: endless loop (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="endless_loop"))
