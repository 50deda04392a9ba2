"""A learner's submission with one planted mistake: no sigmoid grad f (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="no_sigmoid_grad_f"))
