"""What both conventions of the conformance kit share: the report, the comparison, the search, and starting the
learner's code in its child process (:mod:`.sandbox`) with a clear message when it cannot be imported."""

from __future__ import annotations

import contextlib
import os
import random
import stat
import sys
import tempfile
import textwrap
import types
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, NoSuchExample

from .sandbox import DEFAULT_CALL_LIMIT_S, DEFAULT_TIME_LIMIT_S, Sandbox, SandboxError
from .sandbox_child import Opaque

TOL = 1e-6  # relative error against ours (scale floored at 1e-3): float64 rounding is ~1e-15 of that
FD_TOL = 1e-5
DEFAULT_MAX_EXAMPLES = 60
SHRINK_BUDGET = 300  # calls of the condition after the first failing case (hypothesis's shrinker)
JUDGED_CASES = 3  # random cases of the smallest failing case's sizes, besides that case, that right/wrong rest on
# 0, or a magnitude in [1e-3, 2]: no underflow in the learner's products (a module may set np.seterr(all="raise"))
VALUES = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64).map(
    lambda v: 0.0 if abs(v) < 1e-3 else v)
WIDTH = 110


class ImplementationError(Exception):
    """A usage problem: the target cannot be loaded or does not fit the convention (exit status 2)."""


class Stop(Exception):
    """Raised out of the search when the learner's code stopped answering (timed out, exited, crashed): that
    case is reported once, not shrunk."""

    def __init__(self, stopped, case, forward_failed=None):
        super().__init__(stopped.text)
        self.stopped, self.case, self.forward_failed = stopped, case, forward_failed


# -- arguments -------------------------------------------------------------------------------------------
def check_count(value, name, low):
    """``value`` as an int >= ``low``: TypeError for what is not an integer (2.7, "x"), ValueError below."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_seconds(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of seconds > 0, got {value!r} ({type(value).__name__})")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


# -- comparing -------------------------------------------------------------------------------------------
def relative_error(a, b):
    """max |a - b| / max(|b|, 1e-3): the error of a against the reference b (float64, computed here)."""
    with np.errstate(all="ignore"):
        b = np.asarray(b, dtype=np.float64)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-3)
        return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b), initial=0.0)) / scale


def describe_value(value):
    if isinstance(value, Opaque):
        return f"a {value.type_name}" + (f" ({value.text})" if value.text else "")
    if isinstance(value, np.generic):
        return f"a NumPy scalar ({type(value).__name__})"
    return f"a {type(value).__name__}"


def compare(got, expected):
    """(problems, errors): sentences for what is missing or malformed (no value, not an array, wrong shape or
    dtype, NaN where ours is finite), and the relative error of every quantity that could be compared."""
    problems, errors, nonfinite = [], {}, []
    for name, ref in expected.items():
        value = got.get(name)
        if value is None:
            problems.append(f"returned no {name} (None)")
        elif not isinstance(value, np.ndarray):
            problems.append(f"{name} is {describe_value(value)}, expected a NumPy array of shape {ref.shape}")
        elif value.shape != ref.shape:
            problems.append(f"{name} has shape {value.shape}, expected {ref.shape}")
        elif value.dtype != np.float64:
            problems.append(f"{name} has dtype {value.dtype}, expected float64 like its inputs")
        elif not np.isfinite(value).all() and np.isfinite(ref).all():
            nonfinite.append(name)
        else:
            errors[name] = relative_error(value, ref)
    if nonfinite:
        problems.append(f"{', '.join(nonfinite)}: NaN or infinity where ours is finite")
    return problems, errors


def same_results(a, b):
    """Whether two results of the same call are identical (bit for bit, NaN equal to NaN), and if not, a phrase
    saying where they differ."""
    for name in a:
        x, y = a.get(name), b.get(name)
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False, f"{name} changes shape or dtype"
            if not np.array_equal(x, y, equal_nan=True):
                return False, f"{name} differs by up to {float(np.nanmax(np.abs(x - y))):.2g}"
        elif type(x) is not type(y):
            return False, f"{name} changes type"
    return True, ""


def changed(before, after):
    """{name: phrase} for the arrays of ``before`` that ``after`` holds changed (values, shape or dtype)."""
    out = {}
    for name, old in before.items():
        new = (after or {}).get(name)
        if not isinstance(new, np.ndarray) or not isinstance(old, np.ndarray):
            continue
        if new.shape != old.shape or new.dtype != old.dtype:
            out[name] = f"to shape {new.shape} {new.dtype}"
        elif not np.array_equal(new, old, equal_nan=True):
            with np.errstate(all="ignore"):
                out[name] = f"by up to {float(np.nanmax(np.abs(new - old))):.2g}"
    return out


def call_problem(error):
    """A sentence for an error the learner's code raised (from the child, as data)."""
    kind, message = error.get("type", "error"), " ".join(str(error.get("message", "")).split())
    where = f" ({error['where']})" if error.get("where") else ""
    if kind == "SystemExit":
        code = error.get("exit_code")
        shown = "" if code is None else repr(code)
        return f"called exit({shown}) (or sys.exit){where}: a function must return its results, not end the program"
    if kind == "RefError":
        return message
    text = f"raised {kind}" + (f": {message[:200]}" if message else "") + where
    if error.get("python2"):
        text += f"; {error['python2']}"
    return text


