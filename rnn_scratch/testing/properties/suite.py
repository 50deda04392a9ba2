"""Running the properties on a factory: drawing cases, searching for a failing one, shrinking it, the report."""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import sys
import textwrap
import time
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, NoSuchExample

from .adapters import (
    Adapter,
    Call,
    CustomAdapter,
    LayerError,
    RnnScratchAdapter,
    TorchAdapter,
    UsageError,
    guarded,
)
from .core import MODERATE, WIDE, Case, Context, draw_arrays
from .relations import PROPERTIES, PROPERTY_NAMES

ADAPTERS = {"torch": TorchAdapter, "rnn_scratch": RnnScratchAdapter, "custom": CustomAdapter}
DTYPES = ("float64", "float32")
DEFAULT_MAX_EXAMPLES = 25
DEFAULT_SHRINK_LIMIT = 300
MAX_SIZES = {"I": 3, "H": 3, "T": 4, "B": 3}  # small: failures shrink to a case a person can follow by hand
MAX_PARAMETERS = 2000  # every weight is drawn: a case must fit hypothesis's buffer (8 KiB) with room for the extras


class Subject:
    """The factory under test: ``factory(input_size, hidden_size)`` -> a layer, wrapped in an adapter per size
    and dtype (built once, reused)."""

    def __init__(self, factory, adapter, label=None):
        if not callable(factory):
            raise UsageError(f"the factory must be callable (sizes in, layer out), got {type(factory).__name__}")
        if isinstance(adapter, str):
            if adapter not in ADAPTERS:
                raise UsageError(f"adapter must be one of {sorted(ADAPTERS)}, got {adapter!r}")
            self.kind, self.make = adapter, ADAPTERS[adapter]
        elif isinstance(adapter, type) and issubclass(adapter, Adapter):
            self.kind, self.make = adapter.kind, adapter
        else:
            raise UsageError(f"adapter must be one of {sorted(ADAPTERS)} or an Adapter subclass, got {adapter!r}")
        self.factory = factory
        self.label = label or getattr(factory, "__qualname__", None) or repr(factory)
        self._built = {}
        self.min_hidden_size = 1  # the layer's own minimum (Adapter.min_hidden_size), read from the first build

    def adapter(self, I, H, dtype="float64") -> Adapter:
        if (I, H) not in self._built:
            try:
                layer = guarded(f"{self.label}({I}, {H})", self.factory, I, H)
            except LayerError as exc:
                raise UsageError(str(exc)) from exc
            if layer is None:
                raise UsageError(f"{self.label}({I}, {H}) returned None, expected a layer")
            kw = {"input_size": I} if self.make is CustomAdapter else {}
            built = self.make(layer, f"{self.label}({I}, {H})", **kw)
            n = sum(int(np.size(v)) for v in built.parameters().values())
            if n > MAX_PARAMETERS:
                raise UsageError(f"{self.label}({I}, {H}) built a layer of {n} parameters (input_size="
                                 f"{built.input_size}, hidden_size={built.hidden_size}): the properties draw every "
                                 f"weight, so the factory must build the small sizes it is asked for (at most "
                                 f"{MAX_PARAMETERS} parameters)")
            self._built[I, H] = {np.dtype(dt).name: (built if built.dtype == dt else built.astype(dt))
                                 for dt in DTYPES}
            self._built[I, H]["as built"] = built
        return self._built[I, H][dtype]


