"""One test per finding of the second hostile probe (issue 23) outside checkpoints and memory: torch habits of
the optimisers (F18), threads (F19, F20), padding (F21), the command line (F16, F17) and an example."""

import gc
import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest
import torch

import rnn_scratch as rs
from rnn_scratch import optim
from rnn_scratch.charlm import train_char_lm

from .test_cli import run_inline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- F19, F20: what a forward saves, per thread -------------------------------------------------------------
def _backward_on_a_new_thread(layer, dy):
    """'ok' when a fresh thread's backward ran, else the error it raised."""
    result = {}

    def back():
        try:
            layer.backward(dy)
            result["outcome"] = "ok"
        except ValueError as exc:
            result["outcome"] = str(exc)

    thread = threading.Thread(target=back)
    thread.start()
    thread.join()
    return result["outcome"]


def test_a_new_thread_never_differentiates_an_ended_threads_forward():
    """F19: thread ids are reused; a backward on a new thread took the dead thread's forward (122 of 200)."""
    layer = rs.Linear(3, 2, dtype="float64", seed=0)
    x, dy = np.ones((4, 3)), np.ones((4, 2))
    outcomes = []
    for _ in range(60):
        thread = threading.Thread(target=layer, args=(x,))
        thread.start()
        thread.join()
        del thread
        outcomes.append(_backward_on_a_new_thread(layer, dy))
    assert all("backward() called before forward()" in o for o in outcomes), sorted(set(outcomes))
    assert not layer.grads["weight"].any()


def test_an_ended_threads_saved_forward_is_freed_with_it():
    """F19: an ended thread's cache stayed alive (until some later forward pruned it)."""
    layer = rs.Linear(1000, 2, dtype="float64", seed=0)
    x = np.ones((1000, 1000))  # the saved copy: 8 MB
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        thread = threading.Thread(target=layer, args=(x,))
        thread.start()
        thread.join()
        del thread
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < x.nbytes // 10, kept


def test_forwards_on_a_layer_shared_by_many_threads_never_trip_over_each_other():
    """F20: the per-thread store was pruned while other threads wrote to it ('dictionary changed size during
    iteration'). Many short-lived threads (entries to prune) and a tiny switch interval provoke it."""
    layer = rs.Linear(2, 2, seed=0)
    x = np.ones((1, 2), dtype="float32")
    errors = []

    def work():
        for _ in range(30):
            try:
                layer(x)
                layer.backward(np.ones((1, 2), dtype="float32"))
            except Exception as exc:  # noqa: BLE001 -- collected for the assertion
                errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(12):
            threads = [threading.Thread(target=work) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, sorted(set(errors))[:3]


# -- F21: NaN in padding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [rs.RNN, rs.LSTM, rs.GRU])
@pytest.mark.parametrize("batch_first", [False, True])
def test_nan_only_in_padded_steps_is_accepted_by_default_and_in_a_valid_step_refused(cls, batch_first):
    layer = cls(2, 3, num_layers=2, bidirectional=True, batch_first=batch_first, dtype="float64", seed=0)
    assert layer.check_finite  # the default
    x = np.random.default_rng(0).standard_normal((6, 3, 2))
    lengths = np.array([6, 2, 4])
    clean, _ = layer(x.swapaxes(0, 1) if batch_first else x, lengths=lengths)
    padded = x.copy()
    padded[2:, 1] = np.nan
    padded[4:, 2] = np.inf
    out, _ = layer(padded.swapaxes(0, 1) if batch_first else padded, lengths=lengths)
    assert np.array_equal(out, clean)
    padded[1, 1] = np.nan  # inside row 1's two valid steps
    with pytest.raises(ValueError, match="x contains NaN or infinity at a valid step"):
        layer(padded.swapaxes(0, 1) if batch_first else padded, lengths=lengths)
    with pytest.raises(ValueError, match="x contains NaN or infinity"):
        layer(padded.swapaxes(0, 1) if batch_first else padded)  # without lengths every step is valid


# -- F18: torch's habits in the optimisers ------------------------------------------------------------------
def _pair(seed=0):
    ours = rs.Linear(3, 2, dtype="float64", seed=seed)
    theirs = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.params["weight"]))
        theirs.bias.copy_(torch.from_numpy(ours.params["bias"]))
    g = np.random.default_rng(seed).standard_normal
    for (_, p, grad), tp in zip(ours.parameters(), theirs.parameters()):
        grad[...] = g(p.shape)
        tp.grad = torch.from_numpy(grad.copy())
    return ours, theirs


