"""The conformance kit: it passes correct implementations (ours, in both conventions, and a learner's) and names the
planted mistake of each learner module under tests/conformance/, with the right diagnosis."""

import functools
import os
import subprocess
import sys

import pytest

import rnn_scratch as rs
from rnn_scratch.functional import CELLS
from rnn_scratch.layers import make_layer
from rnn_scratch.testing import ImplementationError, check_implementation, cs231n_reference
from rnn_scratch.testing import conformance as kit
from rnn_scratch.testing import layer_conformance as kit_layer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check(name, cell, **kw):
    return check_implementation(f"tests.conformance.{name}", convention="cs231n", cell=cell, **kw)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_our_cs231n_functions_and_a_correct_learner_conform(cell):
    for target in (cs231n_reference, "tests.conformance.correct", os.path.join(ROOT, "tests", "conformance",
                                                                               "correct.py")):
        report = check_implementation(target, convention="cs231n", cell=cell, max_examples=30)
        assert report.ok, str(report)
        assert report.checked == [s.name for s in kit.SPECS[cell]] and not report.missing


@pytest.mark.parametrize("make, cell", [
    (functools.partial(rs.LSTM, dtype="float64"), "lstm"),
    (functools.partial(rs.GRU, dtype="float64", batch_first=True), "gru"),
    (functools.partial(rs.RNN, dtype="float64", num_layers=2, bidirectional=True), "rnn"),
    (functools.partial(rs.RNN, dtype="float64", nonlinearity="relu", bias=False), "rnn_relu"),
])
def test_our_layers_conform_to_the_layer_convention(make, cell):
    report = check_implementation(make, convention="layer", cell=cell, max_examples=25)
    assert report.ok, str(report)


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_registered_cell_conforms_to_the_layer_convention(cell):
    """Each cell of the registry (a new one as soon as it is registered), its layer checked by the kit."""
    report = check_implementation(functools.partial(make_layer, cell, dtype="float64"), convention="layer", cell=cell,
                                  max_examples=25)
    assert report.ok, str(report)


def test_a_layer_with_another_gate_order_is_diagnosed():
    report = check_implementation("tests.conformance.learner_layers:SwappedLSTM", convention="layer", cell="lstm",
                                  max_examples=20)
    (finding,) = report.failures
    assert "out" in finding.wrong and "the gate row blocks are used in the order (" in finding.cause, str(report)
    labels = kit_layer.gate_labels("lstm")
    used = ", ".join(labels[j] for j in (0, 1, 3, 2))
    assert f"order ({used}); torch's (and this convention's) order is ({', '.join(labels)})" in finding.cause


# (module, cell, failing functions, text the diagnosis must contain)
PLANTED = [
    ("bug_gate_order_ifgo", "lstm", {"lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward"},
     "gate columns are in the order (i, f, g, o)"),
    ("bug_no_h_carry", "rnn", {"rnn_backward"}, "gradient carried from step t+1 into step t is missing"),
    ("bug_no_c_carry", "lstm", {"lstm_backward"}, "cell-state gradient is not carried between steps"),
    ("bug_dprev_c_drops_dh_path", "lstm", {"lstm_step_backward", "lstm_backward"},
     "cell-state path is dropped from dprev_c"),
    ("bug_no_tanh_grad_c", "lstm", {"lstm_step_backward", "lstm_backward"},
     "tanh' factor (1 - tanh(next_c)^2) is missing"),
    ("bug_inplace_prev_c", "lstm", {"lstm_backward"},  # the step's own values are right: a warning
     "warning: lstm_step_forward changes its argument prev_c in place"),
    ("bug_db_mean", "rnn", {"rnn_step_backward", "rnn_backward"}, "mean over the batch where a sum belongs"),
    ("bug_no_tanh_grad", "rnn", {"rnn_step_backward", "rnn_backward"}, "tanh' factor (1 - h^2) is missing"),
    ("bug_no_sigmoid_grad_f", "lstm", {"lstm_step_backward", "lstm_backward"}, "sigmoid' factor f (1 - f)"),
    ("bug_index_error", "rnn", {"rnn_forward"}, "raised IndexError"),  # rnn_backward is judged where it runs
    ("bug_db_keepdims", "rnn", {"rnn_step_backward", "rnn_backward"}, "db has shape (1, 1), expected (1,)"),
    ("bug_nan_log", "rnn", {"rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward"},
     "NaN or infinity where ours is finite"),
]


