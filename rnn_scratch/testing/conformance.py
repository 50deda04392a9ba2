"""Check your own RNN or LSTM: a conformance kit that searches for a case that breaks it, shrinks it, and says why.

:func:`check_implementation` takes a learner's functions (CS231n's names and signatures) or a torch-shaped
layer, draws configurations and values with hypothesis (so a failing case shrinks to the smallest one), and
compares everything returned with rnn_scratch's reference in float64: values, every gradient (against
ours and against central finite differences of the learner's own forward), shapes and dtypes, inputs left
unmodified, finiteness. On a failure it names the first wrong quantity, for sequence functions the steps
where the error appears, and the usual cause when it recognises one (a gate order other than the
convention's, a missing tanh' or sigmoid' factor, the cell-state path dropped from dprev_c, a mean where
a sum belongs, the gradient not carried between steps, an input changed in place).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import signal
import sys
import textwrap
import threading
import types
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from hypothesis.extra.numpy import arrays

from . import cs231n_reference as REF

CONVENTIONS = ("cs231n", "layer")
TOL = 1e-6  # relative error against ours (scale floored at 1e-3): float64 rounding is ~1e-15 of that
FD_TOL = 1e-5
DEFAULT_MAX_EXAMPLES = 60
TIME_LIMIT_S = 10.0


class ImplementationError(Exception):
    """A usage problem: the target cannot be loaded or does not fit the convention (exit status 2)."""


# -- the CS231n functions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """One CS231n function: its inputs (names in call order), what it returns, and for a backward the forward
    whose cache it takes and the upstream gradients it receives."""

    name: str
    inputs: tuple
    outputs: tuple
    forward: str | None = None  # for a backward: the forward function that makes its cache
    upstream: tuple = ()

    @property
    def is_backward(self):
        return self.forward is not None

    @property
    def sequence(self):
        return "step" not in self.name


SPECS = {
    "rnn": (
        Spec("rnn_step_forward", ("x", "prev_h", "Wx", "Wh", "b"), ("next_h",)),
        Spec("rnn_step_backward", ("x", "prev_h", "Wx", "Wh", "b"), ("dx", "dprev_h", "dWx", "dWh", "db"),
             "rnn_step_forward", ("dnext_h",)),
        Spec("rnn_forward", ("x", "h0", "Wx", "Wh", "b"), ("h",)),
        Spec("rnn_backward", ("x", "h0", "Wx", "Wh", "b"), ("dx", "dh0", "dWx", "dWh", "db"), "rnn_forward", ("dh",)),
    ),
    "lstm": (
        Spec("lstm_step_forward", ("x", "prev_h", "prev_c", "Wx", "Wh", "b"), ("next_h", "next_c")),
        Spec("lstm_step_backward", ("x", "prev_h", "prev_c", "Wx", "Wh", "b"),
             ("dx", "dprev_h", "dprev_c", "dWx", "dWh", "db"), "lstm_step_forward", ("dnext_h", "dnext_c")),
        Spec("lstm_forward", ("x", "h0", "Wx", "Wh", "b"), ("h",)),
        Spec("lstm_backward", ("x", "h0", "Wx", "Wh", "b"), ("dx", "dh0", "dWx", "dWh", "db"), "lstm_forward",
             ("dh",)),
    ),
}
# which input each gradient belongs to
GRAD_OF = {"dx": "x", "dprev_h": "prev_h", "dprev_c": "prev_c", "dh0": "h0", "dWx": "Wx", "dWh": "Wh", "db": "b"}


def _shapes(spec, cell, N, T, D, H):
    G = 4 if cell == "lstm" else 1
    x = (N, T, D) if spec.sequence else (N, D)
    shapes = {"x": x, "prev_h": (N, H), "prev_c": (N, H), "h0": (N, H), "Wx": (D, G * H), "Wh": (H, G * H),
              "b": (G * H,), "dnext_h": (N, H), "dnext_c": (N, H), "dh": (N, T, H)}
    return {k: shapes[k] for k in (*spec.inputs, *spec.upstream)}


VALUES = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


@st.composite
def cases(draw, spec, cell, max_T=4):
    """A case for one function: sizes (N, T, D, H) and every array, drawn through hypothesis.extra.numpy so
    that hypothesis can shrink values (towards 0) as well as sizes."""
    N, D, H = (draw(st.integers(1, 3), label=k) for k in "NDH")
    T = draw(st.integers(1, max_T), label="T") if spec.sequence else 1
    arrays_ = {name: draw(arrays(np.float64, shape, elements=VALUES), label=name)
               for name, shape in _shapes(spec, cell, N, T, D, H).items()}
    return {"sizes": {"N": N, "T": T, "D": D, "H": H} if spec.sequence else {"N": N, "D": D, "H": H},
            **arrays_}


# -- running a learner's function safely ------------------------------------------------------------
class _Timeout(Exception):
    pass


def _call(fn, args, limit=None):
    """fn(*args) with a time limit (on the main thread, through SIGALRM). Returns (result, error text)."""
    limit = TIME_LIMIT_S if limit is None else limit
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")

    def stop(signum, frame):
        raise _Timeout

    if use_alarm:
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        with np.errstate(all="ignore"):
            return fn(*args), None
    except _Timeout:
        return None, f"took longer than {limit:g} s"
    except Exception as exc:  # the learner's code may raise anything: that is a finding, not a crash
        return None, f"raised {type(exc).__name__}: {exc}"
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _relative(a, b):
    """max |a - b| / max(|b|, 1e-3): the error of a against the reference b."""
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-3)
    return float(np.abs(np.asarray(a, dtype=np.float64) - b).max(initial=0.0)) / scale


# -- one function on one case ---------------------------------------------------------------------
@dataclass
class Finding:
    """What is wrong with one function on one case."""

    function: str
    problems: list = field(default_factory=list)  # sentences
    wrong: dict = field(default_factory=dict)  # quantity -> relative error against ours
    right: list = field(default_factory=list)
    fd_wrong: list = field(default_factory=list)  # gradients that disagree with FD of the learner's forward
    fd_checked: bool = False
    case: dict | None = None
    cause: str | None = None
    steps: str | None = None

    @property
    def ok(self):
        return not self.problems and not self.wrong


def _run_forward(module, spec, case):
    return _call(getattr(module, spec.name), [case[k].copy() for k in spec.inputs])


def _split_forward(spec, result):
    """(outputs dict, cache) from what a forward returned; ValueError text when the arity is wrong."""
    n = len(spec.outputs)
    if not isinstance(result, tuple) or len(result) != n + 1:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise ValueError(f"returned {got}, expected ({', '.join(spec.outputs)}, cache)")
    return dict(zip(spec.outputs, result[:n])), result[n]


def evaluate(module, spec, cell, case):
    """Check ``module``'s function ``spec`` on one case against the reference. Returns a :class:`Finding`."""
    finding = Finding(spec.name, case=case)
    inputs = {k: case[k] for k in spec.inputs}
    snapshot = {k: v.copy() for k, v in case.items() if isinstance(v, np.ndarray)}
    fwd_spec = _spec(cell, spec.forward) if spec.is_backward else spec
    ref_fwd = getattr(REF, fwd_spec.name)(*inputs.values())
    if spec.is_backward:
        user_fwd, err = _call(getattr(module, spec.forward), list(inputs.values()))
        if err:
            finding.problems.append(f"its forward {spec.forward} {err}")
            return finding
        try:
            _, cache = _split_forward(fwd_spec, user_fwd)
        except ValueError as exc:
            finding.problems.append(f"its forward {spec.forward} {exc}")
            return finding
        upstream = [case[k] for k in spec.upstream]
        result, err = _call(getattr(module, spec.name), [*upstream, cache])
        expected = getattr(REF, spec.name)(*upstream, ref_fwd[-1])
        expected = dict(zip(spec.outputs, expected))
    else:
        result, err = _call(getattr(module, spec.name), list(inputs.values()))
        expected = dict(zip(spec.outputs, ref_fwd[:-1]))
    if err:
        finding.problems.append(err)
        return finding
    if spec.is_backward:
        if not isinstance(result, tuple) or len(result) != len(spec.outputs):
            got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
            finding.problems.append(f"returned {got}, expected ({', '.join(spec.outputs)})")
            return finding
        got = dict(zip(spec.outputs, result))
    else:
        try:
            got, _ = _split_forward(spec, result)
        except ValueError as exc:
            finding.problems.append(str(exc))
            return finding
    for name, value in case.items():  # inputs left as they were
        if isinstance(value, np.ndarray) and not np.array_equal(value, snapshot[name], equal_nan=True):
            finding.problems.append(f"changed its input {name} in place")
    judge(finding, got, expected)
    return finding


