"""The conformance kit's ``layer`` convention: check a torch-shaped recurrent layer against rnn_scratch's.

The target is a class or factory ``target(input_size, hidden_size)`` (or one layer object, whose sizes are then
fixed) whose layers have torch's interface: ``out, state = layer(x, state)`` with torch's layout and parameter
names, ``dx, dstate0 = layer.backward(dout, dstate)``, ``state_dict()`` / ``load_state_dict()`` and a ``grads``
dict keyed like the state_dict that ``backward`` adds to. Any cell of the registry (``functional.CELLS``) can be
checked. The layer runs in the kit's child process (:mod:`.sandbox`); the kit reads its structure from its
state_dict (layers, directions, bias) and ``batch_first``, gives both layers the same drawn weights, and compares
outputs, final states, dx, initial-state gradients and each parameter gradient's increment over the call (a
layer object keeps its gradients between calls: ``zero_grad()`` is called first when it has one) in float64.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ..functional import canonical_cell_name, get_cell
from . import kit

FUNCTION = "forward and backward"


def gate_labels(cell):
    """The names of a cell's gate row blocks (the Cell record's ``gate_names`` when it has them)."""
    record = get_cell(cell)
    names = getattr(record, "gate_names", None)
    return tuple(names) if names else tuple(f"block {k}" for k in range(record.num_gates))


def _ours(cell, input_size, hidden_size, structure):
    from ..layers import make_layer

    num_layers, bidirectional, bias, batch_first = structure
    return make_layer(cell, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                      batch_first=batch_first, dtype="float64", backend="numpy", check_finite=False)


def _structure(state_dict, batch_first):
    """(num_layers, bidirectional, bias, batch_first) read off a layer's state_dict and attributes."""
    keys = list(state_dict)
    layers = {int(m.group(1)) for k in keys if (m := re.match(r"weight_ih_l(\d+)", k))}
    if not layers:
        return None
    return max(layers) + 1, any(k.endswith("_reverse") for k in keys), any(k.startswith("bias_") for k in keys), \
        bool(batch_first is True)


def _case_arrays(ours, sizes, with_state, arr):
    T, N = sizes["T"], sizes["N"]
    n, D = ours.cell.num_states, ours.num_directions * sizes["H"]
    state_shape = (ours.num_layers * ours.num_directions, N, sizes["H"])
    return {"sizes": dict(sizes),
            "x": arr((N, T, sizes["I"]) if ours.batch_first else (T, N, sizes["I"]), "x"),
            "state": tuple(arr(state_shape, f"state{k}") for k in range(n)) if with_state else None,
            "weights": {k: arr(np.shape(v), k) for k, v in ours.state_dict().items()},
            "dout": arr((N, T, D) if ours.batch_first else (T, N, D), "dout"),
            "dstate": tuple(arr(state_shape, f"dstate{k}") for k in range(n))}


@st.composite
def layer_cases(draw, sizes, cell, structure):
    """Sizes (I, H fixed when ``sizes`` is given), T and N, and every array of a call: x, the initial state (or
    None), the weights, dout and dstate, drawn through hypothesis.extra.numpy (so values shrink too)."""
    low = get_cell(cell).min_hidden_size  # (a LayerNorm LSTM is degenerate at H = 1)
    I, H = sizes if sizes is not None else (draw(st.integers(1, 3), label="I"),
                                            draw(st.integers(low, max(low, 3)), label="H"))
    drawn = {"I": I, "H": H, "T": draw(st.integers(1, 4), label="T"), "N": draw(st.integers(1, 2), label="N")}
    ours = _ours(cell, I, H, structure)
    with_state = draw(st.booleans(), label="with_state")
    return _case_arrays(ours, drawn, with_state,
                        lambda shape, label: draw(arrays(np.float64, shape, elements=kit.VALUES), label=label))


def random_layer_case(cell, sizes, structure, rng):
    ours = _ours(cell, sizes["I"], sizes["H"], structure)
    return _case_arrays(ours, sizes, True, lambda shape, label: rng.uniform(-1.5, 1.5, shape))


def _torch_form(states):
    return states[0] if len(states) == 1 else tuple(states)