# -- cases -----------------------------------------------------------------------------------------------
@st.composite
def property_cases(draw, subject, prop, dtypes=DTYPES, sizes=None):
    """A :class:`~.core.Case` for one property: sizes (within ``MAX_SIZES``, at least the property's minimum), the
    regime (moderate values when float32 is checked on the case, see :mod:`.core`), the weights, x, the initial
    state, lengths, dout and dstate_n, then the property's own draws."""
    sizes = {**MAX_SIZES, **(sizes or {})}
    moderate = prop.float32_only or ("float32" in dtypes and draw(st.booleans(), label="moderate"))
    regime = MODERATE if moderate else WIDE
    I = draw(st.integers(1, sizes["I"]), label="I")
    low = max(prop.min_H, subject.min_hidden_size)
    H = draw(st.integers(low, max(low, sizes["H"])), label="H")
    adapter = subject.adapter(I, H)
    I, H = adapter.input_size, adapter.hidden_size  # the layer's own (a factory may fix them)
    T = draw(st.integers(prop.min_T, max(prop.min_T, sizes["T"])), label="T")
    B = draw(st.integers(prop.min_B, max(prop.min_B, sizes["B"])), label="B")
    w = regime.weight(I, H, adapter.num_directions, adapter.num_layers)
    S, LD, DH = adapter.num_states, adapter.num_layers * adapter.num_directions, adapter.num_directions * H
    with_states = {"never": False, "always": True}.get(prop.states) or draw(st.booleans(), label="with_state")
    shapes = adapter.parameters()
    names = sorted(shapes)
    specs = [(np.shape(shapes[k]), w) for k in names] + [((T, B, I), regime.x), ((T, B, DH), 1.0)]
    specs += [((LD, B, H), regime.state)] * (S if with_states else 0) + [((LD, B, H), 1.0)] * S
    values = draw_arrays(draw, specs)
    params = dict(zip(names, values[:len(names)]))
    x, dout = values[len(names):len(names) + 2]
    rest = values[len(names) + 2:]
    states = tuple(rest[:S]) if with_states else None
    dstates = tuple(rest[-S:])
    lengths = None
    if prop.lengths == "padded" or (prop.lengths == "maybe" and adapter.supports_lengths and T > 1
                                    and draw(st.booleans(), label="with_lengths")):
        lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths"))
        if prop.lengths == "padded":  # some row is shorter than T
            lengths[draw(st.integers(0, B - 1), label="short_row")] = draw(st.integers(1, T - 1), label="short")
    case = Case({"I": I, "H": H, "T": T, "B": B}, Call(params, x, states, lengths, dout, dstates), regime=regime,
                state_names=adapter.state_names)
    case.extra = prop.draw_extra(draw, case, adapter)
    return case


def evaluate(subject, prop, case, dtypes):
    """The :class:`~.core.Outcome` of ``prop`` on ``case``."""
    return prop.evaluate(_context(subject, case, dtypes), case)


def _context(subject, case, dtypes):
    adapters = {dt: subject.adapter(case.sizes["I"], case.sizes["H"], dt) for dt in DTYPES}
    checked = dtypes if case.regime.float32 else ("float64",)
    return Context(adapters, checked, adapters["float64"].state_names)


# -- the report ------------------------------------------------------------------------------------------
@dataclass
class PropertyResult:
    """One property's verdict: ``status`` "ok", "FAIL", "n/a", "stopped" (the time limit came first) or "not run";
    ``case``/``outcome``: the smallest failing case and what broke on it."""

    name: str
    statement: str
    status: str
    reason: str | None = None
    examples: int = 0
    undecided: int = 0
    seconds: float = 0.0
    case: Case | None = None
    outcome: object = None
    shrunk: bool = True
    stopped_by: str | None = None
    hint: str | None = None


@dataclass
class PropertyReport:
    """The suite's verdict on one factory. ``ok``: no property broke and every applicable one ran its examples."""

    target: str
    adapter: str
    layer: str
    dtypes: tuple
    max_examples: int
    seed: int = 0
    results: list = field(default_factory=list)

    @property
    def failures(self):
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def ok(self):
        return (not self.failures and not any(r.status in ("stopped", "not run") for r in self.results)
                and any(r.status == "ok" for r in self.results))

    def result(self, name):
        return next(r for r in self.results if r.name == name)

    def __str__(self):
        checked = [r for r in self.results if r.status != "n/a"]
        if self.failures:
            verdict = f"BREAKS {len(self.failures)} of {len(checked)} properties"
        elif self.ok:
            verdict = f"HOLDS every property that applies ({len(checked)} of {len(self.results)})"
        else:
            verdict = "INCOMPLETE (the time limit stopped the search)"
        lines = textwrap.wrap(f"{self.target} through the {self.adapter} adapter: {verdict}, in "
                              f"{' and '.join(self.dtypes)}, up to {self.max_examples} examples each (seed "
                              f"{self.seed})",
                              width=110, subsequent_indent="    ")
        lines += textwrap.wrap(f"layer: {self.layer}", width=110, subsequent_indent="    ")
        marks = []
        for r in self.results:
            mark = {"ok": "ok", "FAIL": "FAIL", "n/a": "n/a", "stopped": "stopped", "not run": "not run"}[r.status]
            if r.status == "ok" and r.undecided:
                mark += f" ({r.undecided} of {r.examples} undecided)"
            elif r.status == "stopped":
                mark += f" after {r.examples}"
            marks.append(f"{r.name} {mark}")
        lines += textwrap.wrap("properties: " + ", ".join(marks), width=110, subsequent_indent="    ")
        reasons = {}  # reason -> the properties it keeps out, in order
        for r in self.results:
            if r.status in ("n/a", "not run") and r.reason:
                reasons.setdefault(r.reason, []).append(r.name)
        for reason, names in reasons.items():
            lines += textwrap.wrap(f"{', '.join(names)}: {reason}", width=110, initial_indent="  ",
                                   subsequent_indent="    ")
        for r in self.failures:
            lines.append(f"- {r.name}: {r.statement}")
            details = []
            if r.case is not None:
                stopped = "" if r.shrunk else f" found (shrinking stopped after {r.stopped_by})"
                details.append(f"smallest failing case{stopped}: {r.case.describe()}")
            if r.outcome is not None:
                details += r.outcome.problems
                broken = r.outcome.broken()
                for dtype in ("float64", "float32"):
                    mine = [c for c in broken if c.dtype == dtype]
                    by_variant = {}
                    for c in mine:
                        by_variant.setdefault(c.variant, []).append(c.text())
                    for variant, texts in by_variant.items():
                        details.append(f"broke ({dtype}) for {variant}: {', '.join(texts)}")
                held = sorted({c.tensor for c in r.outcome.comparisons if c.ok} -
                              {c.tensor for c in broken})
                if broken and held:
                    details.append(f"held: {', '.join(held)}")
                details += r.outcome.details
            if r.hint:
                details.append(f"what it suggests: {r.hint}")
            for text in details:
                lines += textwrap.wrap(text, width=110, initial_indent="    ", subsequent_indent="        ")
        return "\n".join(lines)


