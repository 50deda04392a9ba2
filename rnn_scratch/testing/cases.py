"""Random inputs for the functional core (NumPy's generator, float64): what the fast-path tests and studies draw."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..functional import get_cell


class SequenceCase(NamedTuple):
    """One call of a cell's sequence functions: params, x (T, B, I), the state tuple, the mask (None or bool
    (T, B, 1)), and the gradients dout (T, B, H) and dstate (a tuple) for the backward."""

    params: dict
    x: np.ndarray
    state: tuple
    mask: np.ndarray | None
    dout: np.ndarray
    dstate: tuple


def random_sequence_case(seed, cell, T, B, I, H, *, bias=True, padded=False, scale=1.0):
    """Weights of standard deviation ``scale`` (biases 1; parameters the cell initialises to a constant c, such as
    LayerNorm gains, c plus that), standard-normal x, states and gradients; lengths drawn in 1..T when
    ``padded``. A bias left out (``bias=False``) is None."""
    rng = np.random.default_rng(seed)
    c = get_cell(cell)
    params = {}
    for p, shape in zip(c.params, c.param_shapes(I, H).values()):
        if p.bias and not bias:
            params[p.name] = None
        elif p.bias:
            params[p.name] = rng.standard_normal(shape)
        else:
            params[p.name] = (p.init == "ones") + scale * rng.standard_normal(shape)
    x = rng.standard_normal((T, B, I))
    state = tuple(rng.standard_normal((B, H)) for _ in range(c.num_states))
    mask = None
    if padded:
        mask = (np.arange(T)[:, None] < rng.integers(1, T + 1, size=B)[None, :])[:, :, None]
    dout = rng.standard_normal((T, B, H))
    dstate = tuple(rng.standard_normal((B, H)) for _ in state)
    return SequenceCase(params, x, state, mask, dout, dstate)


def float32_numbers(case: SequenceCase) -> SequenceCase:
    """The case with every float array rounded to float32 and kept in float64: run in float32 (``astype``), it is
    exactly the float64 truth's input, so the difference is the float32 run's own rounding."""
    def rounded(a):
        return a if a is None or a.dtype == bool else a.astype(np.float32).astype(np.float64)

    params, x, state, mask, dout, dstate = case
    return SequenceCase({k: rounded(v) for k, v in params.items()}, rounded(x), tuple(map(rounded, state)), mask,
                        rounded(dout), tuple(map(rounded, dstate)))
