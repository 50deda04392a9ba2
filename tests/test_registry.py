"""A cell is one module plus its registry entry: nothing else lists cells by hand, the package has no import
cycle, the Cell record describes parameters without allocating, and register_cell takes a user's own cell (and
refuses a malformed one, leaving the registry as it was)."""

import ast
import inspect
import os
import sys

import numpy as np
import pytest

import rnn_scratch as rs
from rnn_scratch.functional import (
    CELLS,
    Cell,
    FastPath,
    Param,
    cell_choices,
    get_cell,
    register_cell,
    sequence_backward,
    sequence_forward,
    unregister_cell,
)
from rnn_scratch.functional.lstm import LSTMFast
from rnn_scratch.functional.rnn import RNNFast
from rnn_scratch.gradcheck import check_layer
from rnn_scratch.layers import make_layer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILT_IN = frozenset(cell_choices())  # names and aliases (lower case; class names such as "LSTM" are not names)
# Places still listing cells by hand, each to be removed by the issue named; the test fails when one no longer
# does (then remove it here).
# files that stand for a user's own code, whose cells are theirs and not the registry's (as tests/conformance/
# holds learners' files): a home-made NumPy layer for the property suite, and the test that runs it per cell
NOT_OURS = {os.path.join("tests", "properties", "mini.py"), os.path.join("tests", "test_properties.py")}
EXPECTED = {  # file: why it names cells (each must still do so: the list cannot go stale)
    "rnn_scratch/testing/conformance.py": "CS231n's convention: the assignment's own two function families "
                                          "(rnn_*, lstm_*), CS231n's names rather than the registry's cells",
    "tests/test_conformance.py": "the CS231n convention's tests, per CS231n function family",
}


