"""One test per defect of the hostile probe (issue 18): each failed on c81a349 and passes now.

Failure paths assert that models, optimisers and files are bit-identical afterwards."""

import os
import signal
import threading

import numpy as np
import pytest
import torch

import rnn_scratch as rs
from rnn_scratch import models, optim
from rnn_scratch.functional import CELLS
from rnn_scratch.gradcheck import relative_error
from rnn_scratch.layers import make_layer


def _grads_of(layer, x, dout, **kw):
    layer.zero_grad()
    out, _ = layer(x, **kw)
    layer.backward(dout)
    return {k: v.copy() for k, v in layer.grads.items()}


# -- 7: stale inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_changing_the_input_between_forward_and_backward_changes_nothing(cell, batch_first):
    layer = make_layer(cell, 3, 4, num_layers=2, batch_first=batch_first, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    dout = np.random.default_rng(1).standard_normal((5, 2, 4))
    expected = _grads_of(layer, x, dout)
    layer.zero_grad()
    xb = x.copy()
    out, _ = layer(xb)
    xb *= 10  # the caller reuses its buffer
    dx, _ = layer.backward(dout)
    for k, v in layer.grads.items():
        assert np.array_equal(v, expected[k]), k


@pytest.mark.parametrize("cell", list(CELLS))
def test_changing_the_weights_between_forward_and_backward_changes_nothing(cell):
    layer = make_layer(cell, 3, 4, bidirectional=True, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    dout = np.random.default_rng(1).standard_normal((5, 2, 8))
    expected = _grads_of(layer, x, dout)
    layer.zero_grad()
    out, _ = layer(x)
    for p in layer.params.values():
        p *= 3.0  # e.g. an optimiser step before the backward
    dx, _ = layer.backward(dout)
    for k, v in layer.grads.items():
        assert np.array_equal(v, expected[k]), k


def test_linear_and_embedding_keep_their_own_copies():
    lin = rs.Linear(3, 2, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3))
    dy = np.ones((4, 2))
    lin(x)
    dx_ref = lin.backward(dy)
    w_ref = lin.grads["weight"].copy()
    lin.zero_grad()
    lin(x)
    x *= 5
    lin.params["weight"] *= 2
    assert np.array_equal(lin.backward(dy), dx_ref) and np.array_equal(lin.grads["weight"], w_ref)
    emb = rs.Embedding(5, 2, dtype="float64", seed=0)
    idx = np.array([0, 1, 1])
    emb(idx)
    idx[:] = 4
    emb.backward(np.ones((3, 2)))
    assert emb.grads["weight"][1].tolist() == [2.0, 2.0] and not emb.grads["weight"][4].any()


# -- 8: NaN only in padded steps ------------------------------------------------------------------------
@pytest.mark.parametrize("cell", list(CELLS))
def test_nan_in_padding_does_not_reach_gradients(cell):
    layer = make_layer(cell, 2, 3, num_layers=2, bidirectional=True, dtype="float64", seed=0, check_finite=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 2))
    lengths = np.array([6, 2, 4])
    clean = _grads_of(layer, x, np.ones((6, 3, 6)), lengths=lengths)
    dx_clean, _ = layer.backward(np.ones((6, 3, 6)))
    x_nan = x.copy()
    x_nan[2:, 1] = np.nan
    x_nan[4:, 2] = np.inf
    dirty = _grads_of(layer, x_nan, np.ones((6, 3, 6)), lengths=lengths)
    out, _ = layer(x_nan, lengths=lengths)
    dx, _ = layer.backward(np.ones((6, 3, 6)))
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    assert not dx[2:, 1].any() and not dx[4:, 2].any()  # torch gives zeros there too
    for k in clean:
        assert np.allclose(dirty[k], clean[k], rtol=1e-12, atol=0), k
    valid = np.arange(6)[:, None] < lengths[None, :]
    assert np.allclose(dx[valid], dx_clean[valid], rtol=1e-12)