def judge(finding, got, expected):
    """Compare every expected quantity with what the learner's code returned; note the problems (missing,
    not an array, wrong shape or dtype, NaN where ours is finite) and the wrong and right quantities."""
    nonfinite = []
    for name, ref in expected.items():
        value = got.get(name)
        if value is None:
            finding.problems.append(f"returned no {name}")
        elif not isinstance(value, np.ndarray):
            finding.problems.append(f"{name} is a {type(value).__name__}, expected a NumPy array of shape {ref.shape}")
        elif value.shape != ref.shape:
            finding.problems.append(f"{name} has shape {value.shape}, expected {ref.shape}")
        elif value.dtype != np.float64:
            finding.problems.append(f"{name} has dtype {value.dtype}, expected float64 like its inputs")
        elif not np.isfinite(value).all() and np.isfinite(ref).all():
            nonfinite.append(name)
        else:
            err = _relative(value, ref)
            if err > TOL:
                finding.wrong[name] = err
            else:
                finding.right.append(name)
    if nonfinite:
        finding.problems.append(f"{', '.join(nonfinite)}: NaN or infinity where ours is finite")


def _spec(cell, name):
    return next(s for s in SPECS[cell] if s.name == name)


# -- finite differences of the learner's own forward --------------------------------------------------
def fd_disagreements(module, spec, cell, case, got, eps=1e-6):
    """The gradients (of ``got``) that disagree with central differences of the learner's own forward."""
    fwd = _spec(cell, spec.forward)
    inputs = {k: case[k].copy() for k in spec.inputs}
    upstream = [case[k] for k in spec.upstream]

    def loss():
        result, err = _call(getattr(module, fwd.name), list(inputs.values()))
        if err:
            raise RuntimeError(err)
        outs, _ = _split_forward(fwd, result)
        return sum(float((u * o).sum()) for u, o in zip(upstream, outs.values()))

    bad = []
    for grad_name, input_name in GRAD_OF.items():
        if grad_name not in got or input_name not in inputs:
            continue
        arr = inputs[input_name]
        flat = arr.reshape(-1)
        numeric = np.zeros(arr.size)
        try:
            for k in range(arr.size):
                orig = flat[k]
                flat[k] = orig + eps
                plus = loss()
                flat[k] = orig - eps
                minus = loss()
                flat[k] = orig
                numeric[k] = (plus - minus) / (2 * eps)
        except RuntimeError:
            return []
        if _relative(np.asarray(got[grad_name]).reshape(-1), numeric) > FD_TOL:
            bad.append(grad_name)
    return bad


