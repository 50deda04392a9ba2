"""Public testing helpers (needs only hypothesis: ``pip install rnn_scratch[testing]``).

- hypothesis strategies for layer configurations and inputs (:func:`layer_configs`, :func:`layer_inputs`),
  their profiles (:func:`register_profiles`) and an example budget that follows them (:func:`examples`);
- the conformance kit: :func:`check_implementation` checks a learner's own RNN/LSTM (CS231n's functions, or a
  torch-shaped layer), shrinks a failing case to the smallest one and says what is wrong; the learner's code runs
  in a child process (:mod:`rnn_scratch.testing.sandbox`), the kit's own numbers here;
- :mod:`rnn_scratch.testing.properties`: relations every correct recurrent layer satisfies (no reference needed),
  checked on torch's layers, ours or any layer through an adapter (:func:`~.properties.check_properties`);
- :mod:`rnn_scratch.testing.cs231n_reference`: CS231n's functions computed by rnn_scratch;
- :mod:`rnn_scratch.testing.torch_reference`: torch on the same weights (needs torch).
"""

from .._optional import require

require("hypothesis", "rnn_scratch.testing")  # one clear error before the imports below need it

from .conformance import ConformanceReport, ImplementationError, check_implementation  # noqa: E402
from .strategies import (  # noqa: E402
    LayerConfig,
    LayerInputs,
    examples,
    layer_configs,
    layer_inputs,
    register_profiles,
    values,
)

__all__ = ["ConformanceReport", "ImplementationError", "LayerConfig", "LayerInputs", "check_implementation",
           "examples", "layer_configs", "layer_inputs", "register_profiles", "values"]
