"""Hypothesis strategies for recurrent-layer configurations and their inputs (public API).

Use them in your own suites::

    from hypothesis import given
    from rnn_scratch.testing import layer_configs, layer_inputs

    @given(data=st.data())
    def test_mine(data):
        cfg = data.draw(layer_configs(cells=["lstm"], num_layers=2))
        inp = data.draw(layer_inputs(cfg))
        layer = cfg.build(dtype="float64", seed=0)
        out, state = layer(inp.x, inp.state, inp.lengths)

Every argument of :func:`layer_configs` / :func:`layer_inputs` takes either a fixed value or a
strategy, so a test can pin some dimensions and let hypothesis drive the rest. The arrays' values are
drawn through ``hypothesis.extra.numpy`` (:func:`values`), so a failing example shrinks to small sizes
*and* simple values, and edge values (0, the bounds) are reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from hypothesis.strategies import SearchStrategy

from ..functional import cell_names, get_cell


def _strategy(value):
    if isinstance(value, SearchStrategy):
        return value
    if isinstance(value, (list, tuple)):
        return st.sampled_from(list(value))
    return st.just(value)


@dataclass(frozen=True)
class LayerConfig:
    """One recurrent-layer configuration: what the constructor of rs.RNN/LSTM/GRU (and torch's) takes."""

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    dropout: float = 0.0

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def num_states(self):
        """Parts of the state: the cell's (2 for the LSTM's (h, c))."""
        return get_cell(self.cell).num_states

    def kwargs(self):
        """The structure's constructor keyword arguments, shared by every recurrent layer (ours and torch's)."""
        return dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    dropout=self.dropout, bidirectional=self.bidirectional)

    def build(self, dtype="float64", backend=None, seed=None, vary_constants=True, **extra):
        """The rnn_scratch layer for this configuration.

        ``vary_constants``: parameters the cell initialises to a constant (LayerNorm gains of 1, zero biases)
        are drawn instead from U(c - 0.5, c + 0.5) around it, so that a test sees them act (a missing factor of
        a gain of exactly 1 would pass unseen)."""
        from ..backend import default_rng, to_backend
        from ..layers import make_layer  # testing sits above layers

        layer = make_layer(self.cell, self.input_size, self.hidden_size, dtype=dtype, backend=backend, seed=seed,
                           **self.kwargs(), **extra)
        constant = {p.name: p.init for p in layer.cell.params if p.init in ("ones", "zeros")}
        if vary_constants and constant:
            rng = default_rng(seed)
            for name, value in layer.params.items():
                kind = name.rsplit("_l", 1)[0]
                if kind in constant:
                    c = 1.0 if constant[kind] == "ones" else 0.0
                    value[...] = to_backend(rng.uniform(c - 0.5, c + 0.5, value.shape).astype(layer.dtype),
                                            layer.backend)
        return layer

    def state_shape(self, batch):
        return (self.num_layers * self.num_directions, batch, self.hidden_size)


@dataclass
class LayerInputs:
    """Host (NumPy) inputs for one call: x in the layer's layout, the initial state as a tuple
    (None, (h0,) or (h0, c0); :attr:`state` gives torch's form), lengths."""

    x: np.ndarray
    states: tuple | None = None
    lengths: np.ndarray | None = None
    seq_len: int = 0
    batch: int = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def state(self):
        """The initial state as a layer's ``forward`` takes it: None, h0, or (h0, c0)."""
        if self.states is None:
            return None
        return self.states[0] if len(self.states) == 1 else self.states


