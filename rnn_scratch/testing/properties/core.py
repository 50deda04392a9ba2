"""What every property shares: a drawn case, the tolerance rules, and the judging of one relation.

A relation compares what a *transformed* computation gave (``got``: a permuted batch mapped back, a split
sequence joined, ...) with what the *plain* computation gave (``expected``). Each tensor is judged against its
scale, the size of the terms it is summed from: the same tensor computed in float64 from the absolute value of
every parameter, input, state and incoming gradient (no cancellation there), or the tensor itself if larger;
a gradient's scale is at least the call's largest gradient. With ``scale`` so defined:

- **float64**: ``|got - expected| <= F64_TOL * scale`` (the relations hold exactly in real arithmetic; the
  project's float64 standard, as in the torch parity tests).
- **float32** (judged as the parity tests judge float32): both float32 results are compared with the float64
  ``expected`` of the same float32-representable numbers, and the transformed side's error may be at most
  ``F32_MULTIPLE`` times the plain side's own float32 error plus ``F32_FLOOR_ULPS`` units in the last place
  (2^-23) of the scale: ``|got32 - expected64| <= 4 |expected32 - expected64| + 32 eps32 scale``.
- the **dtype** property has no plain side to lean on: ``|float32 - float64| <= F32_DTYPE_ULPS eps32 scale``
  (``benchmarks/properties_float32.py`` measures what torch's and rnn_scratch's layers need).

Where the numbers are drawn (:class:`Regime`) matters as much as the rules. A derivative computed from a rounded
activation, ``1 - h^2`` from ``h = tanh(a)`` near +-1, keeps an absolute error of about one unit of roundoff, so its
*relative* error grows as ``u / (1 - h^2)`` without bound: a saturated ``torch.nn.RNN`` in float32 misses its own
float64 gradients by far more than any number of ulps of the terms, and nothing outside the layer can tell that
apart from a mistake. So the float32 checks run on **moderate** cases (every pre-activation |a| <= 1/2 by
construction), and the float64 checks, which run on every case, on **wide** ones too (|a| <= 5, where float64's
``u / (1 - h^2)`` stays below 1e-11).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from .adapters import Call, LayerError, LayerTimeout, Result

F64_TOL = 1e-9
F32_MULTIPLE = 4
F32_FLOOR_ULPS = 32
F32_DTYPE_ULPS = 32
EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Regime:
    """How large the drawn numbers are: inputs in [-x, x], initial states in [-state, state], incoming gradients in
    [-1, 1], and every parameter in [-w, w] with w the largest power of 2 (at most 1) for which a pre-activation
    ``W_ih x + W_hh h + b_ih + b_hh`` stays within ``preactivation`` (|h| <= 1, layer inputs above the first <= 1)."""

    name: str
    x: float
    state: float
    preactivation: float
    float32: bool  # whether the float32 checks run on these cases

    def weight(self, input_size, hidden_size, num_directions, num_layers):
        fan = max(input_size * self.x, num_directions * hidden_size if num_layers > 1 else 0) + hidden_size + 2
        w = 1.0
        while w * fan > self.preactivation:
            w /= 2
        return w


WIDE = Regime("wide", x=2.0, state=1.0, preactivation=5.0, float32=False)
MODERATE = Regime("moderate", x=1.0, state=0.25, preactivation=0.5, float32=True)


LEVELS = 128  # values are multiples of bound / LEVELS


def draw_arrays(draw, specs, label="values"):
    """Dense arrays for ``specs`` [(shape, bound), ...], all from one draw of bytes: byte b gives the value
    ``k / 128 * bound`` with k = 0, -1, 1, -2, 2, ... for b = 0, 1, 2, 3, 4, ...

    One draw, not one per array or per element: hypothesis's per-array overhead is milliseconds, and its sparse
    arrays are mostly one repeated value, which hides exactly what the relations look for (rows or units mixed up).
    Hypothesis shrinks bytes towards 0, so values shrink towards 0; with ``bound`` a power of 2 every value is exact
    in float32, so a float32 run sees the very numbers of the float64 run."""
    sizes = [int(np.prod(shape)) for shape, _ in specs]
    total = sum(sizes)
    raw = np.frombuffer(draw(st.binary(min_size=total, max_size=total), label=label), np.uint8).astype(np.int64)
    k = np.where(raw % 2 == 0, raw // 2, -(raw + 1) // 2)
    out, start = [], 0
    for (shape, bound), n in zip(specs, sizes):
        out.append((k[start:start + n] * (bound / LEVELS)).reshape(shape).astype(np.float64))
        start += n
    return out


def draw_array(draw, shape, bound=1.0, label="values"):
    return draw_arrays(draw, [(tuple(shape), bound)], label)[0]


@dataclass
class Case:
    """One drawn example: sizes, the plain :class:`Call` (float64 arrays of float32-representable values) and the
    property's own draws (``extra``: a permutation, a split point, a direction...)."""

    sizes: dict
    call: Call
    extra: dict = field(default_factory=dict)
    regime: Regime = WIDE
    state_names: tuple = ("h", "c")

    def describe(self, width=70):
        """One line for a report: sizes, then the arrays (cut to ``width`` characters each)."""
        parts = [" ".join(f"{k}={v}" for k, v in self.sizes.items()) + f" ({self.regime.name} values)"]
        c = self.call
        items = [("x", c.x), *[(f"{n}0", s) for n, s in zip(self.state_names, c.states or ())],
                 ("lengths", c.lengths), ("dout", c.dout),
                 *[(f"d{n}_n", s) for n, s in zip(self.state_names, c.dstates or ())]]
        items += [(k, v) for k, v in self.extra.items() if not isinstance(v, (dict, tuple))]
        items += sorted(c.params.items())
        for name, value in items:
            if value is None:
                continue
            text = " ".join(np.array2string(np.asarray(value), precision=4, separator=",", suppress_small=True,
                                            max_line_width=10_000).split())
            parts.append(f"{name}={text if len(text) <= width else text[:width - 3] + '...'}")
        return "; ".join(parts)