@pytest.mark.parametrize("name, cell, failing, diagnosis", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_mistakes_are_found_and_diagnosed(name, cell, failing, diagnosis):
    report = check(name, cell)
    assert not report.ok
    assert {f.function for f in report.failures} == failing, str(report)
    text = str(report)
    assert diagnosis in text, text
    lines = text.splitlines()
    assert len(lines) <= 45 and max(map(len, lines)) <= 130, text  # one screen
    for f in report.failures:
        assert f.case is not None and "smallest failing case" in text


def test_the_carry_mistake_is_placed_in_time():
    text = " ".join(str(check("bug_no_h_carry", "rnn")).split())
    assert "right for T = 1, wrong for T >= 2: the error enters where a step receives the gradient of the steps " \
           "after it" in text and "T=2" in text  # the smallest case has two steps


def test_the_wrong_quantities_are_named_beside_the_right_ones():
    (finding,) = [f for f in check("bug_no_tanh_grad_c", "lstm").failures if f.function == "lstm_step_backward"]
    # the missing tanh'(c) reaches dc, so every gradient but none of the forward values is wrong
    assert set(finding.wrong) == {"dx", "dprev_h", "dprev_c", "dWx", "dWh", "db"} and finding.right == []
    assert "dprev_c" in finding.fd_wrong  # the learner's own forward disagrees with its backward
    (finding,) = [f for f in check("bug_no_sigmoid_grad_f", "lstm").failures if f.function == "lstm_step_backward"]
    assert finding.right == ["dprev_c"]  # f * dc does not involve f's sigmoid'


def test_a_function_that_never_returns_is_reported():
    report = check("bug_endless_loop", "rnn", max_examples=10, call_limit=0.3)
    assert "took longer than 0.3 s (stopped)" in str(report)


def test_missing_functions_are_listed(tmp_path):
    partial = tmp_path / "only_step.py"
    partial.write_text("from tests.conformance.correct import rnn_step_forward, rnn_step_backward\n")
    report = check_implementation(partial, convention="cs231n", cell="rnn", max_examples=10)
    assert report.ok and report.missing == ["rnn_forward", "rnn_backward"] and "missing: rnn_forward" in str(report)
    orphan = tmp_path / "orphan.py"
    orphan.write_text("from tests.conformance.correct import rnn_step_backward\n")
    with pytest.raises(ImplementationError, match=r"nothing can be checked: rnn_step_forward; rnn_step_backward "
                                                  r"\(needs rnn_step_forward for its cache\)"):
        check_implementation(orphan, convention="cs231n", cell="rnn", max_examples=10)


def test_usage_errors():
    with pytest.raises(ImplementationError, match="no such file"):
        check_implementation("no/such/file.py", convention="cs231n", cell="rnn")
    with pytest.raises(ImplementationError, match="cannot import no_such_module_anywhere: .* is not installed"):
        check_implementation("no_such_module_anywhere", convention="cs231n", cell="rnn")
    with pytest.raises(ImplementationError, match="defines none of the rnn functions"):
        check_implementation("json", convention="cs231n", cell="rnn")
    with pytest.raises(ImplementationError, match="the cs231n convention has no gru functions"):
        check_implementation(cs231n_reference, convention="cs231n", cell="gru")
    with pytest.raises(ImplementationError, match="cell must be one of"):
        check_implementation(cs231n_reference, convention="layer", cell="transformer")
    with pytest.raises(ImplementationError, match="convention must be one of"):
        check_implementation(cs231n_reference, convention="keras", cell="rnn")


@pytest.mark.parametrize("args, status", [
    (["tests/conformance/correct.py", "--convention", "cs231n", "--cell", "lstm"], 0),
    (["tests.conformance.bug_db_mean", "--convention", "cs231n", "--cell", "rnn"], 1),
    (["tests/conformance/nothing_here.py", "--convention", "cs231n", "--cell", "rnn"], 2),
    (["rnn_scratch.layers:LSTM", "--convention", "layer", "--cell", "lstm"], 1),  # float32: not float64-exact
    (["tests/conformance/bug_endless_loop.py", "--convention", "cs231n", "--cell", "rnn", "--time-limit", "1",
      "--call-limit", "60"], 3),  # the time limit ran out
    (["tests.conformance.correct", "--cell", "rnn"], 2),  # usage: --convention is required
])
@pytest.mark.slow
def test_cli_exit_status(args, status):
    r = subprocess.run([sys.executable, "-m", "rnn_scratch", "check", *args, "--max-examples", "15"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == status, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
