"""A learner's submission with one planted mistake: no tanh grad c (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="no_tanh_grad_c"))