# -- the search ------------------------------------------------------------------------------------------
class _Stop(BaseException):  # not an Exception: hypothesis does not shrink it, it ends the search
    pass


def _search(subject, prop, dtypes, max_examples, seed, deadline, sizes, shrink_limit):
    """(status, smallest failing case or None, {examples, undecided, shrunk, stopped_by...})."""
    seen = {"examples": 0, "undecided": 0, "failing": None, "shrinks": 0}

    def fails(case):
        if deadline is not None and time.monotonic() > deadline:
            seen["stopped_by"] = "the time limit"
            raise _Stop
        if seen["failing"] is not None:
            seen["shrinks"] += 1
            if seen["shrinks"] > shrink_limit:
                seen["stopped_by"] = f"{shrink_limit} tries"
                raise _Stop
        outcome = evaluate(subject, prop, case, dtypes)
        if seen["failing"] is None:
            seen["examples"] += 1
            seen["undecided"] += outcome.undecided is not None
        if not outcome.ok:
            seen["failing"] = case
        if outcome.timed_out:  # every further try could cost the call time limit: report this case as found
            seen["stopped_by"] = "a call that did not return"
            raise _Stop
        return not outcome.ok

    try:
        case = find(property_cases(subject, prop, dtypes, sizes), fails,
                    settings=settings(max_examples=max_examples, database=None, deadline=None,
                                      suppress_health_check=list(HealthCheck)),
                    random=random.Random(seed))
        shrunk = True
    except NoSuchExample:
        if seen["examples"] == 0:  # never a pass without a case
            return "not run", None, {**seen, "reason": "no case could be drawn"}
        return "ok", None, seen
    except _Stop:
        if seen["failing"] is None:
            return "stopped", None, seen
        case, shrunk = seen["failing"], False
    except HypothesisException as exc:  # Flaky: the same case passed and failed
        return "FAIL", seen["failing"], {**seen, "problem": f"the same case gave different verdicts when run again "
                                                           f"({type(exc).__name__}): the layer is not deterministic"}
    return "FAIL", case, {**seen, "shrunk": shrunk}