@dataclass
class Comparison:
    """One tensor of one relation in one dtype: its worst error, what is allowed, and its scale."""

    variant: str
    tensor: str
    dtype: str
    error: float
    allowed: float
    scale: float

    @property
    def ok(self):
        return self.error <= self.allowed  # NaN is never ok

    def text(self):
        if not np.isfinite(self.error):
            return f"{self.tensor} (NaN or infinity)"
        if self.scale == 0:
            return f"{self.tensor} (off by {self.error:.2g} where it must be exactly 0)"
        off, allowed = self.error / self.scale, self.allowed / self.scale
        return f"{self.tensor} (off by {off:.2g} of its scale, allowed {allowed:.2g})"


@dataclass
class Outcome:
    """The verdict of one property on one case."""

    comparisons: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # sentences: a call raised, changed its input, ...
    undecided: str | None = None  # why this case cannot decide (e.g. a kink of relu within the step)
    details: list = field(default_factory=list)  # extra sentences for the report
    timed_out: bool = False  # a call did not return: shrinking would cost the time limit per try

    def failed_call(self, exc: LayerError):
        """Record a call that raised, returned the wrong thing or never returned."""
        self.problems.append(str(exc))
        self.timed_out = self.timed_out or isinstance(exc, LayerTimeout)

    @property
    def ok(self):
        return not self.problems and all(c.ok for c in self.comparisons)

    def broken(self):
        return [c for c in self.comparisons if not c.ok]


def is_gradient(name):
    return name == "dx" or name.startswith("d ") or (name.startswith("d") and name.endswith("0"))


def abs_call(call: Call) -> Call:
    """The call on the absolute value of every array: each output becomes the size of the terms it sums."""
    ab = lambda t: None if t is None else tuple(np.abs(a) for a in t)  # noqa: E731
    return Call({k: np.abs(v) for k, v in call.params.items()}, np.abs(call.x), ab(call.states), call.lengths,
                None if call.dout is None else np.abs(call.dout), ab(call.dstates))


class Context:
    """Runs calls for one case in float64 and float32 (memoised per call object) and judges relations."""

    def __init__(self, adapters, dtypes, state_names):
        self.adapters = adapters  # {"float64": Adapter, "float32": Adapter}
        self.dtypes = dtypes
        self.state_names = state_names
        self._memo = {}

    @property
    def adapter(self):
        return self.adapters["float64"]

    def run(self, dtype, call, backward=True) -> Result:
        key = (dtype, id(call), backward and call.dout is not None)
        if key not in self._memo:
            self._memo[key] = (call, self.adapters[dtype].run(call, backward=backward))
        return self._memo[key][1]

    def runner(self, dtype):
        return lambda call, backward=True: self.run(dtype, call, backward)

    def named(self, result):
        return result.named(self.state_names)

    def scales(self, call: Call) -> dict:
        """{tensor: scale} for the tensors of ``call`` (see the module docstring)."""
        plain = self.named(self.run("float64", call))
        absolute = self.named(self.adapters["float64"].run(abs_call(call)))
        grads = [float(np.abs(v).max(initial=0.0)) for k, v in plain.items() if is_gradient(k)]
        largest = max(grads, default=0.0)
        scales = {}
        for k, v in plain.items():
            s = max(float(np.abs(v).max(initial=0.0)), float(np.abs(absolute[k]).max(initial=0.0)))
            scales[k] = max(s, largest) if is_gradient(k) else s
        return scales

    def relation(self, sides, base: Call) -> Outcome:
        """Judge a relation: ``sides(run)`` gives {(variant, tensor): (got, expected)} computed with ``run``
        (one dtype); float64 always, float32 when asked, by the rules of the module docstring."""
        outcome = Outcome()
        try:
            scale = self.scales(base)
            pairs64 = sides(self.runner("float64"))
            for (variant, tensor), (got, expected) in pairs64.items():
                s = scale[tensor]
                outcome.comparisons.append(Comparison(variant, tensor, "float64", _max_error(got, expected),
                                                      F64_TOL * s, s))
            if "float32" in self.dtypes:
                pairs32 = sides(self.runner("float32"))
                for key, (got, expected) in pairs32.items():
                    truth = pairs64[key][1]
                    s = scale[key[1]]
                    allowed = F32_MULTIPLE * _max_error(expected, truth) + F32_FLOOR_ULPS * EPS32 * s
                    outcome.comparisons.append(Comparison(*key, "float32", _max_error(got, truth), allowed, s))
        except LayerError as exc:
            outcome.failed_call(exc)
        return outcome


def _max_error(got, expected):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return float("inf")
    if not (np.isfinite(got).all() and np.isfinite(expected).all()):
        return float("nan")
    return float(np.abs(got - expected).max(initial=0.0))