def hand_listed(source, names=BUILT_IN):
    """[(line, what)] for each place in ``source`` that lists cells by hand: a tuple, list, set or dict display
    with two or more cell names (or aliases) among its elements or keys, or a variable compared with a cell name
    (``cell == "lstm"``: behaviour chosen by name). A cell record naming its own aliases (``aliases=(...)``) is
    not a list of cells."""
    def name(node):
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names

    tree = ast.parse(source)
    own = {id(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call) for k in node.keywords
           if k.arg == "aliases"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and id(node) not in own:
            listed = [e.value for e in (node.keys if isinstance(node, ast.Dict) else node.elts) if name(e)]
            if len(listed) >= 2:
                found.append((node.lineno, f"lists {listed}"))
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            sides = (node.left, *node.comparators)
            if any(name(s) for s in sides) and any(isinstance(s, (ast.Name, ast.Attribute)) for s in sides):
                found.append((node.lineno, f"compares with {next(s.value for s in sides if name(s))!r}"))
    return found


def _project_files():
    for top in ("rnn_scratch", "tests", "benchmarks", "examples"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not (top == "tests" and d == "conformance")]
            for f in files:
                if f.endswith(".py") and os.path.relpath(os.path.join(folder, f), ROOT) not in NOT_OURS:
                    path = os.path.join(folder, f)
                    yield os.path.relpath(path, ROOT).replace(os.sep, "/"), path


def test_the_scan_finds_hand_listed_cells():
    assert hand_listed('CELLS = ("lstm", "gru")') and hand_listed('x = {"rnn": 1, "gru": 2}')
    assert hand_listed('two = 2 if cell == "lstm" else 1') and hand_listed('if "gru" != cfg.cell: pass')
    assert not hand_listed('layer = make_layer("lstm", 3, 4)') and not hand_listed('def f(cell="gru"): pass')
    assert not hand_listed('"""a docstring naming lstm, gru and rnn"""') and not hand_listed('("LSTM", "GRU")')
    assert not hand_listed('assert canonical_cell_name("rnn") == "rnn_tanh"')
    assert not hand_listed('C = Cell("x", aliases=("rnn", "gru"))') and hand_listed('Cell("x", cells=("rnn", "gru"))')


def test_no_module_lists_cells_by_hand():
    """Everything that needs "all cells" iterates functional.CELLS; a cell added to the registry alone reaches every
    layer, command, benchmark, strategy and test. (tests/conformance/ holds learners' files, not ours.)"""
    found, still = [], set()
    for rel, path in _project_files():
        hits = hand_listed(open(path, encoding="utf-8").read())
        if rel in EXPECTED:
            still.add(rel) if hits else None
        else:
            found += [f"{rel}:{line}: {what}" for line, what in hits]
    assert not found, "cells listed by hand (iterate rnn_scratch.functional.CELLS instead):\n" + "\n".join(found)
    assert still == set(EXPECTED), f"no longer listing cells (remove from EXPECTED): {set(EXPECTED) - still}"


def _imports(path, module, is_package, modules):
    """The package's modules that ``module`` imports anywhere in its file (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module if is_package else module.rsplit(".", 1)[0]
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
            targets = [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in modules and t != module:
                out.add(t)
    return out


def import_cycles(root=os.path.join(ROOT, "rnn_scratch")):
    """The cycles (strongly connected sets of two or more modules) of the package's import graph."""
    modules = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                name = os.path.relpath(os.path.join(folder, f), os.path.dirname(root))[:-3].replace(os.sep, ".")
                modules[name.removesuffix(".__init__")] = os.path.join(folder, f)
    graph = {m: _imports(p, m, p.endswith("__init__.py"), modules) for m, p in modules.items()}
    index, low, stack, cycles = {}, {}, [], []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle(tmp_path):
    assert import_cycles() == []  # (issue 24 removed the last: conformance <-> layer_conformance)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")  # a cycle through a function-level import
    assert import_cycles(str(pkg)) == [frozenset({"pkg.a", "pkg.b"})]


def test_the_walk_from_lstm_forward_to_the_gate_maths():
    """LSTM.forward reaches the gate maths (LSTMFast.forward_step) in 7 frames, as before the driver."""
    walks = []
    real = LSTMFast.forward_step

    def spy(self, *args):
        frames = [f.function for f in inspect.stack(0)[1:]]
        walks.append(frames[: frames.index("forward") + 1][::-1] + ["forward_step"])
        return real(self, *args)

    LSTMFast.forward_step = spy
    try:
        rs.LSTM(2, 3)(np.zeros((2, 1, 2), "float32"))
    finally:
        LSTMFast.forward_step = real
    assert walks[0] == ["forward", "forward_states", "stack_forward", "sequence_forward", "map", "_forward_rows",
                        "forward_step"]


@pytest.mark.parametrize("cell", list(CELLS))
def test_the_record_describes_every_parameter(cell):
    """Shapes and hidden-unit axes from the record alone match the layer built from it (2 layers, both directions)."""
    record = CELLS[cell]
    layer = make_layer(cell, 3, 5, num_layers=2, bidirectional=True)
    for layer_index, in_size in ((0, 3), (1, 10)):
        for direction in (0, 1):
            params = layer.cell_params(layer_index, direction)
            assert {k: v.shape for k, v in params.items()} == record.param_shapes(in_size, 5)
    for p in record.params:
        blocks = p.hidden_blocks(record.num_gates)
        assert len(blocks) == len(p.shape) and all(b is None or b >= 1 for b in blocks)
        assert [d == "I" for d in p.shape] == [b is None for b in blocks]
    assert rs.RNNBase(cell, 3, 5, bias=False).cell_params(0, 0).keys() == {p.name for p in record.params}
    assert record.step_forward and record.memory and record.state_names[0] == "h"


def test_every_kernel_file_belongs_to_a_cell():
    """A kernel file no registered cell names would go unrun (tests/test_kernels_on_cpu.py runs the registry's)."""
    folder = os.path.join(ROOT, "rnn_scratch", "functional", "kernels")
    files = {os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".cu")}
    named = {os.path.normpath(cell.kernel.path) for cell in CELLS.values() if cell.kernel is not None}
    assert files and files == named, (files, named)


def test_kernel_files_are_shipped():
    import configparser

    data = configparser.ConfigParser()
    data.read(os.path.join(ROOT, "setup.cfg"))
    patterns = data["options.package_data"]["rnn_scratch"]
    for cell in CELLS.values():
        if cell.kernel is not None:
            rel = os.path.relpath(cell.kernel.path, os.path.join(ROOT, "rnn_scratch")).replace(os.sep, "/")
            assert os.path.exists(cell.kernel.path) and f"{os.path.dirname(rel)}/*.cu" in patterns
            assert f"void {cell.kernel.forward}(" in cell.kernel.source
            assert f"void {cell.kernel.backward}(" in cell.kernel.source


# -- register_cell -------------------------------------------------------------------------------------------
USER_CELL = '''
"""A user's own cell, in their own module: a leaky tanh RNN, h_t = (1 - a) h_{t-1} + a tanh(W x_t + U h_{t-1} + b)
with a = 1/2; only the step pair, so the step loop runs sequences."""
from typing import NamedTuple

import numpy as np

from rnn_scratch.functional import Cell, Param

A = 0.5


class Cache(NamedTuple):
    x: object
    h_prev: object
    n: object
    params: dict


def step_forward(x_t, state, params):
    (h_prev,) = state
    a = x_t @ params["weight_ih"].T + h_prev @ params["weight_hh"].T
    if params.get("bias") is not None:
        a = a + params["bias"]
    n = np.tanh(a)
    return ((1 - A) * h_prev + A * n,), Cache(x_t, h_prev, n, params)


def step_backward(dstate, cache):
    (dh,) = dstate
    da = A * dh * (1 - cache.n ** 2)
    grads = {"weight_ih": da.T @ cache.x, "weight_hh": da.T @ cache.h_prev}
    if cache.params.get("bias") is not None:
        grads["bias"] = da.sum(axis=0)
    return da @ cache.params["weight_ih"], ((1 - A) * dh + da @ cache.params["weight_hh"],), grads


LEAKY = Cell("leaky_rnn", ("h",), ("a",), (Param("weight_ih", ("H", "I")), Param("weight_hh", ("H", "H")),
                                          Param("bias", ("H",), bias=True, init="zeros")),
             step_forward, step_backward, memory=(2, 1), aliases=("leaky",))
'''