# -- diagnosis: the usual mistakes, as reference implementations that make them ----------------------------
def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _rnn_step(x, h, Wx, Wh, b):
    return np.tanh(x @ Wx + h @ Wh + b)


def _rnn_step_bwd(dnext, x, h, Wx, Wh, b, nh, bug):
    dt = {"no_tanh_grad": 1.0, "tanh_grad_1_minus_h": 1 - nh}.get(bug, 1 - nh**2)
    da = dnext * dt
    dprev = da @ (Wh if bug == "Wh_not_transposed" else Wh.T)
    dWh = (nh if bug == "dWh_uses_next_h" else h).T @ da
    db = da.mean(0) if bug == "db_mean" else da.sum(0)
    return {"dx": da @ Wx.T, "dprev_h": dprev, "dWx": x.T @ da, "dWh": dWh, "db": db}


def _lstm_gates(x, h, Wx, Wh, b, H):
    a = x @ Wx + h @ Wh + b
    return _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), _sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])


def _lstm_step_bwd(dnh, dnc, x, h, c, Wx, Wh, b, bug):
    H = h.shape[1]
    i, f, o, g = _lstm_gates(x, h, Wx, Wh, b, H)
    nc = f * c + i * g
    tc = np.tanh(nc)
    dc = dnc + dnh * o * (1.0 if bug == "no_tanh_grad_c" else 1 - tc**2)
    do = dnh * tc
    di, df, dg = dc * g, dc * c, dc * i
    da = np.concatenate([di * (1.0 if bug == "no_sigmoid_grad_i" else i * (1 - i)),
                         df * (1.0 if bug == "no_sigmoid_grad_f" else f * (1 - f)),
                         do * (1.0 if bug == "no_sigmoid_grad_o" else o * (1 - o)),
                         dg * (1.0 if bug == "no_tanh_grad_g" else 1 - g**2)], axis=1)
    dprev_c = {"dprev_c_drops_dh_path": f * dnc, "dprev_c_missing_f": dc}.get(bug, f * dc)
    db = da.mean(0) if bug == "db_mean" else da.sum(0)
    dWh = (o * tc if bug == "dWh_uses_next_h" else h).T @ da
    return {"dx": da @ Wx.T, "dprev_h": da @ Wh.T, "dprev_c": dprev_c, "dWx": x.T @ da, "dWh": dWh, "db": db}