def inplace_warning(function, argument, how, through=None):
    """The warning for an argument changed in place while the values are right."""
    what = (f"changes its argument {argument} in place ({how})" if through is None else
            f"changes {argument} in place ({how}), an input of {through} that the cache keeps")
    return (f"{function} {what}. The values it returns are right, but a caller that uses {argument} again (or kept "
            f"it, as a cache does) sees the changed array; work on a copy: {argument} = {argument} + ..., not "
            f"{argument} += ...")


# -- one case, and a finding over several ----------------------------------------------------------------------
@dataclass
class Outcome:
    """What the learner's code did on one case: its outputs (``got``) against ours (``expected``), the problems
    and the relative error of each compared quantity; or that it is a stub, that the forward a backward needs
    failed (``forward_failed``), or that the child stopped answering (``stopped``). ``changes``: (function,
    argument, how, through) for every argument changed in place."""

    expected: dict | None = None
    got: dict | None = None
    problems: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    stub: bool = False
    forward_failed: str | None = None
    stopped: object = None
    changes: list = field(default_factory=list)

    @property
    def ok(self):
        return (self.stopped is None and not self.stub and self.forward_failed is None and not self.problems
                and all(e <= TOL for e in self.errors.values()))


def judge_outcomes(finding, outcomes, order=None):
    """Fill ``finding`` from the failing case's outcome (first) and random cases of its sizes: the problems seen,
    each quantity's largest error, and which quantities are right -- right in every case that could be compared,
    at least one of them random (a quantity that is 0 for any code on the failing case is never called right on
    that alone)."""
    head = outcomes[0]
    if head.stopped is not None:
        finding.problems.append(head.stopped.text)
        return finding
    if head.forward_failed:
        finding.problems.append(head.forward_failed)
    finding.problems += head.problems
    if head.ok:
        finding.problems.append("failed during the search but passes now on the same case: it gives different "
                                "results for the same inputs")
    extra = [p for o in outcomes[1:] for p in o.problems + ([o.stopped.text] if o.stopped is not None else [])
             if p not in finding.problems]
    if extra:
        finding.problems.append("on random cases of these sizes: " + "; ".join(dict.fromkeys(extra)))
    valued = [o for o in outcomes if o.errors]
    worst = {}
    for o in valued:
        for name, err in o.errors.items():
            worst[name] = max(worst.get(name, 0.0), err)
    finding.wrong = {k: v for k, v in worst.items() if v > TOL}
    if any(o.errors for o in outcomes[1:]):
        finding.right = [k for k in (order or worst) if k in worst and k not in finding.wrong
                         and all(k in o.errors for o in valued)]
    finding.judged = len(valued)
    return finding