def test_lr_zero_and_lr_as_a_0d_tensor_are_accepted_as_torch_accepts_them():
    for lr in (0.0, 0, torch.tensor(0.01), np.array(0.01)):
        for make, tmake in ((optim.Adam, torch.optim.Adam), (optim.SGD, torch.optim.SGD)):
            ours, theirs = _pair()
            opt, topt = make(ours.parameters(), lr=lr), tmake(theirs.parameters(), lr=lr)
            opt.step()
            topt.step()
            rtol = 1e-12 if isinstance(lr, (int, float)) else 1e-6  # torch steps with a float32 tensor's value
            for (_, p, _), tp in zip(ours.parameters(), theirs.parameters()):
                assert np.allclose(p, tp.detach().numpy(), rtol=rtol, atol=0), (make, lr)
            assert isinstance(opt.lr, float)
    with pytest.raises(ValueError, match=r"lr must be a finite number in \[0, inf\), got -0.1"):
        optim.Adam(ours.parameters(), lr=-0.1)
    with pytest.raises(TypeError, match="lr must be a real number, got str"):
        optim.SGD(ours.parameters(), lr="0.1")


def test_clip_grad_norm_with_a_nan_gradient_makes_every_gradient_nan_as_torch_does():
    ours, theirs = _pair()
    ours.grads["weight"][0, 0] = np.nan
    theirs.weight.grad[0, 0] = float("nan")
    norm = optim.clip_grad_norm(ours.parameters(), 1.0)
    tnorm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    assert np.isnan(norm) and torch.isnan(tnorm)
    for (_, _, g), tp in zip(ours.parameters(), theirs.parameters()):
        assert np.array_equal(np.isnan(g), torch.isnan(tp.grad).numpy()) and np.isnan(g).all()


def test_clip_thresholds_are_checked_by_name():
    ours, _ = _pair()
    with pytest.raises(TypeError, match="max_norm must be a real number, got str"):
        optim.clip_grad_norm(ours.parameters(), "1")
    with pytest.raises(ValueError, match="max_norm must be a finite number"):
        optim.clip_grad_norm(ours.parameters(), -1.0)
    with pytest.raises(TypeError, match="clip_value must be a real number"):
        optim.clip_grad_value(ours.parameters(), None)
    before = {k: v.copy() for k, v in ours.grads.items()}
    optim.clip_grad_norm(ours.parameters(), torch.tensor(1e9))  # a 0-d tensor, as torch takes it
    assert all(np.array_equal(before[k], v) for k, v in ours.grads.items())


@pytest.mark.parametrize("key, value, error", [
    ("lr", np.nan, "lr' must be a finite number"), ("lr", np.inf, "lr' must be a finite number"),
    ("lr", -5.0, "lr' must be a finite number"), ("lr", np.array("0.01"), "lr' must be a real number"),
    ("step_count", -3, "step_count' must be an integer >= 0"), ("step_count", 1e30, "step_count' must be an integer"),
    ("step_count", np.array("7"), "step_count' must be an integer"),
    ("exp_avg/weight", np.full((2, 3), np.nan), "contains NaN or infinity"),
    ("exp_avg_sq/weight", -np.ones((2, 3)), "has negative entries"),
    ("exp_avg/weight", np.ones((2, 3), dtype=bool), "must be a real array"),
])
def test_optimizer_state_is_checked_as_its_constructor_and_step_would(key, value, error):
    """F23, F24: the state an optimiser loads passes the checks its constructor and step make; nothing
    changes on a refusal."""
    ours, _ = _pair()
    opt = optim.Adam(ours.parameters(), lr=0.01)
    opt.step()
    before = {k: np.array(v, copy=True) for k, v in opt.state_dict().items()}
    state = {**opt.state_dict(), key: value}
    with pytest.raises((ValueError, TypeError), match=error):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert all(np.array_equal(before[k], np.asarray(after[k])) for k in before)
    opt.load_state_dict({**opt.state_dict(), "lr": np.array(0.0), "step_count": np.array(4)})  # as files hold them
    assert (opt.lr, opt.step_count) == (0.0, 4) and type(opt.step_count) is int