def _permute_rows(weights, order, G):
    """Weights with the gate row blocks taken in ``order`` (block j of the result = block order[j])."""
    out = {}
    for k, v in weights.items():
        H = v.shape[0] // G
        out[k] = np.concatenate([v[j * H:(j + 1) * H] for j in order], axis=0)
    return out


def _pair(value, n, what, expected):
    """(first, state tuple, None) from what a call returned, or (None, None, what went wrong)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        first, state = value
        states = (state,) if n == 1 else state
        if isinstance(states, (tuple, list)) and len(states) == n:
            return first, tuple(states), None
    return None, None, f"{what} returned {kit.describe_value(value)}, expected {expected}"


def _state_quantities(cell, final, d0):
    """{h_n: ..., c_n: ..., dh0: ..., dc0: ...}, named by the cell's states."""
    names = get_cell(cell).state_names
    return {**{f"{n}_n": f for n, f in zip(names, final)}, **{f"d{n}0": d for n, d in zip(names, d0)}}


def run_ours(cell, case, structure, weights=None):
    """rnn_scratch's layer on one case, here, in float64: {quantity: array}."""
    I, H = case["sizes"]["I"], case["sizes"]["H"]
    ours = _ours(cell, I, H, structure)
    ours.load_state_dict(weights or case["weights"])
    n = ours.cell.num_states
    with np.errstate(all="ignore"):
        out, final = ours(case["x"].copy(), None if case["state"] is None else
                          _torch_form(tuple(s.copy() for s in case["state"])))
        dx, d0 = ours.backward(case["dout"].copy(), _torch_form(tuple(d.copy() for d in case["dstate"])))
    final, d0 = (final,) if n == 1 else final, (d0,) if n == 1 else d0
    return {"out": out, "dx": dx, **_state_quantities(cell, final, d0),
            **{f"grads[{k}]": np.asarray(v) for k, v in ours.grads.items()}}


