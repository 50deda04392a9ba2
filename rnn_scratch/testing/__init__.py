"""Public testing helpers: hypothesis strategies for layer configurations and inputs, and profiles."""

from .strategies import (
    CELLS,
    LayerConfig,
    LayerInputs,
    examples,
    layer_configs,
    layer_inputs,
    register_profiles,
)

__all__ = ["CELLS", "LayerConfig", "LayerInputs", "layer_configs", "layer_inputs", "examples", "register_profiles"]