# -- the report ------------------------------------------------------------------------------------------
@dataclass
class Finding:
    """What is wrong with one function: the smallest failing case, the problems seen on it and on random cases
    of its sizes, and which quantities are right or wrong over those cases (``wrong``: quantity -> the largest
    relative error against ours)."""

    function: str
    problems: list = field(default_factory=list)
    wrong: dict = field(default_factory=dict)
    right: list = field(default_factory=list)
    fd_wrong: list = field(default_factory=list)
    fd_checked: bool = False
    case: dict | None = None
    cause: str | None = None
    steps: str | None = None
    notes: list = field(default_factory=list)
    judged: int = 0  # cases the right/wrong lists rest on
    shrunk: bool = True

    @property
    def ok(self):
        return not self.problems and not self.wrong


@dataclass
class ConformanceReport:
    """The kit's verdict. ``ok``: at least one function checked, none failing (with ``strict``, no warnings either),
    and the check finished in its time limit. ``failures``: one :class:`Finding` per failing function;
    ``warnings``: sentences (an argument changed in place while the values are right); ``not_implemented``:
    functions that return only None; ``not_checked``: {function: why}; ``missing``: functions not defined;
    ``incomplete``: why the check stopped early (its time limit), else None. ``exit_status``: 0 conforms,
    1 does not (a template whose functions all return None included), 3 incomplete (2, a usage or import error,
    is raised as :class:`ImplementationError`)."""

    target: str
    convention: str
    cell: str
    checked: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    examples: int = 0
    warnings: list = field(default_factory=list)
    not_implemented: list = field(default_factory=list)
    not_checked: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    incomplete: str | None = None
    strict: bool = False

    @property
    def ok(self):
        return (bool(self.checked) and not self.failures and self.incomplete is None
                and not (self.strict and self.warnings))

    @property
    def exit_status(self):
        if self.ok:
            return 0
        return 3 if self.incomplete is not None and not self.failures else 1

    @property
    def verdict(self):
        if self.failures or (self.strict and self.warnings):
            return "DOES NOT CONFORM"
        if self.incomplete is not None:
            return "INCOMPLETE"
        if not self.checked:
            return "NOT IMPLEMENTED YET" if self.not_implemented else "NOTHING CHECKED"
        n = len(self.warnings)
        return "CONFORMS" + (f", with {n} warning{'s' if n > 1 else ''}" if n else "")

    def __str__(self):
        lines = textwrap.wrap(f"{self.target}: {self.verdict} ({self.convention} convention, {self.cell}), "
                              f"{self.examples} examples per function", width=WIDTH, subsequent_indent="    ")
        failed = {f.function for f in self.failures}
        status = []
        for name in self.checked:
            status.append(f"{name} {'FAIL' if name in failed else 'ok'}")
        status += [f"{name} not checked" for name in self.not_checked]
        lines += textwrap.wrap("checked: " + (", ".join(status) or "nothing"), width=WIDTH, subsequent_indent="    ")
        if self.missing:
            lines += textwrap.wrap("missing: " + ", ".join(self.missing), width=WIDTH, subsequent_indent="    ")
        for name in self.not_implemented:
            lines.append(f"{name}: not implemented (returns None)")
        for name, why in self.not_checked.items():
            lines += textwrap.wrap(f"{name}: not checked: {why}", width=WIDTH, subsequent_indent="    ")
        if self.incomplete:
            lines += textwrap.wrap(f"incomplete: {self.incomplete}", width=WIDTH, subsequent_indent="    ")
        for text in self.warnings:
            lines += textwrap.wrap(f"warning{' (--strict: a failure)' if self.strict else ''}: {text}", width=WIDTH,
                                   subsequent_indent="    ")
        for text in self.notes:
            lines += textwrap.wrap(f"note: {text}", width=WIDTH, subsequent_indent="    ")
        causes = {}
        for f in self.failures:
            lines.append(f"- {f.function}:")
            details = []
            if f.case is not None:
                kind = "smallest failing case" if f.shrunk else "failing case (not shrunk)"
                details.append(f"{kind}: {describe_case(f.case)}")
            details += f.problems
            if f.wrong:
                wrong = ", ".join(f"{k} (off by {v:.2g} of its scale)" for k, v in f.wrong.items())
                basis = (f" [{f.judged} cases: that one and random ones of its sizes]" if f.judged > 1 else "")
                details.append(f"wrong: {wrong}" + (f"; right: {', '.join(f.right)}" if f.right else "") + basis)
            if f.fd_wrong:
                details.append(f"finite differences of your own forward disagree with your {', '.join(f.fd_wrong)}")
            elif f.fd_checked and f.wrong:
                details.append("your gradients agree with finite differences of your own forward: the forward is "
                               "what differs from the convention")
            if f.steps:
                details.append(f.steps)
            details += f.notes
            if f.cause:  # said once in full
                details.append(f"likely cause: {f.cause}" if f.cause not in causes else
                               f"likely cause: the same as for {causes[f.cause]}")
                causes.setdefault(f.cause, f.function)
            for text in details:
                lines += textwrap.wrap(text, width=WIDTH, initial_indent="    ", subsequent_indent="        ")
        return "\n".join(line for line in lines if line)


