"""The conformance kit survives the code it checks: a learner's module runs in a child process, so exit, os._exit,
KeyboardInterrupt, endless loops (in Python, ignoring SIGALRM, or in C), a patched NumPy or error state, threads
left running and nondeterministic results each end in one clear report with the right exit status, in bounded time.
Each case was found by a hostile probe of `rnn-scratch check`; before the sandbox most ended in silence (exit 0,
read as "conforms"), a traceback, or 22 minutes of retries."""

import functools
import os
import re
import time

import pytest

import rnn_scratch as rs
from rnn_scratch.testing import ImplementationError, check_implementation
from tests.conformance import submission
from tests.test_cli import run_inline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_cli(path, *extra, cell="rnn"):
    """`rnn-scratch check` in this process (the learner's code runs in the kit's child): status, stdout, stderr,
    seconds."""
    start = time.monotonic()
    status, out, err = run_inline("check", str(path), "--convention", "cs231n", "--cell", cell, "--max-examples",
                                  "5", *extra)
    return status, out, err, time.monotonic() - start


def one_report(status, out, err):
    """The output is one clear report (stdout, status 0/1/3) or one error line (stderr, status 2), no traceback;
    returned with its line breaks (the report wraps at 110 columns) made spaces."""
    assert "Traceback" not in out + err
    if status == 2:
        assert out == "" and len(err.strip().splitlines()) == 1, err
        return err.strip()
    assert err == "" and out.strip(), (out, err)
    return " ".join(out.split())


# -- item 9: exit, os._exit, KeyboardInterrupt ---------------------------------------------------------------
EXITS = [
    ("exit_at_import", 2, "called exit() (line 3 of rnn_layers.py): code at the top level runs when the file is "
                          "imported; put script code under `if __name__ == \"__main__\":`"),
    ("script_tail", 2, "called exit(0)"),
    ("os_exit_at_import", 2, "ended the process with exit status 0"),
    ("sys_exit_in_function", 1, "rnn_step_backward FAIL"),
    ("os_exit_in_function", 1, "ended the process with exit status 0"),
    ("keyboard_interrupt", 1, "raised KeyboardInterrupt"),
    ("generator_exit", 1, "raised GeneratorExit"),
]


@pytest.mark.parametrize("bug, status, text", EXITS, ids=[e[0] for e in EXITS])
def test_exit_and_interrupts_are_reported_as_what_they_are(bug, status, text, tmp_path):
    got, out, err, _ = check_cli(submission.write(tmp_path, [bug]))
    report = one_report(got, out, err)
    assert got == status and text in report, (out, err)
    if bug == "sys_exit_in_function":
        assert re.search(r"called exit\(0\) \(or sys.exit\) \(line \d+ of rnn_layers.py, in rnn_step_backward\): a "
                         r"function must return its results, not end the program", report), report


# -- item 10: time bounds ---------------------------------------------------------------------------------
HANGS = {
    "python": "def rnn_step_forward(x, prev_h, Wx, Wh, b):\n    while True:\n        pass\n",
    "ignoring SIGALRM": "import signal\n\n\ndef rnn_step_forward(x, prev_h, Wx, Wh, b):\n"
                        "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n",
    "in C": "import re\n\n\ndef rnn_step_forward(x, prev_h, Wx, Wh, b):\n"
            "    return re.match(r'(a+)+$', 'a' * 64 + 'b')  # catastrophic backtracking: hours inside the C engine\n",
}


@pytest.mark.parametrize("how", HANGS)
def test_a_function_that_never_returns_is_stopped_and_reported_once(how, tmp_path):
    path = tmp_path / "rnn_layers.py"
    path.write_text(HANGS[how])
    status, out, err, seconds = check_cli(path, "--call-limit", "0.5")
    text = one_report(status, out, err)
    assert status == 1 and text.count("took longer than 0.5 s (stopped)") == 1, text
    assert "failing case (not shrunk)" in text and seconds < 20, (text, seconds)


def test_a_timed_out_function_is_not_shrunk_or_retried(tmp_path):
    """tests/conformance/bug_endless_loop.py loops only for N > 1: each forward is stopped once, on the first case
    it got; the backwards, which need those forwards, are not checked; the check takes about one call limit each."""
    status, out, err, seconds = check_cli(os.path.join(ROOT, "tests", "conformance", "bug_endless_loop.py"),
                                          "--call-limit", "0.5")
    text = one_report(status, out, err)
    assert status == 1 and text.count("took longer than 0.5 s (stopped)") == 4 and seconds < 30, (out, seconds)
    assert "rnn_step_backward: not checked: its forward rnn_step_forward took longer than 0.5 s (stopped) (see " \
           "above)" in text and "failing case (not shrunk): N=3" in text


def test_the_whole_check_has_a_time_limit(tmp_path):
    path = tmp_path / "rnn_layers.py"
    path.write_text(HANGS["python"])
    status, out, err, seconds = check_cli(path, "--call-limit", "60", "--time-limit", "1.5")
    text = one_report(status, out, err)
    assert status == 3 and "INCOMPLETE" in text and "time limit (1.5 s) ran out" in text and seconds < 15, text