def _sequence_bwd(cell, case, bug):
    """rnn_backward / lstm_backward with one deliberate mistake (or None): the diagnosis' candidates."""
    x, h0, Wx, Wh, b, dh = (case[k] for k in ("x", "h0", "Wx", "Wh", "b", "dh"))
    N, T, _ = x.shape
    H = h0.shape[1]
    hs, cs = [h0], [np.zeros_like(h0)]
    for t in range(T):
        if cell == "rnn":
            hs.append(_rnn_step(x[:, t], hs[-1], Wx, Wh, b))
        else:
            i, f, o, g = _lstm_gates(x[:, t], hs[-1], Wx, Wh, b, H)
            cs.append(f * cs[-1] + i * g)
            hs.append(o * np.tanh(cs[-1]))
    step_bug = None if bug in ("no_h_carry", "no_c_carry") else bug
    grads = {k: 0.0 for k in ("dWx", "dWh", "db")}
    dx = np.zeros_like(x)
    carry_h, carry_c = np.zeros_like(h0), np.zeros_like(h0)
    for t in reversed(range(T)):
        dnext = dh[:, t] + (0 if bug == "no_h_carry" else carry_h)
        if cell == "rnn":
            g_ = _rnn_step_bwd(dnext, x[:, t], hs[t], Wx, Wh, b, hs[t + 1], step_bug)
        else:
            g_ = _lstm_step_bwd(dnext, 0 if bug == "no_c_carry" else carry_c, x[:, t], hs[t], cs[t], Wx, Wh, b,
                                step_bug)
            carry_c = g_["dprev_c"]
        dx[:, t], carry_h = g_["dx"], g_["dprev_h"]
        for k in grads:
            grads[k] = grads[k] + g_[k]
    return {"dx": dx, "dh0": carry_h, **grads}


