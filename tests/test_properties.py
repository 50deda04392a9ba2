"""The reference-free property suite: torch's layers, ours (every registered cell) and a home-made one hold every
property; every planted mistake is caught by the properties its table row names; failures shrink and say which
relation broke; what a user hands the suite cannot crash it."""

import os
import time

import numpy as np
import pytest
import torch

from rnn_scratch.functional import CELLS
from rnn_scratch.layers import make_layer
from rnn_scratch.testing import examples
from rnn_scratch.testing.properties import (
    PROPERTY_NAMES,
    Call,
    RelabelUnavailable,
    RnnScratchAdapter,
    TorchAdapter,
    UsageError,
    adapters,
    check_properties,
    relabel_units,
    swap_directions,
)
from rnn_scratch.testing.properties.core import Case, Context
from rnn_scratch.testing.properties.relations import directional_check

from .properties.mini import Mini
from .properties.mutants import CAUGHT_BY_README_ROW, MUTANTS
from .test_cli import run_inline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRUCTURES = {  # between them: multi-layer, bidirectional, batch_first, with and without bias
    "2 layers, batch_first": dict(num_layers=2, batch_first=True),
    "2 layers, bidirectional, no bias": dict(num_layers=2, bidirectional=True, bias=False),
}
TORCH = {"RNN tanh": (torch.nn.RNN, {}), "RNN relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
         "LSTM": (torch.nn.LSTM, {}), "GRU": (torch.nn.GRU, {})}


def _expected_not_applicable(bidirectional, memoryless):
    """The properties that do not apply by structure alone: nothing else may be left out."""
    return {"bidirectional" if not bidirectional else "split"} | (set() if memoryless else {"zero-recurrent"})


def _assert_holds(report, bidirectional, memoryless):
    assert report.ok, str(report)
    na = {r.name for r in report.results if r.status == "n/a"}
    assert na == _expected_not_applicable(bidirectional, memoryless), str(report)
    assert all(r.examples >= 1 for r in report.results if r.status == "ok")


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("name", TORCH)
def test_torch_layers_hold_every_property(name, structure):
    cls, kw = TORCH[name]
    report = check_properties(lambda I, H: cls(I, H, **kw, **STRUCTURES[structure]), adapter="torch",
                              max_examples=examples(4), label=f"torch.nn.{name}")
    _assert_holds(report, STRUCTURES[structure].get("bidirectional", False), cls is torch.nn.RNN)
    assert report.dtypes == ("float64", "float32")


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("cell", list(CELLS))
def test_our_layers_hold_every_property(cell, structure):
    """Every cell of the registry (a new cell is included as soon as it is registered)."""
    report = check_properties(lambda I, H: make_layer(cell, I, H, **STRUCTURES[structure]), adapter="rnn_scratch",
                              max_examples=examples(3), label=cell)
    layer = make_layer(cell, 2, 3)
    _assert_holds(report, STRUCTURES[structure].get("bidirectional", False),
                  RnnScratchAdapter(layer).memoryless)


class StatefulMini(Mini):
    """The home-made layer through the protocol's other form: ``backward(dout, dstate)`` of its last forward."""

    def forward(self, x, state, lengths):
        self._last = (x.copy(), state, lengths)
        return super().forward(x, state, lengths)

    def backward(self, dout, dstate):
        return Mini.gradients(self, *self._last, dout, dstate)

    gradients = None


