"""Check your own RNN or LSTM: a conformance kit that searches for a case that breaks it, shrinks it, and says why.

:func:`check_implementation` takes a learner's module (CS231n's function names and signatures) or a torch-shaped
layer (:mod:`.layer_conformance`). The learner's code runs in a child process (:mod:`.sandbox`): nothing it
does, exit, crash, endless loop, a patched NumPy, reaches the kit, whose own numbers (rnn_scratch's reference in
float64, the comparisons, finite differences) are computed here. hypothesis draws sizes and values; a failing
case shrinks to the smallest one. Every reference value comes from pristine copies of the case made before the
learner's call, and the learner gets copies of its own.

On a failure the report names the wrong quantities, judged on the smallest case and on random cases of its sizes
(so a gradient that is 0 for any code on a shrunk all-zero case is never called right), the steps where the error
appears, and a likely cause only when a deliberate copy of that mistake (a mutant, computed here) reproduces the
learner's numbers, or when an experiment confirms it (the same call with copies of the arguments conforms). An
argument changed in place while the values are right is a warning: ``CONFORMS, with 1 warning``, exit status 0
(``strict=True`` makes it a failure).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ..functional import canonical_cell_name, get_cell
from . import cs231n_reference as REF
from .kit import (
    DEFAULT_MAX_EXAMPLES,
    FD_TOL,
    JUDGED_CASES,
    TOL,
    VALUES,
    ConformanceReport,
    Finding,
    ImplementationError,
    Outcome,
    SearchGaveUp,
    Stop,
    call_problem,
    changed,
    check_count,
    check_seconds,
    compare,
    describe_value,
    inplace_warning,
    judge_outcomes,
    open_sandbox,
    relative_error,
    same_results,
    search,
    shrink_case,
)
from .layer_conformance import check_layer_implementation
from .sandbox import DEFAULT_CALL_LIMIT_S, DEFAULT_TIME_LIMIT_S

CONVENTIONS = ("cs231n", "layer")
CS231N_PREFIXES = ("rnn", "lstm")  # the cells CS231n's assignment writes, by its function-name prefix
PROBE_SIZES = {"N": 3, "T": 3, "D": 4, "H": 2}  # the first case each function sees (sizes all different)


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


def _specs(prefix):
    """CS231n's four functions for the registry cell ``prefix`` names: the step pair takes and returns every state
    of the cell (prev_h, prev_c -> next_h, next_c); the sequence pair takes h0 only (an LSTM's c0 is zero) and
    returns every hidden state."""
    states = get_cell(prefix).state_names
    step_in = ("x", *(f"prev_{s}" for s in states), "Wx", "Wh", "b")
    seq_in = ("x", "h0", "Wx", "Wh", "b")
    return (
        Spec(f"{prefix}_step_forward", step_in, tuple(f"next_{s}" for s in states)),
        Spec(f"{prefix}_step_backward", step_in, ("dx", *(f"dprev_{s}" for s in states), "dWx", "dWh", "db"),
             f"{prefix}_step_forward", tuple(f"dnext_{s}" for s in states)),
        Spec(f"{prefix}_forward", seq_in, ("h",)),
        Spec(f"{prefix}_backward", seq_in, ("dx", "dh0", "dWx", "dWh", "db"), f"{prefix}_forward", ("dh",)),
    )


SPECS = {prefix: _specs(prefix) for prefix in CS231N_PREFIXES}
GRAD_OF = {"dx": "x", "dprev_h": "prev_h", "dprev_c": "prev_c", "dh0": "h0", "dWx": "Wx", "dWh": "Wh", "db": "b"}


def cs231n_cell(cell):
    """CS231n's prefix for a registry cell name or alias; ImplementationError for a cell without CS231n functions."""
    try:
        name = canonical_cell_name(cell)
    except ValueError as exc:
        raise ImplementationError(str(exc)) from None
    for prefix in CS231N_PREFIXES:
        if canonical_cell_name(prefix) == name:
            return prefix
    raise ImplementationError(f"the cs231n convention has no {cell} functions (CS231n's assignment writes "
                              f"{' and '.join(CS231N_PREFIXES)} only); check a {cell} layer with --convention layer")


def _spec(cell, name):
    return next(s for s in SPECS[cell] if s.name == name)


def _shapes(spec, cell, sizes):
    N, D, H = sizes["N"], sizes["D"], sizes["H"]
    T = sizes.get("T", 1)
    G = get_cell(cell).num_gates
    x = (N, T, D) if spec.sequence else (N, D)
    shapes = {"x": x, "prev_h": (N, H), "prev_c": (N, H), "h0": (N, H), "Wx": (D, G * H), "Wh": (H, G * H),
              "b": (G * H,), "dnext_h": (N, H), "dnext_c": (N, H), "dh": (N, T, H)}
    return {k: shapes[k] for k in (*spec.inputs, *spec.upstream)}


@st.composite
def cases(draw, spec, cell, max_T=4):
    """A case for one function: sizes (N, T, D, H) and every array, drawn through hypothesis.extra.numpy so
    that hypothesis can shrink values (towards 0) as well as sizes."""
    N, D, H = (draw(st.integers(1, 3), label=k) for k in "NDH")
    sizes = {"N": N, "T": draw(st.integers(1, max_T), label="T"), "D": D, "H": H} if spec.sequence else \
        {"N": N, "D": D, "H": H}
    arrays_ = {name: draw(arrays(np.float64, shape, elements=VALUES), label=name)
               for name, shape in _shapes(spec, cell, sizes).items()}
    return {"sizes": sizes, **arrays_}


def sub_case(spec, cell, case, sizes):
    """The leading part of a case at smaller sizes: the first rows, steps and features, and of each gate's block of
    columns in Wx, Wh and b the first H."""
    G, old = get_cell(cell).num_gates, case["sizes"]
    N, D, H, T = sizes["N"], sizes["D"], sizes["H"], sizes.get("T", 1)
    gates = np.concatenate([np.arange(j * old["H"], j * old["H"] + H) for j in range(G)])
    cut = {"x": (slice(N), slice(T), slice(D)) if spec.sequence else (slice(N), slice(D)), "dh": (slice(N), slice(T),
           slice(H)), "Wx": (slice(D), gates), "Wh": (slice(H), gates), "b": (gates,)}
    return {"sizes": dict(sizes), **{k: v[cut.get(k, (slice(N), slice(H)))].copy()
                                     for k, v in case.items() if k != "sizes"}}


def random_case(spec, cell, sizes, rng):
    """A case of the given sizes with every value uniform in [-1.5, 1.5]: no quantity is 0 by accident."""
    sizes = {k: v for k, v in sizes.items() if k != "T" or spec.sequence}
    return {"sizes": dict(sizes), **{name: rng.uniform(-1.5, 1.5, shape)
                                     for name, shape in _shapes(spec, cell, sizes).items()}}


# -- one function on one case, in the child ---------------------------------------------------------------
def _reference_outputs(spec, case):
    """Ours, in float64, in this process, from copies of the case."""
    inputs = [np.array(case[k], dtype=np.float64) for k in spec.inputs]
    with np.errstate(all="ignore"):
        if spec.is_backward:
            fwd = getattr(REF, spec.forward)(*inputs)
            upstream = [np.array(case[k], dtype=np.float64) for k in spec.upstream]
            return dict(zip(spec.outputs, getattr(REF, spec.name)(*upstream, fwd[-1])))
        return dict(zip(spec.outputs, getattr(REF, spec.name)(*inputs)[:-1]))


def _is_stub(value, n):
    return value is None or (isinstance(value, (tuple, list)) and len(value) >= 1
                             and all(v is None for v in value[:n]))


def _arity_problem(value, expected):
    got = f"a tuple of {len(value)}" if isinstance(value, (tuple, list)) else describe_value(value)
    return f"returned {got}, expected ({', '.join(expected)})"


class _Learner:
    """The cs231n convention's calls into the child: one program per case."""

    def __init__(self, sandbox, cell):
        self.sandbox, self.cell = sandbox, cell

    def steps(self, spec, patch=()):
        fwd = _spec(self.cell, spec.forward) if spec.is_backward else spec
        steps = [{"patch": name} for name in patch]
        steps.append({"call": ["attr", ["target"], fwd.name], "args": [{"arr": k} for k in fwd.inputs],
                      "send": {"items": len(fwd.outputs)}, "report": True})
        if spec.is_backward:
            cache = {"ref": ["item", ["slot", len(steps) - 1], len(fwd.outputs)]}
            steps.append({"call": ["attr", ["target"], spec.name], "send": "all", "report": True,
                          "args": [*({"arr": k} for k in spec.upstream), cache]})
        return steps

    def evaluate(self, spec, case, patch=()):
        """Run ``spec`` on ``case`` (through its forward for a backward) and compare it with ours."""
        pristine = {k: case[k].copy() for k in (*spec.inputs, *spec.upstream)}
        out = Outcome(expected=_reference_outputs(spec, pristine))
        run = self.sandbox.run(pristine, self.steps(spec, patch))
        replies = run.steps[len(patch):]
        fwd = _spec(self.cell, spec.forward) if spec.is_backward else spec
        n = len(fwd.outputs)
        if run.stopped is not None and len(replies) == 0 and spec.is_backward:
            out.stopped = run.stopped
            out.forward_failed = f"its forward {fwd.name} {run.stopped.text}"  # not the backward's doing
            return out
        before = pristine
        for k, (reply, function) in enumerate(zip(replies, (fwd.name, spec.name))):
            for name, how in changed(before, reply.arrays).items():
                through = fwd.name if (k == 1 and name in fwd.inputs) else None
                out.changes.append((function, name, how, through))
            before = reply.arrays or before
        if run.stopped is not None:
            out.stopped = run.stopped
            return out
        first = replies[0]
        if not first.ok:
            text = call_problem(first.error)
            if spec.is_backward:
                out.forward_failed = f"its forward {fwd.name} {text}"
            else:
                out.problems.append(text)
            return out
        value = first.value
        if _is_stub(value, n):
            if spec.is_backward:
                out.forward_failed = f"its forward {fwd.name} is not implemented (returns None)"
            else:
                out.stub = True
            return out
        if not isinstance(value, (tuple, list)) or len(value) != n + 1:
            problem = _arity_problem(value, (*fwd.outputs, "cache"))
            if spec.is_backward:
                out.forward_failed = f"its forward {fwd.name} {problem}"
            else:
                out.problems.append(problem)
            return out
        if not spec.is_backward:
            got = dict(zip(spec.outputs, value[:n]))
        else:
            second = replies[1]
            if not second.ok:
                out.problems.append(call_problem(second.error))
                return out
            if _is_stub(second.value, len(spec.outputs)):
                out.stub = True
                return out
            if not isinstance(second.value, (tuple, list)) or len(second.value) != len(spec.outputs):
                out.problems.append(_arity_problem(second.value, spec.outputs))
                return out
            got = dict(zip(spec.outputs, second.value))
        out.got = got
        problems, out.errors = compare(got, out.expected)
        out.problems += problems
        return out

    def without_cache(self, spec, case):
        """A backward called with None for its cache: (True, None) when it returns only None (a stub, whatever its
        forward does), else (False, what it raised or None)."""
        steps = [{"call": ["attr", ["target"], spec.name], "send": "all",
                  "args": [*({"arr": k} for k in spec.upstream), {"lit": {"v": None}}]}]
        run = self.sandbox.run({k: case[k] for k in spec.upstream}, steps)
        if run.stopped is not None or not run.steps:
            return False, None
        step = run.steps[0]
        if step.ok:
            return _is_stub(step.value, len(spec.outputs)), None
        # a name error is a mistake whatever the cache; anything else may come from the missing cache
        return False, call_problem(step.error) if step.error.get("type") in ("NameError", "UnboundLocalError") else None

    def forward_outputs(self, spec, variants):
        """The learner's forward outputs for each variant of the inputs (one program), or None if any call fails."""
        fwd = _spec(self.cell, spec.forward)
        arrays_, steps = {}, []
        for j, inputs in enumerate(variants):
            for k in fwd.inputs:
                arrays_[f"{k}{j}"] = inputs[k]
            steps.append({"call": ["attr", ["target"], fwd.name], "args": [{"arr": f"{k}{j}"} for k in fwd.inputs],
                          "send": {"items": len(fwd.outputs)}})
        run = self.sandbox.run(arrays_, steps)
        if run.stopped is not None or len(run.steps) != len(steps) or not all(s.ok for s in run.steps):
            return None
        outs = []
        for s in run.steps:
            value = s.value
            if not isinstance(value, (tuple, list)) or len(value) != len(fwd.outputs) + 1:
                return None
            if not all(isinstance(v, np.ndarray) for v in value[:-1]):
                return None
            outs.append(value[:-1])
        return outs


# -- finite differences of the learner's own forward -------------------------------------------------------
def fd_disagreements(learner, spec, case, got, eps=1e-6):
    """The gradients (of ``got``) that disagree with central differences of the learner's own forward, or None when
    the forward cannot be differentiated that way (it fails, or returns something else)."""
    fwd = _spec(learner.cell, spec.forward)
    base = {k: np.array(case[k], dtype=np.float64) for k in fwd.inputs}
    upstream = [case[k] for k in spec.upstream]
    checked = [(g, GRAD_OF[g]) for g in spec.outputs if GRAD_OF.get(g) in base and isinstance(got.get(g), np.ndarray)]
    variants, index = [], []
    for grad_name, input_name in checked:
        for j in range(base[input_name].size):
            for sign in (1.0, -1.0):
                v = {k: a.copy() for k, a in base.items()}
                v[input_name].reshape(-1)[j] += sign * eps
                variants.append(v)
                index.append((grad_name, j, sign))
    outs = learner.forward_outputs(spec, variants)
    if outs is None:
        return None
    with np.errstate(all="ignore"):
        losses = [sum(float((u * np.asarray(o, dtype=np.float64)).sum()) for u, o in zip(upstream, out))
                  if all(np.shape(o) == np.shape(u) for u, o in zip(upstream, out)) else np.nan for out in outs]
    numeric = {g: np.zeros(base[i].size) for g, i in checked}
    for (grad_name, j, sign), loss in zip(index, losses):
        numeric[grad_name][j] += sign * loss / (2 * eps)
    bad = []
    for grad_name, _ in checked:
        g = got[grad_name]
        if g.size != numeric[grad_name].size or not np.isfinite(numeric[grad_name]).all():
            continue
        if relative_error(g.reshape(-1), numeric[grad_name]) > FD_TOL:
            bad.append(grad_name)
    return bad


# -- the usual mistakes, as deliberate copies (mutants) computed here -------------------------------------------
def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _rnn_step(x, h, Wx, Wh, b, bug=None):
    a = x @ Wx + h @ Wh + b
    return a if bug == "no_tanh" else np.tanh(a)


def _rnn_step_bwd(dnext, x, h, Wx, Wh, b, nh, bug):
    dt = {"no_tanh_grad": 1.0, "tanh_grad_1_minus_h": 1 - nh, "tanh_grad_of_tanh_h": 1 - np.tanh(nh) ** 2
          }.get(bug, 1 - nh**2)
    da = dnext * dt
    dprev = da @ (Wh if bug == "Wh_not_transposed" else Wh.T)
    dWh = (nh if bug == "dWh_uses_next_h" else h).T @ da
    return {"dx": da @ Wx.T, "dprev_h": dprev, "dWx": x.T @ da, "dWh": dWh, "db": _db(da, bug)}


def _db(da, bug):
    if bug == "db_mean":
        return da.mean(0)
    if bug == "db_keepdims":
        return da.sum(0, keepdims=True)
    if bug == "db_wrong_axis":
        return da.sum(1)
    return da.sum(0)


GATE_ORDER = REF.LSTM_GATES  # CS231n's gate column blocks: i, f, o, g


def _lstm_gates(x, h, Wx, Wh, b, bug=None):
    H = h.shape[1]
    a = x @ Wx + h @ Wh + b
    blocks = dict(zip(GATE_ORDER, (a[:, k * H:(k + 1) * H] for k in range(4))))
    act = {k: (v if bug == f"no_sigmoid_{k}" else _sigmoid(v)) for k, v in blocks.items() if k != "g"}
    act["g"] = blocks["g"] if bug == "no_tanh_g" else np.tanh(blocks["g"])
    return act["i"], act["f"], act["o"], act["g"]


def _lstm_step(x, h, c, Wx, Wh, b, bug=None):
    i, f, o, g = _lstm_gates(x, h, Wx, Wh, b, bug)
    nc = f * c + i * g
    return o * (nc if bug == "no_tanh_c" else np.tanh(nc)), nc


def _lstm_step_bwd(dnh, dnc, x, h, c, Wx, Wh, b, bug):
    i, f, o, g = _lstm_gates(x, h, Wx, Wh, b)
    nc = f * c + i * g
    tc = np.tanh(nc)
    dc = dnc + dnh * o * (1.0 if bug == "no_tanh_grad_c" else 1 - tc**2)
    gate = {"i": i, "f": f, "o": o}
    upstream = {"i": dc * g, "f": dc * c, "o": dnh * tc}

    def sigmoid_grad(k):
        if bug == f"no_sigmoid_grad_{k}":
            return 1.0
        for s in gate:  # sigmoid' of another gate
            if bug == f"sigmoid_grad_{k}_from_{s}":
                return gate[s] * (1 - gate[s])
        return gate[k] * (1 - gate[k])

    dg_factor = {"no_tanh_grad_g": 1.0, "tanh_grad_of_tanh_g": 1 - np.tanh(g) ** 2}.get(bug, 1 - g**2)
    da = np.concatenate([upstream["i"] * sigmoid_grad("i"), upstream["f"] * sigmoid_grad("f"),
                         upstream["o"] * sigmoid_grad("o"), dc * i * dg_factor], axis=1)
    dprev_c = {"dprev_c_drops_dh_path": f * dnc, "dprev_c_missing_f": dc}.get(bug, f * dc)
    dWh = (o * tc if bug == "dWh_uses_next_h" else h).T @ da
    return {"dx": da @ Wx.T, "dprev_h": da @ Wh.T, "dprev_c": dprev_c, "dWx": x.T @ da, "dWh": dWh,
            "db": _db(da, bug)}


def _sequence_fwd(cell, case, bug):
    """rnn_forward / lstm_forward with one deliberate mistake: h (N, T, H)."""
    x, h0, Wx, Wh, b = (case[k] for k in ("x", "h0", "Wx", "Wh", "b"))
    h, c, hs = h0, np.zeros_like(h0), []
    for t in range(x.shape[1]):
        start_h = h0 if bug == "forward_no_h_carry" else h
        if cell == "rnn":
            h = _rnn_step(x[:, t], start_h, Wx, Wh, b, bug)
        else:
            h, c = _lstm_step(x[:, t], start_h, np.zeros_like(h0) if bug == "forward_no_c_carry" else c, Wx, Wh, b,
                              bug)
        hs.append(h)
    return {"h": np.stack(hs, axis=1)}


def _sequence_bwd(cell, case, bug):
    """rnn_backward / lstm_backward with one deliberate mistake (or None)."""
    x, h0, Wx, Wh, b, dh = (case[k] for k in ("x", "h0", "Wx", "Wh", "b", "dh"))
    N, T, _ = x.shape
    hs, cs = [h0], [np.zeros_like(h0)]
    for t in range(T):
        if cell == "rnn":
            hs.append(_rnn_step(x[:, t], hs[-1], Wx, Wh, b))
        else:
            h, c = _lstm_step(x[:, t], hs[-1], cs[-1], Wx, Wh, b)
            hs.append(h)
            cs.append(c)
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


def _mutant(spec, cell, case, bug):
    """The outputs of ``spec`` on ``case`` with the mistake ``bug`` made on purpose."""
    with np.errstate(all="ignore"):
        if not spec.is_backward:
            if spec.sequence:
                return _sequence_fwd(cell, case, bug)
            if cell == "rnn":
                return {"next_h": _rnn_step(case["x"], case["prev_h"], case["Wx"], case["Wh"], case["b"], bug)}
            nh, nc = _lstm_step(case["x"], case["prev_h"], case["prev_c"], case["Wx"], case["Wh"], case["b"], bug)
            return {"next_h": nh, "next_c": nc}
        if spec.sequence:
            return _sequence_bwd(cell, case, bug)
        if cell == "rnn":
            nh = _rnn_step(case["x"], case["prev_h"], case["Wx"], case["Wh"], case["b"])
            return _rnn_step_bwd(case["dnext_h"], case["x"], case["prev_h"], case["Wx"], case["Wh"], case["b"], nh,
                                 bug)
        return _lstm_step_bwd(case["dnext_h"], case["dnext_c"], case["x"], case["prev_h"], case["prev_c"], case["Wx"],
                              case["Wh"], case["b"], bug)


_SIGMOID_FROM = {f"sigmoid_grad_{k}_from_{s}": f"the {k} gate's sigmoid' is taken of {s}: it is {k} (1 - {k})"
                 for k in "ifo" for s in "ifo" if k != s}
CAUSES = {
    "no_tanh": "next_h has no tanh: next_h = tanh(x Wx + prev_h Wh + b)",
    "no_sigmoid_i": "the input gate has no sigmoid: i = sigmoid(a[:, :H])",
    "no_sigmoid_f": "the forget gate has no sigmoid: f = sigmoid(a[:, H:2H])",
    "no_sigmoid_o": "the output gate has no sigmoid: o = sigmoid(a[:, 2H:3H])",
    "no_tanh_g": "g has no tanh: g = tanh(a[:, 3H:])",
    "no_tanh_c": "next_h misses the tanh of the cell state: next_h = o * tanh(next_c)",
    "forward_no_h_carry": "every step starts from h0: step t must take the hidden state step t-1 returned",
    "forward_no_c_carry": "every step starts from a zero cell state: step t must take the cell state step t-1 returned",
    "no_tanh_grad": "the tanh' factor (1 - h^2) is missing from da",
    "tanh_grad_1_minus_h": "tanh' is written 1 - h; it is 1 - h^2",
    "tanh_grad_of_tanh_h": "tanh' is taken of tanh(next_h), 1 - tanh(next_h)^2; next_h is already tanh(a), so tanh' is "
                           "1 - next_h^2",
    "Wh_not_transposed": "dprev_h uses Wh where Wh^T belongs (dprev_h = da Wh^T)",
    "dWh_uses_next_h": "dWh is built from next_h; it takes the state the step read, prev_h",
    "db_mean": "db is a mean over the batch where a sum belongs (each example adds its gradient)",
    "db_keepdims": "db keeps the summed axis (sum(axis=0, keepdims=True)); db has the shape of b",
    "db_wrong_axis": "db is summed over axis 1 (the hidden units); it sums over axis 0, the batch",
    "no_sigmoid_grad_i": "the sigmoid' factor i (1 - i) is missing from the input gate's gradient",
    "no_sigmoid_grad_f": "the sigmoid' factor f (1 - f) is missing from the forget gate's gradient",
    "no_sigmoid_grad_o": "the sigmoid' factor o (1 - o) is missing from the output gate's gradient",
    **_SIGMOID_FROM,
    "no_tanh_grad_g": "the tanh' factor (1 - g^2) is missing from g's gradient",
    "tanh_grad_of_tanh_g": "g's tanh' is taken of tanh(g), 1 - tanh(g)^2, but g is already tanh(a_g): tanh' is 1 - g^2",
    "no_tanh_grad_c": "the tanh' factor (1 - tanh(next_c)^2) is missing where dnext_h reaches the cell state",
    "dprev_c_drops_dh_path": "the cell-state path is dropped from dprev_c: it must be f * (dnext_c + dnext_h * o * "
                             "(1 - tanh(next_c)^2)), not f * dnext_c",
    "dprev_c_missing_f": "dprev_c misses the forget gate: dprev_c = f * dc (the constant error carousel)",
    "no_h_carry": "the gradient carried from step t+1 into step t is missing: at each step the upstream dh[:, t] "
                  "must be added to the dprev_h that step t+1 returned",
    "no_c_carry": "the cell-state gradient is not carried between steps: step t must receive step t+1's dprev_c",
}
FORWARD_BUGS = {"rnn": ("no_tanh",), "lstm": ("no_sigmoid_i", "no_sigmoid_f", "no_sigmoid_o", "no_tanh_g", "no_tanh_c")}
SEQUENCE_FORWARD_BUGS = {"rnn": ("forward_no_h_carry", *FORWARD_BUGS["rnn"]),
                         "lstm": ("forward_no_h_carry", "forward_no_c_carry", *FORWARD_BUGS["lstm"])}
STEP_BUGS = {"rnn": ("no_tanh_grad", "tanh_grad_1_minus_h", "tanh_grad_of_tanh_h", "Wh_not_transposed",
                     "dWh_uses_next_h", "db_mean", "db_keepdims", "db_wrong_axis"),
             "lstm": ("no_sigmoid_grad_i", "no_sigmoid_grad_f", "no_sigmoid_grad_o", *_SIGMOID_FROM, "no_tanh_grad_g",
                      "tanh_grad_of_tanh_g", "no_tanh_grad_c", "dprev_c_drops_dh_path", "dprev_c_missing_f", "db_mean",
                      "db_keepdims", "db_wrong_axis", "dWh_uses_next_h")}
_SHAPE_BUGS = ("db_keepdims", "db_wrong_axis")  # a sequence adds the step's db into (GH,): these cannot reach it
SEQUENCE_BUGS = {cell: ("no_h_carry", *(("no_c_carry",) if cell == "lstm" else ()),
                        *(b for b in STEP_BUGS[cell] if b not in _SHAPE_BUGS and b != "dprev_c_missing_f"))
                 for cell in CS231N_PREFIXES}


def _bugs(spec, cell):
    if spec.is_backward:
        return SEQUENCE_BUGS[cell] if spec.sequence else STEP_BUGS[cell]
    return SEQUENCE_FORWARD_BUGS[cell] if spec.sequence else FORWARD_BUGS[cell]


def _matches(got, expected):
    return all(k in got and isinstance(got[k], np.ndarray) and got[k].shape == np.shape(v)
               and relative_error(got[k], v) <= TOL for k, v in expected.items())


def _blocks(a, order):
    """The four gate blocks of the last axis of ``a``, block j of the result being block order[j] of ``a``."""
    H = a.shape[-1] // 4
    return np.concatenate([a[..., j * H:(j + 1) * H] for j in order], axis=-1)


def _permuted(case, order):
    """The case with the LSTM gate blocks of Wx, Wh and b taken in ``order``."""
    return {k: _blocks(v, order) if k in ("Wx", "Wh", "b") else v for k, v in case.items()}


# -- checking one function ------------------------------------------------------------------------------------
class _Check:
    """The cs231n convention on one module: every function of one cell, in CS231n's order."""

    def __init__(self, sandbox, label, cell, *, max_examples, seed, strict):
        self.learner = _Learner(sandbox, cell)
        self.sandbox, self.cell, self.seed, self.max_examples = sandbox, cell, seed, max_examples
        self.report = ConformanceReport(label, "cs231n", cell, examples=max_examples, strict=strict)
        self.inplace = {}  # (function, argument) -> (how, through), in the order first seen
        self.status = {}  # function -> "ok" | "fail"

    def note_changes(self, outcome):
        for function, argument, how, through in outcome.changes:
            self.inplace.setdefault((function, argument), (how, through))

    def evaluate(self, spec, case, patch=()):
        outcome = self.learner.evaluate(spec, case, patch)
        self.note_changes(outcome)
        return outcome

    def run(self):
        kinds = self.sandbox.loaded.get("names", {})
        for spec in SPECS[self.cell]:
            if kinds.get(spec.name) != "callable":
                self.report.missing.append(spec.name)
            elif spec.is_backward and kinds.get(spec.forward) != "callable":
                self.report.missing.append(f"{spec.name} (needs {spec.forward} for its cache)")
            elif self.sandbox.time_left() <= 0:
                self.report.not_checked[spec.name] = "the time limit ran out first"
                self.report.incomplete = (f"the check's time limit ({self.sandbox.time_limit:g} s) ran out; raise it "
                                          f"with --time-limit")
            else:
                self.check(spec)
        self.finish()
        return self.report

    def finish(self):
        report = self.report
        for (function, argument), (how, through) in self.inplace.items():
            if self.status.get(function) == "ok":
                report.warnings.append(inplace_warning(function, argument, how, through))
            else:
                for f in report.failures:
                    if f.function == function:
                        thing = f"its argument {argument}" if through is None else f"{argument} (an input of {through})"
                        f.notes.insert(0, f"it also changes {thing} in place ({how})")
        names = ", ".join(s.name for s in SPECS[self.cell])
        if not report.checked and report.incomplete is None:
            if report.not_implemented:  # a report (exit status 1), not a usage error: the template, not yet filled
                return
            if report.not_checked:
                raise ImplementationError(f"{report.target}: nothing can be checked: " + "; ".join(
                    f"{n}: {why}" for n, why in report.not_checked.items()))
            if len(report.missing) == len(SPECS[self.cell]) and all(" (needs" not in m for m in report.missing):
                raise ImplementationError(f"{report.target} defines none of the {self.cell} functions of the cs231n "
                                          f"convention ({names})")
            raise ImplementationError(f"{report.target}: nothing can be checked: {'; '.join(report.missing)}")

    def fail(self, finding):
        self.status[finding.function] = "fail"
        self.report.checked.append(finding.function)
        self.report.failures.append(finding)

    def stopped(self, spec, stopped, case, forward_failed=None):
        """A call that never answered: a failure, unless it was the check's own time limit that ran out, or the
        forward a backward needs (then the backward is not checked: no case runs without that forward)."""
        if forward_failed is not None and stopped.kind != "deadline":
            self.report.not_checked[spec.name] = forward_failed + (
                " (see above)" if self.status.get(spec.forward) == "fail" else "")
        elif stopped.kind == "deadline":
            self.report.not_checked[spec.name] = "the time limit ran out before it was checked in full"
            self.report.incomplete = (f"the check's time limit ({self.sandbox.time_limit:g} s) ran out; raise it with "
                                      f"--time-limit")
        else:
            self.fail(Finding(spec.name, problems=[stopped.text], case=case, shrunk=False))

    def check(self, spec):
        rng = np.random.default_rng([self.seed, [s.name for s in SPECS[self.cell]].index(spec.name)])
        probe = random_case(spec, self.cell, PROBE_SIZES, rng)
        first = self.evaluate(spec, probe)
        raised = None
        if first.stub:
            self.report.not_implemented.append(spec.name)
            return
        if first.forward_failed is not None and (first.stopped is None or first.stopped.kind != "deadline"):
            stub, raised = self.learner.without_cache(spec, probe)
            if stub:
                self.report.not_implemented.append(spec.name)
                return
        if first.stopped is not None:
            return self.stopped(spec, first.stopped, probe, first.forward_failed)
        again = self.evaluate(spec, probe) if first.forward_failed is None else first
        if again.stopped is not None:
            return self.stopped(spec, again.stopped, probe, again.forward_failed)
        same, where = same_results(first.got or {}, again.got or {})
        if not same or first.problems != again.problems:
            self.fail(Finding(spec.name, case=probe, shrunk=False, problems=[
                f"returns different results for the same inputs ({where or 'its errors differ'} between two calls); "
                f"a function of its inputs must not depend on hidden state or randomness"]))
            return
        ran = {"yes": 0, "forward failed": 0}

        def failing(case):
            outcome = self.evaluate(spec, case)
            if outcome.stopped is not None:
                raise Stop(outcome.stopped, case, outcome.forward_failed)
            if outcome.forward_failed is not None:
                ran["forward failed"] += 1
                return False
            ran["yes"] += 1
            return not outcome.ok

        try:
            minimal = search(failing, cases(spec, self.cell), self.max_examples, self.seed, shrink=False)
            if minimal is not None:
                minimal = shrink_case(minimal, failing, lambda c, sizes: sub_case(spec, self.cell, c, sizes))
        except Stop as stop:
            return self.stopped(spec, stop.stopped, stop.case, stop.forward_failed)
        except SearchGaveUp as exc:
            self.fail(Finding(spec.name, case=probe, shrunk=False, problems=[
                f"gives different verdicts for the same case (the search gave up: {type(exc).__name__}); does it "
                f"depend on hidden state or randomness?"]))
            return
        shrunk = True
        if minimal is None and not ran["yes"]:
            why = first.forward_failed or f"its forward {spec.forward} failed on every case tried"
            if self.status.get(spec.forward) == "fail":
                why += " (see above)"
            if raised:  # a name that does not exist fails whatever the cache: a mistake found without its forward
                self.fail(Finding(spec.name, shrunk=False, problems=[
                    f"not checked against ours ({why}), but called with None for the cache it {raised}"]))
            else:
                self.report.not_checked[spec.name] = why
            return
        if minimal is None:
            if first.ok or first.forward_failed is not None:
                self.status[spec.name] = "ok"
                self.report.checked.append(spec.name)
                if ran["forward failed"]:
                    self.report.notes.append(f"{spec.name} was checked on the {ran['yes']} cases where {spec.forward} "
                                             f"ran ({spec.forward} failed on {ran['forward failed']} others)")
                return
            minimal, shrunk = probe, False
        self.fail(self.judge(spec, minimal, shrunk))

    # -- the finding -------------------------------------------------------------------------------------------
    def judge(self, spec, case, shrunk):
        """The finding for a failing case: problems, and right/wrong over that case and random ones of its sizes."""
        finding = Finding(spec.name, case=case, shrunk=shrunk)
        rng = np.random.default_rng([self.seed, 7])
        others = [random_case(spec, self.cell, case["sizes"], rng) for _ in range(JUDGED_CASES)]
        outcomes = [self.evaluate(spec, c) for c in (case, *others)]
        judge_outcomes(finding, outcomes, spec.outputs)
        if outcomes[0].stopped is not None:
            return finding
        self.diagnose(spec, finding, others, outcomes[1:])
        if spec.is_backward and self.status.get(spec.forward) == "fail":
            finding.notes.append(f"its forward {spec.forward} does not conform either (see above); its cache is "
                                 f"what this backward reads")
        step = spec.name.replace(f"{self.cell}_", f"{self.cell}_step_", 1)
        if spec.sequence and self.status.get(step) == "fail":
            finding.notes.append(f"{step}, which CS231n's {spec.name} calls at every step, does not conform either "
                                 f"(see above)")
        return finding

    def diagnose(self, spec, finding, cases_, outcomes):
        """A cause when a mutant reproduces the learner's numbers on every random case (or an experiment confirms
        it), and where in time or at which size the error appears."""
        usable = [(c, o) for c, o in zip(cases_, outcomes) if o.got is not None]
        if any(not o.ok for _, o in usable):  # a mutant must explain numbers that differ from ours
            finding.cause = self.mutant_cause(spec, usable)
        if finding.cause is None:
            finding.cause = self.inplace_cause(spec, cases_, outcomes)
        notes = []
        size_note = self.size_note(spec, finding.case["sizes"])
        if size_note:
            notes.append(size_note)
        if spec.sequence and finding.case["sizes"]["T"] >= 2 and not size_note:
            rng = np.random.default_rng([self.seed, 11])
            sizes = {**finding.case["sizes"], "T": 1}
            short = [self.evaluate(spec, random_case(spec, self.cell, sizes, rng)) for _ in range(JUDGED_CASES)]
            if all(o.ok for o in short):
                T = finding.case["sizes"]["T"]
                if T == 2:
                    where = ("receives the gradient of the steps after it" if spec.is_backward else
                             "receives the state of the step before it")
                    notes.append(f"right for T = 1, wrong for T >= 2: the error enters where a step {where}")
                else:
                    notes.append(f"right for T = 1, wrong for T = {T} (no shorter case failed)")
        if usable and spec.is_backward and spec.sequence and "dx" in finding.wrong:
            c, o = usable[0]
            T = c["x"].shape[1]
            wrong_steps = [t for t in range(T) if relative_error(o.got["dx"][:, t], o.expected["dx"][:, t]) > TOL]
            notes.append(f"on a random case of these sizes dx is wrong at t = {wrong_steps} of 0..{T - 1}")
        if usable and spec.is_backward and finding.wrong and not finding.problems:
            c, o = max(usable, key=lambda pair: max(pair[1].errors.values(), default=0.0))  # the clearest case
            bad = fd_disagreements(self.learner, spec, c, o.got)
            if bad or (bad is not None and max(o.errors.values(), default=0.0) > 1e3 * FD_TOL):
                finding.fd_wrong, finding.fd_checked = bad, True  # "agree" only where the error is far above FD's
        finding.steps = "; ".join(notes) or None

    def mutant_cause(self, spec, usable):
        if self.cell == "lstm":  # a gate order other than (i, f, o, g): the learner's numbers are ours, permuted
            for order in itertools.permutations(range(4)):
                if order == (0, 1, 2, 3):
                    continue
                inverse = [order.index(k) for k in range(4)]

                def permuted_ref(case, order=order, inverse=inverse):
                    ref = _reference_outputs(spec, _permuted(case, order))
                    if spec.is_backward:  # the weight gradients come back in the learner's column order
                        ref = {k: _blocks(v, inverse) if k in ("dWx", "dWh", "db") else v for k, v in ref.items()}
                    return ref

                if all(_matches(o.got, permuted_ref(c)) for c, o in usable):
                    names = ", ".join(GATE_ORDER[j] for j in inverse)
                    return (f"the gate columns are in the order ({names}); the CS231n convention is (i, f, o, g): "
                            f"a = x Wx + prev_h Wh + b, then i, f, o, g = a[:, :H], a[:, H:2H], a[:, 2H:3H], a[:, 3H:]")
        causes = [CAUSES[bug] for bug in _bugs(spec, self.cell)
                  if all(_matches(o.got, _mutant(spec, self.cell, c, bug)) for c, o in usable)]
        if causes:  # several mistakes can give the same numbers: name each
            return "; or, giving the same numbers here: ".join(causes)
        return None

    def inplace_cause(self, spec, cases_, outcomes):
        """If another function changes its arguments in place: does the check pass when that function gets copies?"""
        culprits = []
        for (function, _), (_, through) in self.inplace.items():
            if function != spec.name and through is None and function not in culprits:
                culprits.append(function)
        if not culprits or not any(not o.ok for o in outcomes):
            return None
        for patch in [[c] for c in culprits] + ([culprits] if len(culprits) > 1 else []):  # the fewest that explain it
            if all(self.learner.evaluate(spec, c, patch=patch).ok for c in cases_):
                args = ", ".join(sorted({a for (f, a), (_, t) in self.inplace.items() if f in patch and t is None}))
                return (f"{' and '.join(patch)} {'changes' if len(patch) == 1 else 'change'} {args} in place, and "
                        f"{spec.name} keeps that array (in a cache, or as the next step's state): the same code, "
                        f"given copies, conforms")
        return None

    def size_note(self, spec, sizes):
        """Which sizes equal to 1 make the function fail: right when they are 2, wrong when one of them is 1."""
        ones = [k for k, v in sizes.items() if v == 1]
        if not ones:
            return None
        rng = np.random.default_rng([self.seed, 13])
        base = {k: (2 if v == 1 else v) for k, v in sizes.items()}

        def passes(s):
            return all(self.evaluate(spec, random_case(spec, self.cell, s, rng)).ok for _ in range(2))

        if not passes(base):
            return None
        culprits = [k for k in ones if not passes({**base, k: 1})]
        if not culprits:
            return None
        which = " or ".join(f"{k} = 1" for k in culprits)
        hint = ("a loop that expects two or more steps (its first or last step handled apart, or the cache indexed "
                "from the end)" if culprits == ["T"] else
                "an axis of length 1 is lost somewhere (np.squeeze, or an integer index where a slice belongs)")
        return f"fails when {which} and is right with {'them' if len(culprits) > 1 else 'it'} at 2: {hint}"


# -- the entry point ------------------------------------------------------------------------------------------
def check_implementation(target, *, convention, cell, max_examples=None, seed=None, strict=False, time_limit=None,
                         call_limit=None):
    """Search for cases where ``target`` disagrees with rnn_scratch's reference, and say what is wrong.

    convention "cs231n": ``target`` is a module, the path of a .py file (one inside a package such as CS231n's
    ``cs231n/`` folder is imported as that package's module, so its imports work as in the assignment), or an
    importable module name, with some of CS231n's functions for ``cell`` ("rnn": rnn_step_forward,
    rnn_step_backward, rnn_forward, rnn_backward; "lstm": the lstm_* ones), CS231n's signatures and layouts
    (weights (D, H) / (D, 4H), LSTM gate columns i, f, o, g). convention "layer": ``target`` is a class, factory
    or layer object (``PATH:ATTR`` or ``MODULE:ATTR`` by name), torch-shaped; any registered cell
    (see :mod:`.layer_conformance`).

    The learner's code runs in a child process: ``call_limit`` seconds per call (default 10) and ``time_limit``
    for the whole check (default 120). ``strict``: an argument changed in place fails the check instead of
    warning. Returns a :class:`ConformanceReport` (``str(report)`` fits on one screen, ``report.exit_status``:
    0 conforms, 1 does not, 3 incomplete); raises :class:`ImplementationError` when the target cannot be loaded or
    checked (Python 2 code, a missing import, exit() at import, none of the functions defined or implemented).
    """
    if convention not in CONVENTIONS:
        raise ImplementationError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    max_examples = DEFAULT_MAX_EXAMPLES if max_examples is None else check_count(max_examples, "max_examples", 1)
    seed = 0 if seed is None else check_count(seed, "seed", 0)
    time_limit = DEFAULT_TIME_LIMIT_S if time_limit is None else check_seconds(time_limit, "time_limit")
    call_limit = DEFAULT_CALL_LIMIT_S if call_limit is None else check_seconds(call_limit, "call_limit")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    limits = dict(max_examples=max_examples, seed=seed, strict=strict, time_limit=time_limit, call_limit=call_limit)
    if convention == "layer":
        return check_layer_implementation(target, cell=cell, **limits)
    prefix = cs231n_cell(cell)
    names = [n for s in SPECS[prefix] for n in (s.name,)]
    sandbox, label = open_sandbox(target, names=names, call_limit=call_limit, time_limit=time_limit)
    with sandbox:
        return _Check(sandbox, label, prefix, max_examples=max_examples, seed=seed, strict=strict).run()
