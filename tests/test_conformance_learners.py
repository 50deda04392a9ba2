"""The conformance kit on code shaped like real CS231n submissions (tests/conformance/submission.py writes the
assignment folder: a cs231n/ package with layers.py and rnn_layers.py): what real learners write must get a true
verdict, a right/wrong list that rests on non-degenerate cases, and a cause only when a mutant reproduces it."""

import re

import numpy as np
import pytest

from rnn_scratch.testing import ImplementationError, check_implementation
from rnn_scratch.testing import conformance as kit
from tests.conformance import submission
from tests.test_cli import run_inline

FAST = dict(max_examples=8, call_limit=5, time_limit=120)


def check(path, cell, **kw):
    return check_implementation(str(path), convention="cs231n", cell=cell, **{**FAST, **kw})


def failure(report, name):
    (found,) = [f for f in report.failures if f.function == name]
    return found


# -- items 1, 2: an argument changed in place while the values are right ----------------------------------
def test_a_correct_lstm_that_changes_dnext_c_in_place_conforms_with_a_warning(tmp_path):
    """Most real lstm_step_backward do `dnext_c += ...` on their argument. The kit used to compute its reference
    from the arrays the learner had changed and fail 7 of 10 correct files."""
    report = check(submission.write(tmp_path), "lstm")
    assert report.ok and report.exit_status == 0 and not report.failures, str(report)
    assert report.verdict == "CONFORMS, with 1 warning"
    (warning,) = report.warnings
    assert warning.startswith("lstm_step_backward changes its argument dnext_c in place")
    assert "values it returns are right" in warning and "dnext_c = dnext_c + ..." in warning
    assert "rnn_layers.py: CONFORMS, with 1 warning (cs231n convention, lstm), 8 examples per function" in \
        " ".join(str(report).split())


def test_strict_makes_the_warning_a_failure(tmp_path):
    report = check(submission.write(tmp_path), "lstm", strict=True)
    assert not report.ok and report.exit_status == 1 and report.verdict == "DOES NOT CONFORM"
    assert "warning (--strict: a failure): lstm_step_backward changes its argument dnext_c" in str(report)
    argv = ["check", str(submission.write(tmp_path / "cli")), "--convention", "cs231n", "--cell", "lstm",
            "--max-examples", "5"]
    assert run_inline(*argv)[0] == 0 and run_inline(*argv, "--strict")[0] == 1


def test_an_in_place_change_that_corrupts_a_cache_is_the_cause_only_when_copies_fix_it(tmp_path):
    """lstm_step_forward scales the caller's prev_c (`prev_c *= f`): its own values are right (a warning), but in
    lstm_forward that array is the previous step's next_c, kept in its cache, so lstm_backward is wrong; the kit
    shows it by running the same code with copies."""
    report = check(submission.write(tmp_path, ["inplace_prev_c"]), "lstm")
    assert {f.function for f in report.failures} == {"lstm_backward"}, str(report)
    assert any(w.startswith("lstm_step_forward changes its argument prev_c in place") for w in report.warnings)
    assert failure(report, "lstm_backward").cause.startswith(
        "lstm_step_forward changes prev_c in place, and lstm_backward keeps that array (in a cache, or as the next "
        "step's state): the same code, given copies, conforms"), str(report)


# -- item 3: a cause only when it reproduces ----------------------------------------------------------------
def test_an_unrelated_index_error_is_not_blamed_on_an_in_place_change(tmp_path):
    report = check(submission.write(tmp_path, ["rnn_index_error_T1"]), "rnn")
    found = failure(report, "rnn_backward")
    assert any("raised IndexError" in p for p in found.problems)
    assert found.cause is None and "in place" not in str(report)
    assert "fails when T = 1 and is right with it at 2" in found.steps


def test_no_cause_is_guessed_for_a_mistake_no_mutant_reproduces(tmp_path):
    report = check(submission.write(tmp_path, ["dprev_h_half"]), "rnn")
    found = failure(report, "rnn_step_backward")
    assert found.wrong.keys() == {"dprev_h"} and found.cause is None, str(report)
    assert set(found.right) == {"dx", "dWx", "dWh", "db"}  # right on random cases too, not only on zeros