def describe_case(case, width=60):
    if "text" in case:  # already described (the layer convention)
        return case["text"]
    parts = [" ".join(f"{k}={v}" for k, v in case["sizes"].items())]
    for k, v in case.items():
        if k == "sizes" or not isinstance(v, np.ndarray):
            continue
        text = np.array2string(v, precision=3, separator=",", suppress_small=True, max_line_width=10_000)
        text = " ".join(text.split())
        parts.append(f"{k}={text if len(text) <= width else text[: width - 3] + '...'}")
    return "; ".join(parts)


# -- the search ------------------------------------------------------------------------------------------
class _Enough(Exception):
    pass


def search(condition, strategy, max_examples, seed, shrink_budget=None, shrink=True):
    """The smallest case hypothesis finds for which ``condition`` holds, or None. Shrinking stops after
    ``shrink_budget`` more calls of ``condition``; with ``shrink=False`` the first failing case is returned as drawn
    (for a caller that shrinks it itself). What ``condition`` raises (:class:`Stop`) ends the search at once. A
    condition whose answer changes for the same case makes hypothesis give up: that is raised as
    ``HypothesisException`` for the caller to report."""
    state = {"best": None, "calls": 0}
    shrink_budget = SHRINK_BUDGET if shrink_budget is None else shrink_budget
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    def budgeted(case):
        if state["best"] is not None:
            state["calls"] += 1
            if state["calls"] > shrink_budget:
                raise _Enough
        if condition(case):
            state["best"] = case  # the shrinker only ever accepts a smaller failing case
            return True
        return False

    try:
        return find(strategy, budgeted, settings=settings(max_examples=max_examples, database=None, deadline=None,
                                                          phases=phases, suppress_health_check=list(HealthCheck)),
                    random=random.Random(seed))
    except NoSuchExample:
        return None
    except _Enough:
        return state["best"]


SearchGaveUp = HypothesisException


def shrink_case(case, fails, sub_case, budget=200):
    """A smaller failing case: each size as small as it can go (``sub_case(case, sizes)`` keeps the leading part of
    every array), then the values rounded to one decimal. Values are never made 0: in the smallest case every
    quantity stays non-trivial. ``fails`` may raise :class:`Stop`."""
    best, calls, improved = case, 0, True
    while improved and calls < budget:
        improved = False
        for key in best["sizes"]:
            for smaller in range(1, best["sizes"][key]):
                candidate = sub_case(best, {**best["sizes"], key: smaller})
                calls += 1
                if fails(candidate):
                    best, improved = candidate, True
                    break
    rounded = {k: (np.where(np.round(v, 1) == 0, np.copysign(0.1, v), np.round(v, 1)) if isinstance(v, np.ndarray)
                   else v) for k, v in best.items()}
    return rounded if fails(rounded) else best