CAUSES = {
    "no_tanh_grad": "the tanh' factor (1 - h^2) is missing from da",
    "tanh_grad_1_minus_h": "tanh' is written 1 - h; it is 1 - h^2",
    "Wh_not_transposed": "dprev_h uses Wh where Wh^T belongs (dprev_h = da Wh^T)",
    "dWh_uses_next_h": "dWh is built from next_h; it takes the state the step read, prev_h",
    "db_mean": "db is a mean over the batch where a sum belongs (each example adds its gradient)",
    "no_sigmoid_grad_i": "the sigmoid' factor i (1 - i) is missing from the input gate's gradient",
    "no_sigmoid_grad_f": "the sigmoid' factor f (1 - f) is missing from the forget gate's gradient",
    "no_sigmoid_grad_o": "the sigmoid' factor o (1 - o) is missing from the output gate's gradient",
    "no_tanh_grad_g": "the tanh' factor (1 - g^2) is missing from g's gradient",
    "no_tanh_grad_c": "the tanh' factor (1 - tanh(next_c)^2) is missing where dnext_h reaches the cell state",
    "dprev_c_drops_dh_path": "the cell-state path is dropped from dprev_c: it must be f * (dnext_c + dnext_h * o * "
                             "(1 - tanh(next_c)^2)), not f * dnext_c",
    "dprev_c_missing_f": "dprev_c misses the forget gate: dprev_c = f * dc (the constant error carousel)",
    "no_h_carry": "the gradient carried from step t+1 into step t is missing: at each step the upstream dh[:, t] "
                  "must be added to the dprev_h that step t+1 returned",
    "no_c_carry": "the cell-state gradient is not carried between steps: step t must receive step t+1's dprev_c",
}
STEP_BUGS = {"rnn": ("no_tanh_grad", "tanh_grad_1_minus_h", "Wh_not_transposed", "dWh_uses_next_h", "db_mean"),
             "lstm": ("no_sigmoid_grad_i", "no_sigmoid_grad_f", "no_sigmoid_grad_o", "no_tanh_grad_g",
                      "no_tanh_grad_c", "dprev_c_drops_dh_path", "dprev_c_missing_f", "db_mean",
                      "dWh_uses_next_h")}
SEQUENCE_BUGS = {"rnn": ("no_h_carry", *STEP_BUGS["rnn"]),
                 "lstm": ("no_h_carry", "no_c_carry", *(b for b in STEP_BUGS["lstm"] if b != "dprev_c_missing_f"))}


def _matches(got, expected):
    return all(k in got and np.shape(got[k]) == np.shape(v) and _relative(got[k], v) <= TOL
               for k, v in expected.items())


def _blocks(a, order):
    """The four gate blocks of the last axis of ``a``, block j of the result being block order[j] of ``a``."""
    H = a.shape[-1] // 4
    return np.concatenate([a[..., j * H:(j + 1) * H] for j in order], axis=-1)


def _permuted(case, order):
    """The case with the LSTM gate blocks of Wx, Wh and b taken in ``order``."""
    return {k: _blocks(v, order) if k in ("Wx", "Wh", "b") else v for k, v in case.items()}


