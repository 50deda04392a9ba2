"""Properties any recurrent layer must satisfy: a reference-free, hypothesis-driven suite.

The conformance kit compares an implementation with rnn_scratch's (and so needs its conventions). These
properties need no reference: they are relations that every correct RNN, LSTM or GRU satisfies whatever its
gate order or weight layout, checked on the layer itself through an adapter
(:mod:`~rnn_scratch.testing.properties.adapters`: torch.nn layers, rnn_scratch layers, or anything following a
small documented protocol)::

    import torch
    from rnn_scratch.testing.properties import check_properties

    report = check_properties(lambda I, H: torch.nn.GRU(I, H, num_layers=2, bidirectional=True),
                              adapter="torch")
    print(report)        # report.ok, report.failures, report.result("padding")

or ``python -m rnn_scratch properties torch.nn:GRU --adapter torch``. Each property (:data:`PROPERTIES`)
draws small cases with hypothesis, runs both sides of its relation in float64 and float32 (judged by the
rules in :mod:`~rnn_scratch.testing.properties.core`), and on a failure shrinks the case to the smallest one
and says which relation broke, on which tensors.
"""

from .adapters import (
    Adapter,
    Call,
    CustomAdapter,
    LayerError,
    RelabelUnavailable,
    Result,
    RnnScratchAdapter,
    TorchAdapter,
    UsageError,
    parameter_role,
    relabel_units,
    swap_directions,
)
from .core import F32_DTYPE_ULPS, F32_FLOOR_ULPS, F32_MULTIPLE, F64_TOL, Case, Outcome
from .relations import PROPERTIES, PROPERTY_NAMES, Property
from .suite import (
    ADAPTERS,
    DEFAULT_MAX_EXAMPLES,
    PropertyReport,
    PropertyResult,
    check_properties,
    load_factory,
    property_cases,
)

__all__ = [
    "ADAPTERS", "Adapter", "Call", "Case", "CustomAdapter", "DEFAULT_MAX_EXAMPLES", "F32_DTYPE_ULPS", "F32_FLOOR_ULPS",
    "F32_MULTIPLE", "F64_TOL", "LayerError", "Outcome", "PROPERTIES", "PROPERTY_NAMES", "Property", "PropertyReport",
    "PropertyResult", "RelabelUnavailable", "Result", "RnnScratchAdapter", "TorchAdapter", "UsageError",
    "check_properties", "load_factory", "parameter_role", "property_cases", "relabel_units", "swap_directions",
]