def _user_module(tmp_path):
    (tmp_path / "my_cells.py").write_text(USER_CELL)
    sys.path.insert(0, str(tmp_path))
    try:
        import my_cells
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_cells", None)
    return my_cells


def test_a_user_cell_from_its_own_module(tmp_path):
    from rnn_scratch.cli import build_parser
    from rnn_scratch.testing import LayerConfig

    cell = _user_module(tmp_path).LEAKY
    before = list(CELLS)
    register_cell(cell)
    try:
        assert get_cell("LEAKY") is cell and list(CELLS) == [*before, "leaky_rnn"]
        assert "leaky" in build_parser().parse_args(["gradcheck", "--cell", "leaky"]).cell
        layer = LayerConfig("leaky_rnn", 2, 3, num_layers=2, bidirectional=True).build(seed=0, check_finite=False)
        assert isinstance(layer, rs.RNNBase) and "RNNBase('leaky_rnn', 2, 3" in repr(layer)
        report = check_layer(layer, np.random.default_rng(0).standard_normal((4, 3, 2)), lengths=np.array([4, 1, 3]))
        assert report.passed, str(report)
        full = layer(np.ones((5, 2, 2)))[0]
        layer.memory = "checkpoint"
        assert np.allclose(layer(np.ones((5, 2, 2)))[0], full)
        with pytest.raises(ValueError, match=r"cell names \['leaky', 'leaky_rnn'\] are taken"):
            register_cell(cell)
    finally:
        unregister_cell("leaky")
    assert list(CELLS) == before and "leaky" not in cell_choices()


def _bad(**changes):
    base = _leaky_fields()
    base.update(changes)
    return Cell(**base)


def _leaky_fields():
    import dataclasses

    from rnn_scratch.functional import RNN_TANH_CELL

    return {f.name: getattr(RNN_TANH_CELL, f.name) for f in dataclasses.fields(Cell)} | {"name": "probe",
                                                                                             "aliases": ()}


class _WrongSign(RNNFast):
    def forward_step(self, xp, p, a, t, a_hh):
        super().forward_step(xp, p, a, t, -a_hh)


def _wrong_state(x_t, state, params):
    new, cache = get_cell("gru").step_forward(x_t, state, params)
    return (new[0][:, :-1],), cache


@pytest.mark.parametrize("record, error, message", [
    ("not a cell", TypeError, "cell must be a rnn_scratch.functional.Cell record"),
    (_bad(name="Bad Name!"), ValueError, "name must be a lower-case identifier"),
    (_bad(name="lstm"), ValueError, r"cell names \['lstm'\] are taken"),
    (_bad(aliases=("rnn",)), ValueError, r"cell names \['rnn'\] are taken"),
    (_bad(state_names=("c", "h")), ValueError, "state_names must be a tuple of distinct identifiers starting with"),
    (_bad(params=(Param("weight_ih", ("G*X", "I")),)), ValueError, "each axis must be 'I', 'H', 'G\\*H' or 'k\\*H'"),
    (_bad(params=(Param("weight_l0", ("H",)),)), ValueError, "must be a lower-case identifier not ending in _l<k>"),
    (_bad(step_forward=None), TypeError, "step_forward must be callable"),
    (_bad(fast=object()), TypeError, "fast must be a FastPath or None"),
    (_bad(memory=(7,)), ValueError, "memory must be a pair of integers"),
    (_bad(reference="torch.nn.RNN"), TypeError, "reference must be a TorchModule, a TorchStep or None"),
    (_bad(gate_names=("r", "z", "n"), step_forward=_wrong_state), ValueError,
     r"step_forward's new state part 'h' must have shape \(B, H\) = \(2, 3\), got \(2, 2\)"),
    (_bad(step_backward=lambda d, c: (np.zeros((2, 2)), d, {})), ValueError, "step_backward's dparams must be a dict "
                                                                            "with keys"),
    (_bad(fast=_WrongSign("tanh")), ValueError, "its fast path disagrees with its step loop in out"),
    (_bad(fast=type("Bare", (FastPath,), {"order": ("a",)})()), ValueError, "its fast path failed on a small case"),
    # found by the hostile probe of this change: what the record's fields return, not only their shapes
    (_bad(params=(Param("weight_ih", ("G*H", "I"), init=lambda rng, shape, I, H: np.zeros(3)),
                  *_leaky_fields()["params"][1:])), ValueError,
     r"parameter 'weight_ih': its init returned shape \(3,\), expected finite values of shape \(3, 2\)"),
    (_bad(step_forward=lambda x, s, p: (lambda n, c: ((n[0].astype(np.int64),), c))(
        *get_cell("rnn_tanh").step_forward(x, s, p))), ValueError,
     "step_forward's new state part 'h' must be a float64 array for float64 inputs .*got int64"),
    (_bad(step_backward=lambda d, c: (lambda dx, dp, g: (2 * dx, dp, g))(*get_cell("rnn_tanh").step_backward(d, c))),
     ValueError, "step_backward's dx_t disagrees with central differences of step_forward"),
    (_bad(min_hidden_size="a"), ValueError, "min_hidden_size must be an integer in 1..64"),
    (_bad(aliases=("probe",)), ValueError, "aliases must be a tuple of distinct lower-case identifiers other than"),
    (_bad(step_derivatives=5), TypeError, "step_derivatives must be callable or None"),
    (_bad(float32_in_distribution="yes"), TypeError, "float32_in_distribution must be True or False"),
    (_bad(params=(Param("weight_ih", ("100000000000000000000*H", "I")),)), ValueError,
     r"k in 'k\*H' must be at most 64"),
])
def test_register_cell_refuses_a_malformed_record_and_registers_nothing(record, error, message):
    before, aliases = dict(CELLS), dict(rs.functional.ALIASES)
    with pytest.raises(error, match=message):
        register_cell(record)
    assert CELLS == before and rs.functional.ALIASES == aliases


