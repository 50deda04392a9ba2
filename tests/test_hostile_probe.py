"""One test per finding of the second hostile probe (issue 23) outside checkpoints and memory."""

import gc
import os
import sys
import threading
import tracemalloc

import numpy as np
import pytest
import torch

import rnn_scratch as rs
from rnn_scratch import optim

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
