"""A learner's submission with no mistake (see learner.py)."""

from tests.conformance.learner import build

globals().update(build())