def diagnose(module, spec, cell, finding):
    """Fill in ``finding.cause`` (a recognised mistake) and, for sequences, ``finding.steps``."""
    case = finding.case
    if any("in place" in p for p in finding.problems):
        finding.cause = "an input array is modified in place; work on copies (the caller still needs its arrays)"
        return
    if finding.problems:
        return
    got = _user_outputs(module, spec, case)
    if got is None:
        return
    if cell == "lstm":  # a gate order other than (i, f, o, g): the learner's result is ours under a permutation
        for order in itertools.permutations(range(4)):
            if order == (0, 1, 2, 3):
                continue
            ref = _reference_outputs(spec, cell, _permuted(case, order))  # CS231n's block j is the learner's order[j]
            inverse = [order.index(k) for k in range(4)]
            if spec.is_backward:  # the weight gradients come back in the learner's column order
                ref = {k: _blocks(v, inverse) if k in ("dWx", "dWh", "db") else v for k, v in ref.items()}
            if _matches(got, ref):
                names = ", ".join(REF.LSTM_GATES[j] for j in inverse)
                finding.cause = (f"the gate columns are in the order ({names}); the CS231n convention is (i, f, o, g): "
                                 f"a = x Wx + prev_h Wh + b, then i, f, o, g = a[:, :H], a[:, H:2H], a[:, 2H:3H], "
                                 f"a[:, 3H:]")
                return
    if spec.is_backward:
        bugs = SEQUENCE_BUGS[cell] if spec.sequence else STEP_BUGS[cell]
        causes = [CAUSES[bug] for bug in bugs if _matches(got, _mutant(spec, cell, case, bug))]
        if causes:  # several mistakes can give the same numbers on a small case: name each
            finding.cause = "; or, giving the same numbers here: ".join(causes)


