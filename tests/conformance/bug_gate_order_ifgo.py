"""A learner's submission with one planted mistake: gate order ifgo (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="gate_order_ifgo"))