# -- 9: dropout masks are checked ---------------------------------------------------------------------
def test_dropout_masks_are_checked():
    layer = rs.LSTM(2, 3, num_layers=3, dropout=0.5, seed=0)
    x = np.ones((4, 2, 2), dtype="float32")
    good = [np.ones((4, 2, 3), dtype="float32")] * 2
    out, _ = layer(x, dropout_masks=good)
    assert out.dtype == np.float32
    with pytest.raises(TypeError, match=r"dropout_masks\[0\] has dtype float64 but the layer's parameters are "
                                        r"float32"):
        layer(x, dropout_masks=[np.ones((4, 2, 3))] * 2)
    with pytest.raises(TypeError, match=r"dropout_masks must be a list of num_layers - 1 = 2 arrays .*got ndarray"):
        layer(x, dropout_masks=np.ones((4, 2, 3), dtype="float32"))
    with pytest.raises(TypeError, match=r"got list of length 1"):
        layer(x, dropout_masks=good[:1])
    with pytest.raises(ValueError, match=r"dropout_masks\[1\] must have shape \(seq_len=4, batch=2, "
                                         r"num_directions \* hidden_size=3\), got shape \(4, 2, 4\)"):
        layer(x, dropout_masks=[good[0], np.ones((4, 2, 4), dtype="float32")])


def test_replayed_dropout_masks_are_copies():
    layer = rs.GRU(2, 3, num_layers=2, dropout=0.5, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    masks = [np.full((4, 2, 3), 2.0)]
    expected = _grads_of(layer, x, np.ones((4, 2, 3)), dropout_masks=masks)
    layer.zero_grad()
    layer(x, dropout_masks=masks)
    masks[0][...] = 0  # scribbled on between forward and backward
    layer.backward(np.ones((4, 2, 3)))
    assert all(np.array_equal(layer.grads[k], expected[k]) for k in expected)


# -- 10: one layer, two threads ------------------------------------------------------------------------
def test_a_layer_shared_by_threads_gives_each_thread_its_own_backward():
    layer = rs.LSTM(3, 8, dtype="float64", seed=0)
    xs = [np.random.default_rng(k).standard_normal((6, 2, 3)) for k in range(2)]
    expected = []
    for x in xs:
        out, _ = layer(x)
        expected.append(layer.backward(np.ones_like(out))[0])
    barrier = threading.Barrier(2)
    results = [None, None]

    def run(k):
        out, _ = layer(xs[k])
        barrier.wait()  # both forwards done before either backward
        results[k] = layer.backward(np.ones_like(out))[0]

    for _ in range(3):
        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for k in range(2):
            assert np.array_equal(results[k], expected[k])
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(ValueError, rs.GRU(2, 2).backward, None)))
    t.start()
    t.join()
    assert "before forward" in str(errors[0].value)


# -- 11: dtype=None is the documented default ----------------------------------------------------------
def test_dtype_none_means_float32():
    assert rs.LSTM(3, 4, dtype=None).dtype == np.float32
    assert rs.Linear(3, 4, dtype=None).dtype == np.float32


# -- 14: messages that mislead ---------------------------------------------------------------------
def test_float16_input_is_not_told_to_build_a_float16_layer():
    with pytest.raises(TypeError) as err:
        rs.GRU(2, 3)(np.ones((3, 1, 2), dtype=np.float16))
    assert "dtype='float16'" not in str(err.value) and "float32 or float64" in str(err.value)


def test_numpy_float_dropout_is_a_probability():
    assert rs.LSTM(2, 3, num_layers=2, dropout=np.float32(0.5)).dropout == 0.5
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\), got True"):
        rs.LSTM(2, 3, dropout=True)


