"""A learner's submission with one planted mistake: db mean (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="db_mean"))