@st.composite
def layer_configs(draw, cells=None, input_size=st.integers(1, 4), hidden_size=st.integers(1, 5),
                  num_layers=st.integers(1, 3), bidirectional=st.booleans(), batch_first=st.booleans(),
                  bias=st.booleans(), dropout=0.0):
    """Strategy for :class:`LayerConfig`. Each argument: a fixed value, a list to sample from, or a strategy;
    ``cells`` defaults to every registered cell."""
    cell = draw(_strategy(list(cell_names()) if cells is None else cells))
    return LayerConfig(
        cell=cell,
        input_size=draw(_strategy(input_size)),
        hidden_size=max(draw(_strategy(hidden_size)), get_cell(cell).min_hidden_size),  # (min: Cell.min_hidden_size)
        num_layers=draw(_strategy(num_layers)),
        bidirectional=draw(_strategy(bidirectional)),
        batch_first=draw(_strategy(batch_first)),
        bias=draw(_strategy(bias)),
        dropout=draw(_strategy(dropout)),
    )


def values(dtype="float64", scale=1.0, away_from_zero=0.0):
    """Strategy for array elements: finite floats of ``dtype`` in [-scale, scale], and with ``away_from_zero``
    > 0 none inside (-away_from_zero, away_from_zero). Hypothesis favours edge values (0, the bounds, tiny
    numbers) and shrinks towards 0."""
    width = np.dtype(dtype).itemsize * 8
    kw = dict(allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)
    scale = float(np.dtype(dtype).type(scale))
    if away_from_zero <= 0:
        return st.floats(-scale, scale, **kw)
    low = float(np.dtype(dtype).type(away_from_zero))
    return st.one_of(st.floats(low, scale, **kw), st.floats(-scale, -low, **kw))


@st.composite
def layer_inputs(draw, config, seq_len=st.integers(1, 6), batch=st.integers(1, 4), with_state=st.booleans(),
                 with_lengths=st.booleans(), dtype="float64", scale=st.floats(0.1, 2.0), elements=None):
    """Strategy for :class:`LayerInputs` matching ``config``: x, optional initial state(s), optional lengths.

    Every value is drawn through ``hypothesis.extra.numpy.arrays`` (so hypothesis shrinks values, not only
    sizes, and reaches edge values): x's elements from ``elements`` (default :func:`values` in
    [-scale, scale]), the states' from [-1, 1]. Lengths, when drawn, are in 1..seq_len and include
    seq_len itself half of the time. ``seed`` is one more drawn integer, for a test's own auxiliary numbers.
    """
    T = draw(_strategy(seq_len))
    B = draw(_strategy(batch))
    amp = draw(_strategy(scale))
    shape = (B, T, config.input_size) if config.batch_first else (T, B, config.input_size)
    x = draw(arrays(dtype, shape, elements=elements if elements is not None else values(dtype, amp)))
    states = None
    if draw(_strategy(with_state)):
        states = tuple(draw(arrays(dtype, config.state_shape(B), elements=values(dtype, 1.0)))
                       for _ in range(config.num_states))
    lengths = None
    if draw(_strategy(with_lengths)):
        lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)), dtype=np.int64)
        if draw(st.booleans()):
            lengths[draw(st.integers(0, B - 1))] = T
    seed = draw(st.integers(0, 2**32 - 1))
    return LayerInputs(x=x, states=states, lengths=lengths, seq_len=T, batch=B, seed=seed)


CI_MAX_EXAMPLES = 10


def examples(n_ci: int) -> int:
    """An example budget: ``n_ci`` under the ``ci`` profile, scaled with the profile in force (``dev``: ten times).

    For tests whose every example is expensive (finite differences over a grid of configurations). It reads the
    loaded profile's ``max_examples`` (10 under ``ci``), so it follows ``HYPOTHESIS_PROFILE`` and pytest's
    ``--hypothesis-profile`` alike; call it after the profile is loaded (at test-module import, as decorators do).
    """
    return n_ci * max(1, settings.default.max_examples // CI_MAX_EXAMPLES)


def register_profiles():
    """Register the ``ci`` (derandomized, bounded) and ``dev`` (more examples) hypothesis profiles."""
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, max_examples=CI_MAX_EXAMPLES, print_blob=True, **common)
    settings.register_profile("dev", max_examples=100, **common)