def where_in_time(module, spec, cell, finding, max_examples, seed):
    """For a failing sequence function: is it right for T = 1 (the error enters between steps)? And at which
    steps is dx wrong in the smallest case?"""
    notes = []
    if _search(lambda case: not evaluate(module, spec, cell, case).ok, cases(spec, cell, max_T=1),
               max(10, max_examples // 2), seed) is None:
        notes.append("right for every T = 1 case tried, wrong only for T >= 2: the error enters where a step "
                     "receives the gradient of the steps after it")
    got = _user_outputs(module, spec, finding.case) if spec.is_backward else None
    if got is not None and "dx" in finding.wrong:
        T = finding.case["x"].shape[1]
        ref = _reference_outputs(spec, cell, finding.case)
        wrong_steps = [t for t in range(T) if _relative(got["dx"][:, t], ref["dx"][:, t]) > TOL]
        notes.append(f"in the smallest case dx is wrong at t = {wrong_steps} of 0..{T - 1}")
    finding.steps = "; ".join(notes) or None


def _mutant(spec, cell, case, bug):
    """The outputs of ``spec`` on ``case`` with the mistake ``bug`` made on purpose."""
    if spec.sequence:
        return _sequence_bwd(cell, case, bug)
    if cell == "rnn":
        nh = _rnn_step(case["x"], case["prev_h"], case["Wx"], case["Wh"], case["b"])
        return _rnn_step_bwd(case["dnext_h"], case["x"], case["prev_h"], case["Wx"], case["Wh"], case["b"], nh, bug)
    return _lstm_step_bwd(case["dnext_h"], case["dnext_c"], case["x"], case["prev_h"], case["prev_c"], case["Wx"],
                          case["Wh"], case["b"], bug)


def _reference_outputs(spec, cell, case):
    inputs = [case[k] for k in spec.inputs]
    if spec.is_backward:
        fwd = getattr(REF, spec.forward)(*inputs)
        return dict(zip(spec.outputs, getattr(REF, spec.name)(*[case[k] for k in spec.upstream], fwd[-1])))
    return dict(zip(spec.outputs, getattr(REF, spec.name)(*inputs)[:-1]))


def _user_outputs(module, spec, case):
    inputs = [case[k].copy() for k in spec.inputs]
    if spec.is_backward:
        fwd, err = _call(getattr(module, spec.forward), inputs)
        if err:
            return None
        try:
            _, cache = _split_forward(_spec(cell_of(spec), spec.forward), fwd)
        except ValueError:
            return None
        result, err = _call(getattr(module, spec.name), [*[case[k].copy() for k in spec.upstream], cache])
        if err or not isinstance(result, tuple) or len(result) != len(spec.outputs):
            return None
        return dict(zip(spec.outputs, result))
    result, err = _call(getattr(module, spec.name), inputs)
    if err:
        return None
    try:
        return _split_forward(spec, result)[0]
    except ValueError:
        return None


def cell_of(spec):
    return "lstm" if spec.name.startswith("lstm") else "rnn"


# -- the report -------------------------------------------------------------------------------------------
@dataclass
class ConformanceReport:
    """The kit's verdict. ``ok``: every function present conforms; ``failures``: one :class:`Finding` per
    failing function (its smallest failing case and the diagnosis); ``checked``/``missing``: function names."""

    target: str
    convention: str
    cell: str
    checked: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    examples: int = 0

    @property
    def ok(self):
        return bool(self.checked) and not self.failures

    def __str__(self):
        verdict = "CONFORMS" if self.ok else "DOES NOT CONFORM"
        lines = textwrap.wrap(f"{self.target}: {verdict} to the {self.convention} convention ({self.cell}), "
                              f"{self.examples} examples per function", width=110, subsequent_indent="    ")
        failed = {f.function for f in self.failures}
        lines.append("checked: " + (", ".join(f"{n} {'FAIL' if n in failed else 'ok'}" for n in self.checked)
                                    or "nothing"))
        if self.missing:
            lines.append("missing: " + ", ".join(self.missing))
        for f in self.failures:
            lines.append(f"- {f.function}:")
            details = []
            if f.case is not None:
                details.append(f"smallest failing case: {_describe_case(f.case)}")
            details += f.problems
            if f.wrong:
                wrong = ", ".join(f"{k} (off by {v:.2g} of its scale)" for k, v in f.wrong.items())
                details.append(f"wrong: {wrong}" + (f"; right: {', '.join(f.right)}" if f.right else ""))
            if f.fd_wrong:
                details.append(f"finite differences of your own forward disagree with your {', '.join(f.fd_wrong)}")
            elif f.fd_checked and f.wrong:
                details.append("your gradients agree with finite differences of your own forward: the forward is "
                               "what differs from the convention")
            if f.steps:
                details.append(f.steps)
            if f.cause:
                details.append(f"likely cause: {f.cause}")
            for text in details:
                lines += textwrap.wrap(text, width=110, initial_indent="    ", subsequent_indent="        ")
        return "\n".join(line for line in lines if line)


def _describe_case(case, width=60):
    if "text" in case:  # already described (the layer convention)
        return case["text"]
    parts = [" ".join(f"{k}={v}" for k, v in case["sizes"].items())]
    for k, v in case.items():
        if k == "sizes":
            continue
        text = np.array2string(v, precision=3, separator=",", suppress_small=True, max_line_width=10_000)
        text = " ".join(text.split())
        parts.append(f"{k}={text if len(text) <= width else text[: width - 3] + '...'}")
    return "; ".join(parts)


# -- loading a target -------------------------------------------------------------------------------------
def load_target(target):
    """A module from a module object, a file path, or an importable name (``path.py`` or ``pkg.mod``);
    ``...:attr`` selects an attribute (a layer class or factory for the layer convention)."""
    if isinstance(target, types.ModuleType) or not isinstance(target, (str, os.PathLike)):
        return target
    text = os.fspath(target)
    attr = None
    if ":" in text and not (len(text) > 1 and text[1] == ":" and os.path.isabs(text)):
        text, attr = text.rsplit(":", 1)
    try:
        if text.endswith(".py") or os.path.sep in text:
            if not os.path.isfile(text):
                raise ImplementationError(f"no such file: {text}")
            name = "rnn_scratch_checked_" + os.path.splitext(os.path.basename(text))[0]
            spec = importlib.util.spec_from_file_location(name, text)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(text)
    except ImplementationError:
        raise
    except Exception as exc:
        raise ImplementationError(f"cannot import {text}: {type(exc).__name__}: {exc}") from exc
    if attr is not None:
        if not hasattr(module, attr):
            raise ImplementationError(f"{text} has no attribute {attr!r}")
        return getattr(module, attr)
    return module


# -- the search -------------------------------------------------------------------------------------------
def _search(condition, strategy, max_examples, seed):
    """The smallest case hypothesis finds for which ``condition`` holds, or None."""
    import random

    try:
        return find(strategy, condition, settings=settings(max_examples=max_examples, database=None, deadline=None,
                                                           suppress_health_check=list(HealthCheck)),
                    random=random.Random(seed))
    except NoSuchExample:
        return None


def check_implementation(target, *, convention, cell, max_examples=None, seed=None):
    """Search for cases where ``target`` disagrees with rnn_scratch's reference, and say what is wrong.

    convention "cs231n": ``target`` is a module (or a file path / importable name) with some of CS231n's
    functions for ``cell`` ("rnn": rnn_step_forward, rnn_step_backward, rnn_forward, rnn_backward; "lstm":
    lstm_step_forward, lstm_step_backward, lstm_forward, lstm_backward), CS231n's signatures and layouts
    (weights (D, H) / (D, 4H), LSTM gate columns i, f, o, g). convention "layer": ``target`` is a class or
    factory ``target(input_size, hidden_size)`` of torch-shaped layers (see :mod:`.layer_conformance`).
    Returns a :class:`ConformanceReport`; ``str(report)`` fits on one screen.
    """
    if convention not in CONVENTIONS:
        raise ImplementationError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    max_examples = DEFAULT_MAX_EXAMPLES if max_examples is None else int(max_examples)
    if max_examples < 1:
        raise ImplementationError(f"max_examples must be >= 1, got {max_examples}")
    seed = 0 if seed is None else int(seed)
    if convention == "layer":
        from .layer_conformance import check_layer_implementation

        return check_layer_implementation(load_target(target), cell=cell, max_examples=max_examples, seed=seed)
    if cell not in SPECS:
        raise ImplementationError(f"the cs231n convention has cells {tuple(SPECS)}, got {cell!r}")
    module = load_target(target)
    label = getattr(module, "__file__", None) or getattr(module, "__name__", repr(module))
    report = ConformanceReport(str(label), convention, cell, examples=max_examples)
    for spec in SPECS[cell]:
        fn = getattr(module, spec.name, None)
        if not callable(fn):
            report.missing.append(spec.name)
            continue
        if spec.is_backward and not callable(getattr(module, spec.forward, None)):
            report.missing.append(f"{spec.name} (needs {spec.forward} for its cache)")
            continue
        report.checked.append(spec.name)
        minimal = _search(lambda case, spec=spec: not evaluate(module, spec, cell, case).ok, cases(spec, cell),
                          max_examples, seed)
        if minimal is None:
            continue
        finding = evaluate(module, spec, cell, minimal)
        if spec.is_backward and not finding.problems:
            got = _user_outputs(module, spec, minimal)
            if got is not None:
                finding.fd_wrong = fd_disagreements(module, spec, cell, minimal, got)
                finding.fd_checked = True
        diagnose(module, spec, cell, finding)
        if spec.sequence and spec.is_backward and not finding.problems:
            where_in_time(module, spec, cell, finding, max_examples, seed)
        report.failures.append(finding)
    in_place = [f for f in report.failures if any("in place" in p for p in f.problems)]
    for f in report.failures:  # a step function that changes its inputs corrupts the caches built on them
        if in_place and f.cause is None:
            names = ", ".join(g.function for g in in_place)
            f.cause = f"{names} changes its inputs in place, and the arrays it changes are kept in caches"
    if not report.checked:
        names = ", ".join(s.name for s in SPECS[cell])
        if len(report.missing) == len(SPECS[cell]) and all(" (needs" not in m for m in report.missing):
            raise ImplementationError(f"{label} defines none of the {cell} functions of the cs231n convention "
                                      f"({names})")
        raise ImplementationError(f"{label}: nothing can be checked: {'; '.join(report.missing)}")
    return report
