"""A learner's submission with one planted mistake: dprev c drops dh path (see learner.py)."""

from tests.conformance.learner import build

globals().update(build(bug="dprev_c_drops_dh_path"))
