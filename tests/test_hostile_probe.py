"""One test per finding of the second hostile probe (issue 23) outside checkpoints and memory."""

import gc
import os
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import rnn_scratch as rs

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
