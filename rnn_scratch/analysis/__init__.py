"""Gradient flow through time: per-step gradient norms, step Jacobians and their products, BPTT terms."""

from .gradflow import (
    GradientTrace,
    jacobian_products,
    set_spectral_radius,
    spectral_norms,
    step_jacobians,
    trace_gradients,
    vanishing_horizon,
)

__all__ = ["GradientTrace", "jacobian_products", "set_spectral_radius", "spectral_norms", "step_jacobians",
           "trace_gradients", "vanishing_horizon"]