# -- item 4: right/wrong on cases that exercise every quantity ------------------------------------------------
def test_right_and_wrong_rest_on_non_degenerate_cases(tmp_path):
    """No tanh' in rnn_step_backward: all five outputs are wrong at ordinary inputs. The shrunk case has zeros
    (x = 0 makes dWx = 0 for any code), so judged on it alone four of them looked right."""
    report = check(submission.write(tmp_path, ["no_tanh_grad"]), "rnn")
    for name, outputs in (("rnn_step_backward", {"dx", "dprev_h", "dWx", "dWh", "db"}),
                          ("rnn_backward", {"dx", "dh0", "dWx", "dWh", "db"})):
        found = failure(report, name)
        assert set(found.wrong) == outputs and found.right == [], str(report)
        assert found.judged == 1 + kit.JUDGED_CASES and found.case["sizes"]["N"] == 1  # still shrunk
        assert found.cause == kit.CAUSES["no_tanh_grad"]


# -- item 5: the causes seen in real code -----------------------------------------------------------------
CAUSES = [
    (["lstm_no_sigmoid_f"], "lstm", "lstm_step_forward", "the forget gate has no sigmoid"),
    (["tanh_grad_of_tanh_g"], "lstm", "lstm_step_backward", "g's tanh' is taken of tanh(g)"),
    (["sigmoid_grad_f_from_i"], "lstm", "lstm_step_backward", "the f gate's sigmoid' is taken of i"),
    (["db_keepdims"], "rnn", "rnn_step_backward", "db keeps the summed axis"),
    (["db_wrong_axis"], "rnn", "rnn_step_backward", "db is summed over axis 1"),
    (["rnn_no_carry"], "rnn", "rnn_forward", "every step starts from h0"),
]


@pytest.mark.parametrize("bugs, cell, function, cause", CAUSES, ids=[c[0][0] for c in CAUSES])
def test_causes_seen_in_real_code_are_named(bugs, cell, function, cause, tmp_path):
    report = check(submission.write(tmp_path, bugs), cell)
    assert cause in (failure(report, function).cause or ""), str(report)


def test_a_squeeze_that_breaks_one_size_is_located(tmp_path):
    """x.squeeze() in rnn_step_forward (seen in two real files): wrong only when D = 1."""
    report = check(submission.write(tmp_path, ["squeeze_D"]), "rnn")
    found = failure(report, "rnn_step_forward")
    assert "fails when D = 1 and is right with it at 2" in found.steps and "np.squeeze" in found.steps, str(report)


def test_the_mutants_reproduce_their_own_mistake_only():
    """Each mutant differs from ours on a random case (so it can explain a difference), and none equals another."""
    rng = np.random.default_rng(0)
    for cell in kit.CS231N_PREFIXES:
        for spec in kit.SPECS[cell]:
            case = kit.random_case(spec, cell, {"N": 3, "T": 3, "D": 4, "H": 2}, rng)
            ref = kit._reference_outputs(spec, case)
            outputs = {bug: kit._mutant(spec, cell, case, bug) for bug in kit._bugs(spec, cell)}
            for bug, out in outputs.items():
                assert not kit._matches(out, ref), (spec.name, bug)
                others = {b for b, o in outputs.items() if b != bug and kit._matches(o, out)}
                # in a sequence the cell-state carry starts at 0: f * dnext_c keeps it 0, as no carry does
                same = {"no_c_carry": {"dprev_c_drops_dh_path"}, "dprev_c_drops_dh_path": {"no_c_carry"}}
                assert others <= (same.get(bug, set()) if spec.name == "lstm_backward" else set()), (spec.name, bug)