def test_the_packages_own_cells_cannot_be_replaced():
    """replace=True on 'lstm' made rs.LSTM build the replacement (a one-state cell: its forward returned h, not
    (h, c)); found by the hostile probe of issue 25."""
    before = dict(CELLS)
    with pytest.raises(ValueError, match="cell 'lstm' is one of the package's own"):
        register_cell(_bad(name="lstm"), replace=True)
    assert CELLS == before and get_cell("lstm").num_states == 2


def test_a_cell_without_a_fast_path_runs_its_step_loop():
    cell = _bad(fast=None)
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s) for k, s in cell.param_shapes(2, 3).items()}
    x, state = rng.standard_normal((4, 2, 2)), (rng.standard_normal((2, 3)),)
    out, _, cache = sequence_forward(cell, x, state, params)
    fast_out, _, _ = sequence_forward("rnn_tanh", x, state, params)
    assert np.allclose(out, fast_out) and type(cache).__name__ == "ReferenceCache"
    assert sequence_backward(cell, np.ones_like(out), None, cache)[0].shape == x.shape


@pytest.mark.parametrize("features", [2, 3, 8])
def test_layernorm_reference_is_torchs_layer_norm(features):
    """The LayerNorm LSTM's torch reference writes LN out; it is torch's own layer_norm, values and gradients."""
    torch = pytest.importorskip("torch")
    from rnn_scratch.functional import layernorm_lstm

    rng = np.random.default_rng(features)
    I, H, B = 3, features, 4
    params = {k: torch.tensor(v, requires_grad=True) for k, v in {
        "weight_ih": rng.standard_normal((4 * H, I)), "weight_hh": rng.standard_normal((4 * H, H)),
        "bias": rng.standard_normal(4 * H), "gamma_ih": 1 + rng.standard_normal(4 * H),
        "gamma_hh": 1 + rng.standard_normal(4 * H), "gamma_c": 1 + rng.standard_normal(H),
        "beta_c": rng.standard_normal(H)}.items()}
    x, h, c = (torch.tensor(rng.standard_normal((B, n)), requires_grad=True) for n in (I, H, H))

    def native(x_t, state, p):
        from torch.nn.functional import layer_norm as ln

        h, c = state
        a = ln(x_t @ p["weight_ih"].T, (4 * H,), p["gamma_ih"], eps=layernorm_lstm.EPS) + ln(
            h @ p["weight_hh"].T, (4 * H,), p["gamma_hh"], eps=layernorm_lstm.EPS) + p["bias"]
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        c_t = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        n = ln(c_t, (H,), p["gamma_c"], p["beta_c"], eps=layernorm_lstm.EPS)
        return torch.sigmoid(a_o) * torch.tanh(n), c_t

    leaves = [x, h, c, *params.values()]
    results = []
    for step in (layernorm_lstm._torch_step, native):
        h_t, c_t = step(x, (h, c), params)
        loss = (h_t * torch.linspace(-1, 1, H)).sum() + (c_t**2).sum()
        results.append([h_t, c_t, *torch.autograd.grad(loss, leaves)])
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