class _Layer:
    """The layer convention's calls into the child: one program per case."""

    def __init__(self, sandbox, label, cell, is_instance, zero_grad):
        self.sandbox, self.cell = sandbox, cell
        self.label = label.rsplit(":", 1)[-1] if ":" in label else label  # the class's name, for "Layer(2, 3)"
        self.is_instance, self.zero_grad = is_instance, zero_grad
        self.n = get_cell(cell).num_states

    def layer_steps(self, I, H):
        if self.is_instance:
            return [], ["target"]
        return [{"call": ["target"], "args": [{"lit": {"v": I}}, {"lit": {"v": H}}], "send": "type"}], ["slot", 0]

    def structure(self, I, H):
        """(structure, None) or (None, what went wrong) for a layer of these sizes."""
        steps, layer = self.layer_steps(I, H)
        base = len(steps)
        steps += [{"call": ["attr", layer, "state_dict"], "send": "all"},
                  {"get": ["attr", layer, "batch_first"], "send": "all", "soft": True}]
        run = self.sandbox.run({}, steps)
        if run.stopped is not None:
            what = "constructing the layer" if run.stopped.step < base else "its state_dict()"
            return None, f"{what} {run.stopped.text}"
        if base and not run.steps[0].ok:
            return None, f"constructing the layer, {self.label}({I}, {H}), {kit.call_problem(run.steps[0].error)}"
        sd = run.steps[base]
        if not sd.ok:
            return None, f"state_dict() {kit.call_problem(sd.error)}"
        if not isinstance(sd.value, dict):
            return None, f"state_dict() returned {kit.describe_value(sd.value)}, expected a dict of arrays"
        bf = run.steps[base + 1]
        structure = _structure(sd.value, bf.value if bf.ok else False)
        if structure is None:
            return None, f"its state_dict has no weight_ih_l0 (torch's names); its keys are {list(sd.value)[:8]}"
        return (structure, {k: np.shape(v) for k, v in sd.value.items()}), None

    def evaluate(self, case, expected):
        """The learner's layer on one case, compared with ``expected`` (ours): a :class:`~.kit.Outcome`."""
        out = kit.Outcome(expected=expected)
        steps, layer = self.layer_steps(case["sizes"]["I"], case["sizes"]["H"])
        arrays_ = {"x": case["x"], "dout": case["dout"], **{f"w:{k}": v for k, v in case["weights"].items()},
                   **{f"dstate{k}": d for k, d in enumerate(case["dstate"])}}
        if case["state"] is not None:
            arrays_.update({f"state{k}": s for k, s in enumerate(case["state"])})
        pristine = {k: v.copy() for k, v in arrays_.items()}

        def state_arg(prefix):
            parts = [{"arr": f"{prefix}{k}"} for k in range(self.n)]
            return parts[0] if self.n == 1 else {"tuple": parts}

        if self.zero_grad:
            steps.append({"call": ["attr", layer, "zero_grad"], "send": "type", "soft": True})
        weights = {"dict": {k: {"arr": f"w:{k}"} for k in case["weights"]}}
        steps.append({"call": ["attr", layer, "load_state_dict"], "args": [weights], "send": "type"})
        forward = len(steps)
        state = state_arg("state") if case["state"] is not None else {"lit": {"v": None}}
        steps.append({"call": layer, "send": "all", "report": True, "args": [{"arr": "x"}, state]})
        steps.append({"get": ["attr", layer, "grads"], "send": "all", "soft": True})
        steps.append({"call": ["attr", layer, "backward"], "send": "all", "report": True,
                      "args": [{"arr": "dout"}, state_arg("dstate")]})
        steps.append({"get": ["attr", layer, "grads"], "send": "all"})
        run = self.sandbox.run(arrays_, steps)
        what = {0: "constructing the layer"} if not self.is_instance else {}
        what.update({forward - 1: "load_state_dict", forward: "forward", forward + 2: "backward",
                     forward + 3: "reading its grads"})
        if self.zero_grad:
            what[forward - 2] = "zero_grad"
        before = pristine
        for k in (forward, forward + 2):
            if k < len(run.steps) and run.steps[k].arrays is not None:
                for name, how in kit.changed(before, run.steps[k].arrays).items():
                    out.changes.append(("forward" if k == forward else "backward", name, how, None))
                before = run.steps[k].arrays
        if run.stopped is not None:
            out.stopped = run.stopped
            out.stopped.text = f"{what.get(run.stopped.step, 'a call')} {run.stopped.text}"
            return out
        failed = next((k for k, s in enumerate(run.steps) if not s.ok and k != forward + 1 and
                       not (self.zero_grad and k == forward - 2)), None)
        if failed is not None:
            error = run.steps[failed].error
            name = what.get(failed, "a call")
            if failed == 0 and not self.is_instance:
                name = f"constructing the layer, {self.label}({case['sizes']['I']}, {case['sizes']['H']}),"
            if error.get("ref"):
                out.problems.append(f"has no {name.split()[-1]}() (torch-shaped layers have one)")
            else:
                out.problems.append(f"{name} {kit.call_problem(error)}")
            return out
        first, final, err = _pair(run.steps[forward].value, self.n, "forward", "(out, state)")
        if err is None:
            dx, d0, err = _pair(run.steps[forward + 2].value, self.n, "backward", "(dx, dstate0)")
        if err is not None:
            out.problems.append(err)
            return out
        grads_after = run.steps[forward + 3].value
        if not isinstance(grads_after, dict):
            out.problems.append(f"its grads is {kit.describe_value(grads_after)}, expected a dict keyed like its "
                                f"state_dict")
            return out
        grads_before = run.steps[forward + 1].value if run.steps[forward + 1].ok else None
        got = {"out": first, "dx": dx, **_state_quantities(self.cell, final, d0)}
        for k, v in grads_after.items():
            old = grads_before.get(k) if isinstance(grads_before, dict) else None
            if isinstance(v, np.ndarray) and isinstance(old, np.ndarray) and old.shape == v.shape:
                v = v - old  # what this backward added (a layer object keeps its gradients)
            got[f"grads[{k}]"] = v
        out.got = got
        problems, out.errors = kit.compare(got, expected)
        out.problems += problems
        return out