@contextlib.contextmanager
def hypothesis_storage():
    """While the block runs, hypothesis keeps what it writes (its example database, its cache of constants found in
    local modules) in a temporary folder, not in ``./.hypothesis`` of whatever folder a learner runs ``check`` from."""
    with tempfile.TemporaryDirectory(prefix="rnn-scratch-hypothesis-") as folder:
        previous = os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY")
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = folder  # read on hypothesis's first access to its storage
        try:
            from hypothesis.configuration import set_hypothesis_home_dir
        except ImportError:  # an older or newer hypothesis: the environment variable alone
            set_hypothesis_home_dir = None
        if set_hypothesis_home_dir is not None:
            set_hypothesis_home_dir(folder)
        try:
            yield folder
        finally:
            if set_hypothesis_home_dir is not None:
                set_hypothesis_home_dir(None)
            if previous is None:
                os.environ.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)
            else:
                os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = previous


# -- loading the learner's code --------------------------------------------------------------------------
def sandbox_target(target):
    """(what :class:`.sandbox.Sandbox` loads, a label for the report, the file's path or None)."""
    if isinstance(target, types.ModuleType):
        name = getattr(getattr(target, "__spec__", None), "name", None)
        if name and name != "__main__" and sys.modules.get(name) is target:
            return {"how": "name", "name": name, "sys_path": [p for p in sys.path if p]}, \
                getattr(target, "__file__", None) or name, None
        path = getattr(target, "__file__", None)
        if path and os.path.isfile(path):
            return {"how": "path", "path": os.path.abspath(path)}, path, os.path.abspath(path)
        return target, getattr(target, "__name__", repr(target)), None
    if not isinstance(target, (str, os.PathLike)):
        label = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
        if isinstance(target, __import__("functools").partial):
            label = f"partial({getattr(target.func, '__qualname__', repr(target.func))}, ...)"
        return target, str(label), None
    text = os.fspath(target)
    attr = None
    if ":" in text and not (len(text) > 1 and text[1] == ":" and os.path.isabs(text)):
        text, attr = text.rsplit(":", 1)
        if not attr.isidentifier():
            raise ImplementationError(f"{target}: after ':' comes an attribute name, got {attr!r}")
    looks_like_path = text.endswith(".py") or os.sep in text or (os.altsep and os.altsep in text) or \
        os.path.exists(text)
    if looks_like_path:
        try:
            mode = os.stat(text).st_mode
        except FileNotFoundError:
            raise ImplementationError(f"no such file: {text}") from None
        except OSError as exc:
            raise ImplementationError(f"cannot read {text}: {exc.strerror}") from None
        if stat.S_ISDIR(mode):
            hint = os.path.join(text, "rnn_layers.py")
            raise ImplementationError(f"{text} is a folder; give the .py file that defines the functions"
                                      + (f", e.g. {hint}" if os.path.isfile(hint) else ""))
        if not stat.S_ISREG(mode):
            raise ImplementationError(f"{text} is not a regular file (a device, pipe or socket); give a .py file")
        if text.endswith(".ipynb"):
            raise ImplementationError(f"{text} is a notebook; the kit checks a .py file (CS231n's functions live in "
                                      f"cs231n/rnn_layers.py)")
        path = os.path.abspath(text)
        return {"how": "path", "path": path, "attr": attr}, text + (f":{attr}" if attr else ""), path
    if not all(part.isidentifier() for part in text.split(".")):
        raise ImplementationError(f"{text!r} is neither a file nor a module name")
    return {"how": "name", "name": text, "attr": attr}, text + (f":{attr}" if attr else ""), None