@pytest.mark.parametrize("cls", [Mini, StatefulMini], ids=["gradient function", "backward"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_home_made_layer_holds_every_property(cell, cls):
    report = check_properties(lambda I, H: cls(cell, I, H, bidirectional=cell != "gru"), adapter="custom",
                              max_examples=examples(3))
    _assert_holds(report, cell != "gru", cell == "rnn")


# -- the mutation score ----------------------------------------------------------------------------------
def test_the_mutation_score():
    """At least 20 planted mistakes, each caught by at least one property; every property but dtype-free ones
    catches something; the README's table is this table."""
    assert len(MUTANTS) >= 20 and len({m.name for m in MUTANTS}) == len(MUTANTS)
    assert all(m.caught_by and set(m.caught_by) <= set(PROPERTY_NAMES) for m in MUTANTS)
    catching = {p for m in MUTANTS for p in m.caught_by}
    assert catching == set(PROPERTY_NAMES), set(PROPERTY_NAMES) - catching  # every property earns its place
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    for m in MUTANTS:
        assert CAUGHT_BY_README_ROW(m) in readme, CAUGHT_BY_README_ROW(m)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_is_caught_by_the_properties_its_row_names(mutant):
    report = check_properties(mutant.factory, adapter=mutant.adapter, properties=mutant.caught_by,
                              max_examples=examples(40), shrink_limit=15)
    broke = {r.name for r in report.results if r.status == "FAIL"}
    assert broke == set(mutant.caught_by), str(report)


def test_a_failure_shrinks_to_the_smallest_case_and_says_which_relation_broke():
    m = next(m for m in MUTANTS if m.name == "rnn batch coupling")
    report = check_properties(m.factory, adapter=m.adapter, properties=["batch"], max_examples=20)
    r = report.result("batch")
    assert r.status == "FAIL" and r.shrunk and not report.ok
    assert r.case.sizes == {"I": 1, "H": 1, "T": 1, "B": 2}  # two rows: the fewest that can couple
    text = str(report)
    assert "BREAKS 1 of 1 properties" in text and "- batch: batch rows are independent" in text
    assert "smallest failing case: I=1 H=1 T=1 B=2 (wide values)" in text
    assert "broke (float64) for each row run alone (parameter gradients summed): " in text
    assert "what it suggests: " in text and "held: " in text
    assert "weight_hh_l0=" in text and "dh_n=" in text  # every array of the case, for a person to replay


def test_a_wrong_gradient_is_named_by_the_directional_derivative_along_each_input():
    m = next(m for m in MUTANTS if m.name == "rnn dW_hh from h_t")
    report = check_properties(m.factory, adapter=m.adapter, properties=["directional"], max_examples=20)
    assert "these gradients disagree: d weight_hh_l0" in str(report), str(report)
    assert "d weight_ih_l0" in str(report).split("these agree:")[1]


# -- the parts -------------------------------------------------------------------------------------------
def test_relabelling_maps_every_parameter_and_undoes_itself():
    layer = make_layer("lstm", 2, 3, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    params = {k: np.asarray(v) for k, v in layer.state_dict().items()}
    rng = np.random.default_rng(0)
    perms = {(l, d): rng.permutation(3) for l in range(2) for d in range(2)}
    kw = dict(hidden_size=3, num_gates=4, num_directions=2)
    moved = relabel_units(params, perms, **kw)
    assert all(not np.array_equal(moved[k], params[k]) for k in params)  # every parameter holds units
    back = relabel_units(moved, adapters.inverse_perms(perms), **kw)
    assert all(np.array_equal(back[k], params[k]) for k in params)
    # the relabelled layer's state is the old one's, permuted: new unit k is old unit perms[l, d][k]
    x = rng.standard_normal((4, 2, 2))
    _, (h, _) = layer(x)
    layer.load_state_dict(moved)
    _, (h2, _) = layer(x)
    for l in range(2):
        for d in range(2):
            np.testing.assert_allclose(h2[2 * l + d], h[2 * l + d][:, perms[l, d]], rtol=1e-12)
    with pytest.raises(RelabelUnavailable, match="peephole"):
        relabel_units({**params, "peephole_l0": np.zeros(3)}, perms, **kw)
    swapped = swap_directions(params, hidden_size=3)
    assert all(np.array_equal(swap_directions(swapped, hidden_size=3)[k], params[k]) for k in params)
    assert np.array_equal(swapped["weight_ih_l1"][:, :3], params["weight_ih_l1_reverse"][:, 3:])


def test_the_directional_derivative_is_undecided_at_a_kink_not_failed():
    """A relu layer whose every pre-activation is exactly 0: the loss has a kink there along any direction, so the
    central difference is not a derivative; the case is counted as undecided, never as a failure."""
    a = TorchAdapter(torch.nn.RNN(1, 1, nonlinearity="relu")).astype("float64")
    call = Call({k: np.zeros_like(v) for k, v in a.parameters().items()}, np.zeros((1, 1, 1)), (np.zeros((1, 1, 1)),),
                None, np.ones((1, 1, 1)), (np.zeros((1, 1, 1)),))
    direction = {"x": np.ones((1, 1, 1)) / 2, "states": (np.zeros((1, 1, 1)),),
                 "params": {k: np.full_like(v, 0.5) for k, v in call.params.items()}}
    ctx = Context({"float64": a, "float32": a.astype("float32")}, ("float64",), a.state_names)
    fd, inner, tol, undecided, _ = directional_check(ctx, call, direction, ["x", "state0", *sorted(call.params)])
    assert undecided and "not differentiable" in undecided and abs(fd - inner) > tol
    smooth = call.but(x=np.full((1, 1, 1), 0.5), params={k: np.full_like(v, 0.25) for k, v in call.params.items()})
    fd, inner, tol, undecided, _ = directional_check(ctx, smooth, direction, ["x", "state0", *sorted(call.params)])
    assert undecided is None and abs(fd - inner) <= tol


def test_float32_is_judged_on_moderate_values_only():
    """A saturated tanh RNN misses its own float64 gradients by ~1e-4 of their scale in float32 (1 - h^2 from a
    rounded h): no rule without a reference can tell that from a mistake, so float32 is checked on cases whose
    pre-activations stay within 1/2, and such a case never saturates."""
    from rnn_scratch.testing.properties.core import MODERATE, WIDE
    from rnn_scratch.testing.properties.relations import PROPERTIES

    dtype = next(p for p in PROPERTIES if p.name == "dtype")
    a64 = TorchAdapter(torch.nn.RNN(3, 1)).astype("float64")
    ctx = Context({"float64": a64, "float32": a64.astype("float32")}, ("float64", "float32"), ("h",))
    saturated = Call({k: np.ones_like(v) for k, v in a64.parameters().items()}, np.ones((2, 1, 3)), None, None,
                     np.ones((2, 1, 1)), (np.ones((1, 1, 1)),))
    assert not dtype.evaluate(ctx, Case({}, saturated, regime=MODERATE)).ok  # what the regime keeps away
    w = MODERATE.weight(3, 1, 1, 1)
    assert w * (3 * MODERATE.x + 1 + 2) <= MODERATE.preactivation < WIDE.preactivation
    moderate = saturated.but(params={k: w * v for k, v in saturated.params.items()})
    assert dtype.evaluate(ctx, Case({}, moderate, regime=MODERATE)).ok


# -- what a user hands it --------------------------------------------------------------------------------
class NaNLayer(Mini):
    def forward(self, x, state, lengths):
        out, state = super().forward(x, state, lengths)
        return out * np.nan, state


class NoisyGRU(torch.nn.GRU):
    """Dropout left on inside forward: every call differs."""

    def forward(self, input, hx=None):
        out, h = super().forward(input, hx)
        return out, h + 1e-3 * torch.randn_like(h)


class InPlace(Mini):
    def forward(self, x, state, lengths):
        x *= 2
        return super().forward(x, state, lengths)


class Slow(Mini):
    def forward(self, x, state, lengths):
        time.sleep(5)


def test_hostile_layers_are_findings_not_crashes(monkeypatch):
    report = check_properties(lambda I, H: NaNLayer("rnn", I, H), adapter="custom", max_examples=5, shrink_limit=20)
    wf = report.result("well-formed")
    assert wf.status == "FAIL" and "NaN or infinity in out" in str(report)
    assert {r.status for r in report.results if r.name != "well-formed"} <= {"not run", "n/a"}
    report = check_properties(lambda I, H: NoisyGRU(I, H), adapter="torch", max_examples=5, properties=["well-formed"],
                              shrink_limit=20)
    assert not report.ok and "the same call repeated" in str(report)
    report = check_properties(lambda I, H: InPlace("rnn", I, H), adapter="custom", max_examples=5,
                              properties=["well-formed"], shrink_limit=20)
    assert "changed its input x in place" in str(report)
    monkeypatch.setattr(adapters, "CALL_TIME_LIMIT_S", 0.2)
    start = time.perf_counter()
    report = check_properties(lambda I, H: Slow("rnn", I, H), adapter="custom", max_examples=25)
    text = " ".join(str(report).split())
    assert "(forward and backward) did not return within 0.2 s" in text, text
    assert "shrinking stopped after a call that did not return" in text and report.result("batch").status == "not run"
    assert time.perf_counter() - start < 3  # one try per call that hangs, not one per shrinking step


def test_bad_factories_are_usage_errors():
    def raises(I, H):
        raise RuntimeError("no GPU here")

    with pytest.raises(UsageError, match=r"raises\(2, 3\) raised RuntimeError: no GPU here"):
        check_properties(raises, adapter="torch")
    with pytest.raises(UsageError, match="takes a torch.nn.RNN, LSTM or GRU, got int"):
        check_properties(lambda I, H: 3, adapter="torch")
    with pytest.raises(UsageError, match="returned None"):
        check_properties(lambda I, H: None, adapter="custom")
    with pytest.raises(UsageError, match="has no forward"):
        check_properties(lambda I, H: object(), adapter="custom")
    with pytest.raises(UsageError, match="unknown properties"):
        check_properties(lambda I, H: torch.nn.GRU(I, H), adapter="torch", properties=["speed"])
    with pytest.raises(UsageError, match="adapter must be one of"):
        check_properties(lambda I, H: torch.nn.GRU(I, H), adapter="jax")
    with pytest.raises(UsageError, match="must include float64"):
        check_properties(lambda I, H: torch.nn.GRU(I, H), adapter="torch", dtypes=["float32"])
    with pytest.raises(UsageError, match=r"built a layer of 13056 parameters .*hidden_size=64"):
        check_properties(lambda I, H: torch.nn.GRU(I, 64), adapter="torch")  # the sizes asked are ignored


class CoupledInFloat32(Mini):
    """Correct in float64; in float32 each row's input leaks 1e-3 of the batch mean into the output."""

    def forward(self, x, state, lengths):
        out, state = super().forward(x, state, lengths)
        if x.dtype == np.float32:
            out = out + np.float32(1e-3) * x.mean(axis=1, keepdims=True).sum(axis=2, keepdims=True)
        return out, state


def test_the_float32_side_of_a_relation_is_judged_too():
    report = check_properties(lambda I, H: CoupledInFloat32("rnn", I, H), adapter="custom", properties=["batch"],
                              max_examples=examples(20))
    assert report.result("batch").status == "FAIL", str(report)
    assert "broke (float32)" in str(report) and "broke (float64)" not in str(report)
    assert "(moderate values)" in str(report)


def test_a_time_limit_stops_the_search_and_says_so():
    report = check_properties(lambda I, H: torch.nn.GRU(I, H), adapter="torch", time_limit=1e-3)
    assert not report.ok and "INCOMPLETE" in str(report)
    assert {r.status for r in report.results} <= {"stopped", "not run", "n/a"}


# -- the command -----------------------------------------------------------------------------------------
def test_the_command_exits_0_1_2_and_every_option_acts(tmp_path):
    base = ["properties", "torch.nn:GRU", "--adapter", "torch", "--max-examples", "2"]
    status, out, err = run_inline(*base, "--only", "batch", "split")
    assert status == 0 and "HOLDS every property that applies (2 of 2)" in out, out + err
    assert "[1/2] batch: ok" in err and "[2/2] split: ok" in err  # progress, one line per property
    status, out, err = run_inline(*base, "--only", "batch", "--no-progress", "--dtypes", "float64", "--seed", "3")
    assert status == 0 and err == "" and "in float64, up to 2 examples each (seed 3)" in " ".join(out.split())
    status, out, _ = run_inline(*base, "--only", "batch", "--time-limit", "0.000001")
    assert status == 1 and "INCOMPLETE" in out
    status, out, _ = run_inline("properties", "tests.properties.mutants:shared_h0_gru", "--adapter", "torch",
                                "--only", "batch", "--max-examples", "20", "--no-progress")
    assert status == 1 and "BREAKS 1 of 1" in out and "- batch:" in out
    for argv, message in ((["nowhere:make", "--adapter", "torch"], "cannot import nowhere"),
                          ([str(tmp_path / "none.py") + ":f", "--adapter", "torch"], "no such file"),
                          (["torch.nn:Linear", "--adapter", "torch"], "got Linear"),
                          (["torch.nn", "--adapter", "torch"], "must be MODULE:FACTORY"),
                          (["torch.nn:GRU", "--adapter", "torch", "--dtypes", "float32"], "must include float64")):
        status, out, err = run_inline("properties", *argv)
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    status, _, err = run_inline("properties", "torch.nn:GRU")  # --adapter is required
    assert status == 2 and "--adapter" in err


@pytest.mark.slow
def test_the_example_runs():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, os.path.join("examples", "properties_torch_gru.py"), "--max-examples", "12"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    assert "torch.nn.GRU through the torch adapter: HOLDS every property that applies (9 of 11)" in out
    assert "UnpackingGRU through the torch adapter: BREAKS 2 of 2 properties" in out
