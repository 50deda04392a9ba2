"""Torch habits that carry over: unbatched 2-D input, the ``hx=`` keyword, ``load_state_dict(strict=False)``."""

import numpy as np
import pytest
import torch

import rnn_scratch as rs
from rnn_scratch.functional import CELLS
from rnn_scratch.gradcheck import relative_error
from rnn_scratch.layers import make_layer
from rnn_scratch.testing import LayerConfig

from .torch_ref import torch_module


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_matches_torch(cell, bidirectional, batch_first):
    """torch takes x (T, I) and h0 (L*D, H) and returns out (T, D*H) and h_n (L*D, H); so do we, with gradients."""
    rng = np.random.default_rng(0)
    kw = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    ours = make_layer(cell, 3, 4, dtype="float64", seed=0, **kw)
    theirs = torch_module(LayerConfig(cell, 3, 4, **kw))
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    D = 2 if bidirectional else 1
    x = rng.standard_normal((5, 3))
    states = tuple(rng.standard_normal((2 * D, 4)) for _ in ours.cell.state_names)
    out, finals = ours.forward_states(x, states)
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    out_t, fin_t = theirs(xt, tuple(st) if len(st) > 1 else st[0])  # torch's form
    fin_t = fin_t if len(st) > 1 else (fin_t,)
    assert out.shape == tuple(out_t.shape) == (5, D * 4)
    assert relative_error(out, out_t.detach().numpy()) < 1e-12
    dout = rng.standard_normal(out.shape)
    dfin = tuple(rng.standard_normal(f.shape) for f in finals)
    dx, d0 = ours.backward_states(dout, dfin)
    loss = (out_t * torch.tensor(dout)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(fin_t, dfin))
    loss.backward()
    assert dx.shape == x.shape and relative_error(dx, xt.grad.numpy()) < 1e-12
    for a, b in zip(d0, st):
        assert a.shape == (2 * D, 4) and relative_error(a, b.grad.numpy()) < 1e-12
    for name, p in theirs.named_parameters():
        assert relative_error(ours.grads[name], p.grad.numpy()) < 1e-12, name


def test_unbatched_errors_name_the_shapes():
    gru = rs.GRU(3, 4, dtype="float64")
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers \* num_directions=1, hidden_size=4\) "
                                         r"for unbatched x, got shape \(1, 1, 4\)"):
        gru(np.ones((5, 3)), np.zeros((1, 1, 4)))
    with pytest.raises(ValueError, match="lengths needs batched x"):
        gru(np.ones((5, 3)), lengths=np.array([3]))
    gru(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"dout must have shape \(5, 4\)"):
        gru.backward(np.ones((5, 1, 4)))


def test_hx_keyword():
    rnn, lstm = rs.RNN(2, 3, dtype="float64", seed=0), rs.LSTM(2, 3, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 2))
    h = np.full((1, 1, 3), 0.3)
    assert np.array_equal(rnn(x, hx=h)[0], rnn(x, h)[0])
    assert np.array_equal(lstm(x, hx=(h, h))[0], lstm(x, (h, h))[0])
    with pytest.raises(TypeError, match="give the initial state as h0 or as hx, not both"):
        rnn(x, h, hx=h)


def test_load_state_dict_strict_false_matches_torch():
    ours = rs.LSTM(3, 4, num_layers=2, dtype="float64", seed=0)
    theirs = torch.nn.LSTM(3, 4, num_layers=2).double()
    partial = {k: v for k, v in theirs.state_dict().items() if k.endswith("l0")}
    partial["extra.weight"] = torch.zeros(2)
    before = ours.state_dict()
    with pytest.raises(ValueError, match="state_dict keys do not match"):
        ours.load_state_dict(partial)
    assert all(np.array_equal(before[k], v) for k, v in ours.state_dict().items())
    result = ours.load_state_dict(partial, strict=False)
    reference = torch.nn.LSTM(3, 4, num_layers=2).double().load_state_dict(partial, strict=False)
    assert sorted(result.missing_keys) == sorted(reference.missing_keys)
    assert sorted(result.unexpected_keys) == sorted(reference.unexpected_keys)
    for k, v in ours.state_dict().items():
        expected = partial[k].numpy() if k in partial else before[k]
        assert np.array_equal(v, expected), k
    with pytest.raises(ValueError, match=r"has shape \(2, 2\), expected"):  # shapes are still checked
        ours.load_state_dict({"weight_ih_l0": np.zeros((2, 2))}, strict=False)