def open_sandbox(target, *, names=(), call_limit=DEFAULT_CALL_LIMIT_S, time_limit=DEFAULT_TIME_LIMIT_S):
    """A started :class:`.sandbox.Sandbox` for ``target`` and its label; :class:`ImplementationError` with one
    clear sentence when the target cannot be loaded (Python 2 code, a missing module, exit() at import...)."""
    spec, label, path = sandbox_target(target)
    try:
        sandbox = Sandbox(spec, call_limit=call_limit, time_limit=time_limit, names=names)
    except SandboxError as exc:
        raise ImplementationError(f"{label}: {exc}") from None
    try:
        sandbox.start()
    except SandboxError as exc:
        sandbox.close()
        raise ImplementationError(load_error_text(label, path, spec, exc)) from None
    return sandbox, label


def load_error_text(label, path, spec, exc):
    info = exc.info
    kind = info.get("type", "")
    where = info.get("where", "")
    at = f" ({where})" if where else ""
    if info.get("python2"):
        p2 = info["python2"]
        return (f"{p2['file']} is Python 2 code: line {p2['line']} ({p2['text']}) is {p2['what']}. The kit runs "
                f"Python {sys.version_info.major}.{sys.version_info.minor}: port the file to Python 3 "
                f"(print(...), range for xrange, 'except E as e')")
    if kind in ("SyntaxError", "IndentationError", "TabError"):
        return f"cannot import {label}: {kind} at {where}: {info.get('message', '')}"
    if kind == "timeout":
        return (f"importing {label} did not finish within {info.get('limit', 0):g} s (an endless loop, or long work at "
                f"the top of the file?)")
    if kind == "died":
        return f"importing {label} {info.get('text', 'ended the process')}"
    if kind == "protocol":
        return f"importing {label} {exc}"
    if kind == "SystemExit":
        code = info.get("exit_code")
        shown = "" if code is None else repr(code)
        return (f"importing {label} called exit({shown}){at}: code at the top level runs when the file is imported; "
                f"put script code under `if __name__ == \"__main__\":`")
    message = " ".join(str(info.get("message", "")).split())
    if kind == "ModuleNotFoundError" and info.get("missing_module"):
        missing = info["missing_module"]
        text = f"cannot import {label}: it imports {missing!r}{at}, which "
        top = missing.split(".")[0]
        if info.get("top_installed"):
            version = f" {info['top_version']}" if info.get("top_version") else ""
            text += (f"does not exist in the installed {top}{version}: the file was written for another version of "
                     f"{top}; import what it needs from where this version has it")
        elif path is not None:
            folder = os.path.dirname(path)
            package = _package_root(path)
            tried = folder if package is None else f"{folder} and {package}"
            text += f"is neither beside it (looked in {tried}) nor installed. "
            if package is None and os.path.basename(folder) == top:
                text += (f"{folder} has no __init__.py, so it is not the package {top}: add an empty __init__.py "
                         f"there (CS231n's folder has one)")
            else:
                text += f"Put {top}.py (or the {top}/ folder) beside it, or install it"
        else:
            text += "is not installed (or not on sys.path)"
        if info.get("python2"):
            text += f"; {info['python2']}"
        return text
    if kind == "ImportError" and "relative import" in message:
        folder = os.path.dirname(path) if path else "its folder"
        return (f"cannot import {label}: it uses a relative import (from .x import ...){at}, but {folder} has no "
                f"__init__.py, so it is not a package: add an empty __init__.py there (CS231n's cs231n/ folder has "
                f"one), or write `from x import ...`")
    if kind == "LookupError":
        return f"{label}: {message}"
    text = f"cannot import {label}: {kind}: {message[:300]}{at}"
    if info.get("python2"):
        text += f"; {info['python2']}"
    return text


def _package_root(path):
    folder = os.path.dirname(path)
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        return None
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder = os.path.dirname(folder)
    return folder