# -- item 6: imports as a learner has them ----------------------------------------------------------------
@pytest.mark.parametrize("imports", ["relative", "absolute"])
def test_a_file_inside_the_cs231n_package_imports_its_siblings(imports, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the assignment folder
    report = check(submission.write(tmp_path, imports=imports), "rnn", max_examples=5)
    assert report.ok, str(report)


def test_a_sibling_import_works_outside_a_package(tmp_path):
    report = check(submission.write(tmp_path, imports="sibling", package=False), "rnn", max_examples=5)
    assert report.ok, str(report)


def test_a_missing_module_names_the_folder_tried_and_the_fix(tmp_path):
    path = submission.write(tmp_path)
    (path.parent / "layers.py").unlink()
    with pytest.raises(ImplementationError) as info:
        check(path, "rnn")
    text = str(info.value)
    assert "it imports 'cs231n.layers' (line 1 of rnn_layers.py)" in text and str(path.parent) in text, text
    assert "Put cs231n.py (or the cs231n/ folder) beside it" not in text or "layers" in text
    path = submission.write(tmp_path / "flat", package=False)
    with pytest.raises(ImplementationError, match=r"relative import .* has no __init__.py, so it is not a package: "
                                                  r"add an empty __init__.py"):
        check(path, "rnn")


def test_python_2_code_gets_one_line_naming_its_first_python_2_construct(tmp_path):
    path = tmp_path / "rnn_layers.py"
    path.write_text("import numpy as np\n\n\n# print 'in a comment' is not code\ndef rnn_step_forward(x, prev_h, "
                    "Wx, Wh, b):\n    for t in xrange(3):\n        pass\n    print 'next_h', x.shape\n"
                    "    return np.tanh(x.dot(Wx)), None\n")
    with pytest.raises(ImplementationError) as info:
        check(path, "rnn")
    text = str(info.value)
    assert text.startswith("rnn_layers.py is Python 2 code: line 6 (for t in xrange(3):) is Python 2's xrange; "
                           "Python 3 has range"), text
    assert "\n" not in text


# -- item 8: stubs ------------------------------------------------------------------------------------------
def test_a_stub_is_one_line(tmp_path):
    report = check(submission.write(tmp_path, ["stub_lstm_backward"]), "lstm")
    assert report.ok and report.not_implemented == ["lstm_backward"], str(report)
    text = str(report)
    assert "lstm_backward: not implemented (returns None)" in text.splitlines()
    assert "returned no" not in text and "smallest failing case" not in text


def test_nothing_but_stubs_is_a_report_of_one_line_each(tmp_path):
    """The assignment's template, not filled in yet: a report (exit status 1), not a usage error (2)."""
    report = check(submission.write(tmp_path, ["stub_lstm"]), "lstm")
    assert report.exit_status == 1 and report.verdict == "NOT IMPLEMENTED YET" and not report.failures
    lines = str(report).splitlines()
    stubs = [f"{n}: not implemented (returns None)" for n in ("lstm_step_forward", "lstm_step_backward",
                                                              "lstm_forward", "lstm_backward")]
    assert lines[-5:] == ["checked: nothing", *stubs], lines


def test_a_stub_behind_a_failing_forward_is_reported_and_a_backward_whose_forward_fails_says_so(tmp_path):
    report = check(submission.write(tmp_path, ["stub_step_backward_behind_failing_forward"]), "lstm")
    assert "lstm_step_backward: not implemented (returns None)" in str(report).splitlines(), str(report)
    assert "raised NotImplementedError: lstm_step_forward: to do" in failure(report, "lstm_step_forward").problems[0]
    report = check(submission.write(tmp_path / "n", ["name_error_behind_stub_forward"]), "lstm")
    assert re.search(r"not checked against ours \(its forward lstm_step_forward is not implemented \(returns None\)\), "
                     r"but called with None for the cache it raised NameError: name 'dprev_h' is not defined",
                     " ".join(str(report).split())), str(report)
    report = check(submission.write(tmp_path / "b", ["lstm_forward_raises"]), "lstm")
    assert report.not_checked.keys() == {"lstm_backward"} and "lstm_backward not checked" in str(report)
    assert re.fullmatch(r"its forward lstm_forward raised ValueError: lstm_forward: not finished \(line \d+ of "
                        r"rnn_layers.py, in lstm_forward\) \(see above\)", report.not_checked["lstm_backward"])