class _LayerCheck:
    def __init__(self, sandbox, label, cell, *, max_examples, seed, strict):
        loaded = sandbox.loaded
        kind, names = loaded.get("kind"), loaded.get("names", {})
        if kind == "module":
            raise kit.ImplementationError(f"{label} is a module; the layer convention takes a layer class, factory or "
                                      f"object: name it as MODULE:ATTR or PATH:ATTR")
        if kind not in ("class", "callable", "layer"):
            raise kit.ImplementationError(f"the layer convention takes a layer class, factory or object, got {label} "
                                      f"({kind})")
        is_instance = kind == "layer"
        if is_instance:
            for attr in ("backward", "state_dict", "load_state_dict"):
                if names.get(attr) != "callable":
                    raise kit.ImplementationError(f"{label} has no {attr}() (torch-shaped layers have one)")
        self.sandbox, self.label, self.cell, self.seed = sandbox, label, cell, seed
        self.max_examples = max_examples
        self.layer = _Layer(sandbox, label, cell, is_instance, zero_grad=is_instance and names.get("zero_grad") ==
                            "callable")
        self.report = kit.ConformanceReport(label, "layer", cell, examples=max_examples, strict=strict)
        self.inplace = {}

    def evaluate(self, case):
        outcome = self.layer.evaluate(case, run_ours(self.cell, case, self.structure))
        for function, argument, how, _ in outcome.changes:
            self.inplace.setdefault((function, argument), how)
        return outcome

    def fail(self, finding):
        self.report.failures.append(finding)
        return self.report

    def stopped(self, stopped, case):
        if stopped.kind != "deadline":
            return self.fail(kit.Finding(FUNCTION, problems=[stopped.text], case=_describe(case), shrunk=False))
        self.report.incomplete = (f"the check's time limit ({self.sandbox.time_limit:g} s) ran out; raise it with "
                                  f"--time-limit")
        self.report.checked = []
        self.report.not_checked[FUNCTION] = "the time limit ran out before it was checked in full"
        return self.report

    def run(self):
        report = self.report
        report.checked = [FUNCTION]
        sizes = (2, 3)
        found, err = self.layer.structure(*sizes)
        if err is None and self.layer.is_instance:
            structure, shapes = found
            sizes = (shapes["weight_ih_l0"][1], shapes["weight_hh_l0"][1])
        if err is not None:
            return self.fail(kit.Finding(FUNCTION, problems=[err], shrunk=False))
        self.structure = found[0]
        fixed = sizes if self.layer.is_instance else None
        rng = np.random.default_rng([self.seed, 1])
        probe_sizes = {"I": sizes[0], "H": sizes[1], "T": 3, "N": 2}
        probe = random_layer_case(self.cell, probe_sizes, self.structure, rng)
        first = self.evaluate(probe)
        if first.stopped is not None:
            return self.stopped(first.stopped, probe)
        again = self.evaluate(probe)
        if again.stopped is not None:
            return self.stopped(again.stopped, probe)
        same, where = kit.same_results(first.got or {}, again.got or {})
        if not same or first.problems != again.problems:
            text = f"returns different results for the same inputs ({where or 'its errors differ'} between two calls)"
            return self.fail(kit.Finding(FUNCTION, problems=[text], case=_describe(probe), shrunk=False))

        def failing(case):
            outcome = self.evaluate(case)
            if outcome.stopped is not None:
                raise kit.Stop(outcome.stopped, case)
            return not outcome.ok

        try:
            minimal = kit.search(failing, layer_cases(fixed, self.cell, self.structure), self.max_examples, self.seed)
        except kit.Stop as stop:
            return self.stopped(stop.stopped, stop.case)
        except kit.SearchGaveUp as exc:
            return self.fail(kit.Finding(FUNCTION, case=_describe(probe), shrunk=False, problems=[
                f"gives different verdicts for the same case (the search gave up: {type(exc).__name__})"]))
        shrunk = True
        if minimal is None:
            if first.ok:
                self.finish()
                return report
            minimal, shrunk = probe, False
        self.fail(self.judge(minimal, shrunk))
        self.finish()
        return report

    def finish(self):
        for (function, argument), how in self.inplace.items():
            thing = {"dout": "dout", "x": "x"}.get(argument, argument)
            text = kit.inplace_warning(f"its {function}", thing, how)
            if self.report.failures:
                self.report.failures[0].notes.insert(0, f"its {function} also changes {thing} in place ({how})")
            else:
                self.report.warnings.append(text)

    def judge(self, case, shrunk):
        finding = kit.Finding(FUNCTION, case=_describe(case), shrunk=shrunk)
        rng = np.random.default_rng([self.seed, 7])
        others = [random_layer_case(self.cell, case["sizes"], self.structure, rng) for _ in range(kit.JUDGED_CASES)]
        outcomes = [self.evaluate(c) for c in (case, *others)]
        kit.judge_outcomes(finding, outcomes)
        usable = [(c, o) for c, o in zip(others, outcomes[1:]) if o.got is not None]
        if usable and finding.wrong:
            finding.cause = self.gate_order(usable)
            c, o = usable[0]
            t_axis = 1 if self.structure[3] else 0
            T = c["sizes"]["T"]
            if "dx" in finding.wrong:
                wrong = [t for t in range(T) if kit.relative_error(np.take(o.got["dx"], t, axis=t_axis),
                                                               np.take(o.expected["dx"], t, axis=t_axis)) > kit.TOL]
                if wrong and T - 1 not in wrong and not self.structure[1]:
                    finding.steps = (f"on a random case of these sizes dx is right at the last step (t = {T - 1}) and "
                                     f"wrong at t = {wrong}: the gradient carried from step t+1 into step t is likely "
                                     f"missing")
                elif wrong:
                    finding.steps = f"on a random case of these sizes dx is wrong at t = {wrong} of 0..{T - 1}"
        return finding

    def gate_order(self, usable):
        """When the layer's results are ours with the gate row blocks permuted (forward and backward alike): say
        which order it uses."""
        names = gate_labels(self.cell)
        G = len(names)
        if G < 2:
            return None
        for order in itertools.permutations(range(G)):
            if order == tuple(range(G)):
                continue
            inverse = [order.index(k) for k in range(G)]

            def matches(case, outcome, order=order, inverse=inverse):
                expected = run_ours(self.cell, case, self.structure, _permute_rows(case["weights"], order, G))
                expected = {k: (_permute_rows({k: v}, inverse, G)[k] if k.startswith("grads[") else v)
                            for k, v in expected.items()}  # the learner's gradients come in its own row order
                return all(isinstance(outcome.got.get(k), np.ndarray) and outcome.got[k].shape == v.shape
                           and kit.relative_error(outcome.got[k], v) <= kit.TOL for k, v in expected.items())

            if all(matches(c, o) for c, o in usable):
                used = ", ".join(names[j] for j in inverse)
                return (f"the gate row blocks are used in the order ({used}); torch's (and this convention's) order is "
                        f"({', '.join(names)})")
        return None


def _describe(case, width=60):
    parts = [" ".join(f"{k}={v}" for k, v in case["sizes"].items())]
    for k in ("x", "state", "dout"):
        v = case[k]
        if v is None:
            continue
        text = " ".join(np.array2string(np.asarray(v), precision=3, separator=",", suppress_small=True,
                                        max_line_width=10_000).split())
        parts.append(f"{k}={text if len(text) <= width else text[: width - 3] + '...'}")
    return {"sizes": case["sizes"], "text": "; ".join(parts)}


def check_layer_implementation(target, *, cell, max_examples, seed, strict, time_limit, call_limit):
    """See :func:`rnn_scratch.testing.check_implementation` (convention "layer")."""
    try:
        cell = canonical_cell_name(cell)
    except ValueError as exc:
        raise kit.ImplementationError(f"the layer convention checks a registered cell: {exc}") from None
    names = ["backward", "state_dict", "load_state_dict", "zero_grad", "__call__"]
    sandbox, label = kit.open_sandbox(target, names=names, call_limit=call_limit, time_limit=time_limit)
    with sandbox:
        return _LayerCheck(sandbox, label, cell, max_examples=max_examples, seed=seed, strict=strict).run()
