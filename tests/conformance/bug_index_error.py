"""A learner's submission with one planted mistake: index error (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="index_error"))