# -- F16: char's prefix ---------------------------------------------------------------------------------------
def test_char_with_a_text_lacking_the_default_prefix_samples_after_its_own_characters():
    text = "0123456789 " * 40
    result = train_char_lm(text=text, hidden=8, seq_len=8, batch_size=4, epochs=1, sample_len=5, out=None,
                           show_progress=False)
    assert result["sample"].startswith(text[:8]) and "Shall" not in result["sample"]
    assert set(result["sample"]) <= set(text)
    with pytest.raises(ValueError, match=r"prefix must be .* characters that occur in the text; \['S', 'x'\]"):
        train_char_lm(text=text, prefix="Sx1", hidden=8, seq_len=8, batch_size=4, epochs=1, out=None,
                      show_progress=False)
    sonnet = train_char_lm(text="Shall I compare thee " * 20, hidden=8, seq_len=8, batch_size=4, epochs=1,
                           sample_len=3, out=None, show_progress=False)
    assert sonnet["sample"].startswith("Shall I ")


# -- F17: the command line ------------------------------------------------------------------------------------
def test_a_refused_command_leaves_no_empty_out_folder(tmp_path):
    out = tmp_path / "new" / "deeper"
    status, _, err = run_inline("sine", "--horizon", "2000", "--out", str(out))
    assert status == 1 and "--horizon 2000" in err
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder that existed stays
    run_inline("sine", "--horizon", "2000", "--out", str(tmp_path / "kept"))
    assert (tmp_path / "kept").is_dir()


def test_a_mistyped_command_is_an_unknown_command(monkeypatch):
    from rnn_scratch import cli

    status, _, err = run_inline("sinee")
    assert status == 2 and "unknown command 'sinee'; did you mean 'sine'?" in err and len(err.splitlines()) == 1
    status, _, err = run_inline("frobnicate", "--seed", "1")
    assert status == 2 and "unknown command 'frobnicate'" in err
    demo, help_text = cli.COMMANDS["demo"]

    def fake_demo(args):
        print("demo ran with seed", args.seed)
        return 0

    fake_demo.options = demo.options
    monkeypatch.setitem(cli.COMMANDS, "demo", (fake_demo, help_text))
    status, out, _ = run_inline("--seed", "1", "--backend", "numpy")  # options alone still run the demo
    assert status == 0 and "demo ran with seed 1" in out


def test_bench_name_is_checked_before_the_run(monkeypatch, tmp_path):
    from rnn_scratch import benchmark

    def run(**kwargs):
        raise AssertionError("the benchmark ran before --name was checked")

    monkeypatch.setattr(benchmark, "run", run)
    for name in ("x" * 300, "a/b", ".hidden", "tab\there", ""):
        status, _, err = run_inline("bench", "--quick", "--name", name, "--out", str(tmp_path))
        assert status == 1 and "--name must be 1 to 100 of the characters" in err, (name, err)


def test_a_write_that_fails_names_the_file(tmp_path):
    """--out on a full disk: /dev/full refuses every write with ENOSPC, as a full disk does."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("/dev/full", out / "sine_forecast.png")
    status, _, err = run_inline("sine", "--epochs", "1", "--windows", "30", "--horizon", "5", "--no-progress",
                                "--out", str(out))
    assert status == 1 and "No space left on device" in err and str(out / "sine_forecast.png") in err, err


# -- examples/vanishing_gradients.py --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", ["20", "2"])
def test_vanishing_gradients_example_runs_for_short_sequences(steps, tmp_path):
    pytest.importorskip("matplotlib")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "vanishing_gradients.py"), "--steps",
                           steps, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "10 back" in proc.stdout if steps == "20" else "1 back" in proc.stdout
    assert (tmp_path / "example_vanishing.png").exists()