def test_seed_and_state_dict_messages():
    with pytest.raises(ValueError, match="seed must be None or an integer >= 0, got -1"):
        rs.LSTM(2, 3, seed=-1)
    with pytest.raises(ValueError, match="seed must be None or an integer >= 0, got -1"):
        models.ManyToOneRegressor("gru", seed=-1)
    with pytest.raises(TypeError, match="state_dict must be a mapping of parameter names to arrays, got list"):
        rs.GRU(2, 3).load_state_dict([1, 2])


def test_bfloat16_and_half_tensors_load_through_float32():
    ref = torch.nn.GRU(2, 3)
    ours = rs.GRU(2, 3, dtype="float32")
    ours.load_state_dict({k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()})
    for k, v in ref.state_dict().items():
        assert relative_error(ours.params[k], v.to(torch.bfloat16).float().numpy()) == 0
    ours.load_state_dict({k: v.half() for k, v in ref.state_dict().items()})


def test_lstm_backward_state_of_the_wrong_arity_is_named():
    lstm = rs.LSTM(2, 3, dtype="float64")
    out, _ = lstm(np.ones((2, 1, 2)))
    with pytest.raises(TypeError, match=r"state gradient for LSTM must be a tuple \(dh_n, dc_n\) or None"):
        lstm.backward(out, (np.zeros((1, 1, 3)),))


# -- 15: optimiser settings are checked as torch checks them -----------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda p: optim.Adam(p, betas=(1.5, 0.999)), r"betas\[0\] must be a finite number in \[0, 1\)"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), r"betas\[1\] must be a finite number in \[0, 1\)"),
    (lambda p: optim.Adam(p, betas=0.9), r"betas must be a pair"),
    (lambda p: optim.Adam(p, eps=-1), r"eps must be a finite number in \[0, inf\)"),
    (lambda p: optim.Adam(p, weight_decay=-0.1), r"weight_decay must be"),
    (lambda p: optim.Adam(p, lr=float("inf")), r"lr must be a finite number in \[0, inf\)"),
    (lambda p: optim.Adam(p, lr=-1e-3), r"lr must be a finite number in \[0, inf\)"),  # lr=0 is torch's too
    (lambda p: optim.SGD(p, momentum=-0.5), r"momentum must be a finite number in \[0, inf\)"),
    (lambda p: optim.SGD(p, nesterov=True), r"nesterov=True requires momentum > 0"),
    (lambda p: optim.SGD(p, lr="0.1"), r"lr must be a real number, got str"),  # a TypeError, as torch's
])
def test_optimizer_settings_are_checked(make, match):
    params = rs.GRU(2, 3).parameters()
    with pytest.raises((ValueError, TypeError), match=match):
        make(params)
    for torch_make in (lambda p: torch.optim.Adam(p, betas=(1.5, 0.999)), lambda p: torch.optim.SGD(p, lr=0.1,
                                                                                                     momentum=-0.5)):
        with pytest.raises(ValueError):  # torch refuses the same
            torch_make(torch.nn.GRU(2, 3).parameters())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_threaded_time_loop():
    """The conformance kit forks to run an in-memory layer in a child. The child inherits the parent's worker pool
    object but none of its threads: a threaded time loop there waited forever (main before the fix: the child
    was ended by its 10 s alarm). Now the child builds its own pool and gets the parent's result."""
    from rnn_scratch.functional import _parallel

    saved = _parallel.MIN_BLOCK_ELEMENTS, _parallel._num_threads
    _parallel.MIN_BLOCK_ELEMENTS = 1  # every batch row its own block
    _parallel.set_num_threads(2)
    try:
        layer = make_layer("lstm", 3, 8, dtype="float64", seed=0)
        x = np.random.default_rng(0).standard_normal((4, 6, 3))
        out, _ = layer(x)  # the worker pool exists now
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                signal.alarm(10)
                code = 0 if np.array_equal(layer(x)[0], out) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        _parallel.MIN_BLOCK_ELEMENTS = saved[0]
        _parallel.set_num_threads(saved[1])
    ended = f"exit {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}"
    assert ended == "exit 0", f"the forked child ended by {ended}"