# -- items 12, 14: NumPy patched or its error state changed by the learner's module ----------------------------
def test_np_seterr_raise_in_a_correct_module_changes_nothing(tmp_path):
    status, out, err, _ = check_cli(submission.write(tmp_path, ["seterr_raise"]))
    assert status == 0 and "CONFORMS" in one_report(status, out, err)


def test_a_module_that_patches_numpy_cannot_make_wrong_code_conform(tmp_path):
    status, out, err, _ = check_cli(submission.write(tmp_path, ["patch_numpy", "no_tanh_grad"]))
    assert status == 1 and "the tanh' factor (1 - h^2) is missing" in one_report(status, out, err)


# -- item 13: nondeterminism, threads, noise ------------------------------------------------------------------
def test_a_function_whose_result_changes_between_calls_is_reported(tmp_path):
    status, out, err, _ = check_cli(submission.write(tmp_path, ["nondeterministic"]))
    text = one_report(status, out, err)
    assert status == 1 and "returns different results for the same inputs (next_h differs by up to" in text


def test_threads_left_running_and_prints_do_not_reach_the_report(tmp_path):
    status, out, err, seconds = check_cli(submission.write(tmp_path, ["thread_left_running", "print_noise"]))
    assert status == 0 and "importing rnn_layers" not in one_report(status, out, err) and seconds < 60


# -- items 11, 13: layers -----------------------------------------------------------------------------------
def test_a_layer_object_is_compared_by_increments():
    """A layer object keeps its gradients between calls (torch's habit): ours used to be reported 'off by 6.1e+03'."""
    for layer, cell in ((rs.LSTM(2, 3, dtype="float64"), "lstm"), (rs.GRU(3, 2, dtype="float64"), "gru")):
        report = check_implementation(layer, convention="layer", cell=cell, max_examples=8)
        assert report.ok, str(report)


LAYERS = {
    "raises": ("class Layer:\n    def __init__(self, input_size, hidden_size):\n"
               "        raise ValueError('hidden_size must be even')\n", "constructing the layer, Layer(2, 3), raised "
                                                                         "ValueError: hidden_size must be even"),
    "hangs": ("class Layer:\n    def __init__(self, input_size, hidden_size):\n        while True:\n            pass\n",
              "constructing the layer took longer than 0.5 s (stopped)"),
}


@pytest.mark.parametrize("how", LAYERS)
def test_a_layer_class_whose_init_fails_is_reported(how, tmp_path):
    source, text = LAYERS[how]
    (tmp_path / "my_layer.py").write_text(source)
    start = time.monotonic()
    status, out, err = run_inline("check", f"{tmp_path / 'my_layer.py'}:Layer", "--convention", "layer", "--cell",
                                  "lstm", "--call-limit", "0.5")
    assert status == 1 and text in one_report(status, out, err), out
    assert time.monotonic() - start < 15


# -- item 15: the command's own edges --------------------------------------------------------------------------
def test_check_writes_nothing_into_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = submission.write(tmp_path / "work")
    status, out, err, _ = check_cli(path)
    assert status == 0, out + err
    assert sorted(os.listdir(tmp_path)) == ["work"]  # no .hypothesis/
    assert sorted(os.listdir(path.parent)) == ["__init__.py", "layers.py", "rnn_layers.py"]  # no __pycache__/


@pytest.mark.parametrize("target, text", [
    ("/dev/null", "/dev/null is not a regular file (a device, pipe or socket); give a .py file"),
    ("/", "/ is a folder; give the .py file that defines the functions"),
    ("no/such/file.py", "no such file: no/such/file.py"),
])
def test_a_target_that_is_not_a_python_file_is_named_as_such(target, text):
    status, out, err = run_inline("check", target, "--convention", "cs231n", "--cell", "rnn")
    assert status == 2 and text in one_report(status, out, err)


def test_api_arguments_are_checked():
    target = os.path.join(ROOT, "tests", "conformance", "correct.py")
    call = functools.partial(check_implementation, target, convention="cs231n", cell="rnn")
    with pytest.raises(TypeError, match=r"seed must be an integer >= 0, got 'x' \(str\)"):
        call(seed="x")
    with pytest.raises(TypeError, match=r"max_examples must be an integer >= 1, got 2.7 \(float\)"):
        call(max_examples=2.7)
    with pytest.raises(ValueError, match="max_examples must be an integer >= 1, got 0"):
        call(max_examples=0)
    with pytest.raises(ValueError, match=r"time_limit must be a number of seconds > 0, got -1"):
        call(time_limit=-1)
    with pytest.raises(TypeError, match="strict must be True or False"):
        call(strict="yes")
    with pytest.raises(ImplementationError, match="the cs231n convention has no gru functions"):
        call(cell="gru")