def check_properties(factory, *, adapter, properties=None, dtypes=DTYPES, max_examples=DEFAULT_MAX_EXAMPLES, seed=0,
                     time_limit=None, progress=None, label=None, sizes=None, shrink_limit=DEFAULT_SHRINK_LIMIT):
    """Search for a case that breaks each property of a recurrent layer, shrink it, and say which relation broke.

    ``factory(input_size, hidden_size)`` -> a layer (its structure: layers, directions, batch_first, bias, is the
    factory's); ``adapter``: "torch", "rnn_scratch", "custom" (see :mod:`.adapters`) or an Adapter subclass.
    ``properties``: names (default all, :data:`PROPERTY_NAMES`); ``dtypes``: float64 always, float32 when
    listed; ``max_examples`` per property; ``time_limit``: seconds for the whole run (the remaining properties
    are then reported as not run); ``progress(line)`` is told as each property ends; ``sizes`` caps the drawn
    sizes (default :data:`MAX_SIZES`); ``shrink_limit``: at most this many tries to shrink a failing case.
    Raises :class:`UsageError` when the factory cannot be built or adapted.
    Returns a :class:`PropertyReport`; ``str(report)`` fits on a screen.
    """
    names = PROPERTY_NAMES if properties is None else tuple(properties)
    unknown = [n for n in names if n not in PROPERTY_NAMES]
    if unknown:
        raise UsageError(f"unknown properties {unknown}; the properties are {list(PROPERTY_NAMES)}")
    dtypes = tuple(np.dtype(d).name for d in dtypes)
    if "float64" not in dtypes or set(dtypes) - set(DTYPES):
        raise UsageError(f"dtypes must include float64 (the truth float32 is judged against), got {list(dtypes)}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples < 1:
        raise UsageError(f"max_examples must be an integer >= 1, got {max_examples!r}")
    subject = Subject(factory, adapter, label)
    first = subject.adapter(2, 3)
    subject.min_hidden_size = first.min_hidden_size
    report = PropertyReport(subject.label, subject.kind, subject.adapter(2, 3, "as built").describe(), dtypes,
                            int(max_examples), int(seed))
    deadline = None if time_limit is None else time.monotonic() + float(time_limit)
    selected = [p for p in PROPERTIES if p.name in names]
    broken_calls = False
    for prop in selected:
        start = time.perf_counter()
        reason = prop.applies(first, dtypes)
        if reason is not None:
            result = PropertyResult(prop.name, prop.statement, "n/a", reason)
        elif broken_calls:
            result = PropertyResult(prop.name, prop.statement, "not run", "the layer's calls are not well-formed "
                                    "(see below): no relation can be judged on them")
        elif deadline is not None and time.monotonic() > deadline:
            result = PropertyResult(prop.name, prop.statement, "not run", "the time limit was reached first")
        else:
            status, case, seen = _search(subject, prop, dtypes, int(max_examples), seed, deadline, sizes,
                                         shrink_limit)
            result = PropertyResult(prop.name, prop.statement, status, seen.get("reason"), examples=seen["examples"],
                                    undecided=seen["undecided"], case=case, shrunk=seen.get("shrunk", True),
                                    stopped_by=seen.get("stopped_by"))
            if status == "FAIL":
                if case is not None:
                    result.outcome = _final_outcome(subject, prop, case, dtypes)
                    result.hint = prop.hint(result.outcome) if prop.hint else None
                if "problem" in seen:
                    from .core import Outcome

                    result.outcome = result.outcome or Outcome()
                    result.outcome.problems.append(seen["problem"])
                broken_calls = prop.name == "well-formed"
        result.seconds = time.perf_counter() - start
        report.results.append(result)
        if progress is not None:
            progress(f"[{len(report.results)}/{len(selected)}] {prop.name}: {result.status}"
                     + (f" ({result.examples} examples, {result.seconds:.1f} s)" if result.status not in ("n/a",)
                        else ""))
    return report


def _final_outcome(subject, prop, case, dtypes):
    return (prop.diagnose or prop.evaluate)(_context(subject, case, dtypes), case)


# -- loading MODULE:FACTORY ------------------------------------------------------------------------------
def load_factory(spec):
    """The object named by ``MODULE:FACTORY``: MODULE a ``.py`` file or an importable module (``torch.nn``),
    FACTORY an attribute path in it (``GRU``, ``make.layer``). Importing a file runs it: only name code you trust.
    Raises :class:`UsageError` when it cannot be found or imported."""
    if not isinstance(spec, str) or ":" not in spec:
        raise UsageError(f"the target must be MODULE:FACTORY (a .py file or module, a colon, a callable in it), "
                         f"got {spec!r}")
    module_name, attr = spec.rsplit(":", 1)
    if not module_name or not attr:
        raise UsageError(f"the target must be MODULE:FACTORY, got {spec!r}")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            if not os.path.isfile(module_name):
                raise UsageError(f"no such file: {module_name}")
            name = "rnn_scratch_properties_" + os.path.splitext(os.path.basename(module_name))[0]
            loader_spec = importlib.util.spec_from_file_location(name, module_name)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except (Exception, SystemExit) as exc:
        raise UsageError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"{module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"{spec} is a {type(target).__name__}, not a factory (sizes in, layer out)")
    return target
