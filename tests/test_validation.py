"""Bad input raises a clear ValueError/TypeError that names the argument and the expected shape."""

import numpy as np
import pytest

import rnn_scratch as rs
from rnn_scratch import backend as be


class FakeCupyArray:
    """Stands in for an array of the other backend where no GPU exists."""


@pytest.fixture
def lstm():
    return rs.LSTM(3, 4, num_layers=2, dtype="float64", backend="numpy", seed=0)


@pytest.fixture
def gru():
    return rs.GRU(3, 4, bidirectional=True, batch_first=True, dtype="float64", backend="numpy", seed=0)


def x64(*shape):
    return np.random.default_rng(0).standard_normal(shape)


@pytest.mark.parametrize("shape", [(5, 2, 3, 1), (3,)])  # (5, 3) is unbatched input, as torch allows
def test_wrong_rank(lstm, shape):
    with pytest.raises(ValueError, match=r"x must be 3-D \(seq_len, batch, input_size=3\).*got shape"):
        lstm(x64(*shape))


def test_wrong_rank_batch_first_names_layout(gru):
    with pytest.raises(ValueError, match=r"x must be 3-D \(batch, seq_len, input_size=3\)"):
        gru(x64(2, 3, 3, 1))


def test_wrong_feature_size(lstm):
    with pytest.raises(ValueError, match=r"x must have shape \(seq_len, batch, input_size=3\), got shape \(5, 2, 4\)"):
        lstm(x64(5, 2, 4))


def test_empty_sequence(lstm):
    with pytest.raises(ValueError, match="x must have shape .* seq_len and batch >= 1"):
        lstm(x64(0, 2, 3))


@pytest.mark.parametrize("bad", [np.ones((5, 2, 3), dtype=np.int64), np.ones((5, 2, 3), dtype=bool)])
def test_non_float_dtype(lstm, bad):
    with pytest.raises(TypeError, match="x must be a floating array of dtype float64, got dtype"):
        lstm(bad)


def test_float_dtype_mismatch(lstm):
    with pytest.raises(TypeError, match=r"x has dtype float32 but the layer's parameters are float64"):
        lstm(x64(5, 2, 3).astype(np.float32))


def test_not_an_array(lstm):
    with pytest.raises(TypeError, match="x must be a numpy array, got list"):
        lstm([[[0.0, 0.0, 0.0]]])


def test_nan_input(lstm):
    x = x64(5, 2, 3)
    x[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        lstm(x)


def test_nan_state(gru):
    h0 = np.zeros((2, 2, 4))
    h0[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="h0 contains NaN or infinity"):
        gru(x64(2, 5, 3), h0)


def test_wrong_state_shape(lstm):
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers \* num_directions=2, batch=2, "
                                         r"hidden_size=4\), got shape \(1, 2, 4\)"):
        lstm(x64(5, 2, 3), (np.zeros((1, 2, 4)), np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match=r"c0 must have shape .*got shape \(2, 3, 4\)"):
        lstm(x64(5, 2, 3), (np.zeros((2, 2, 4)), np.zeros((2, 3, 4))))


def test_lstm_state_must_be_pair(lstm):
    with pytest.raises(TypeError, match=r"state for LSTM must be a tuple \(h0, c0\)"):
        lstm(x64(5, 2, 3), np.zeros((2, 2, 4)))


def test_state_dtype(gru):
    with pytest.raises(TypeError, match="h0 has dtype float32"):
        gru(x64(2, 5, 3), np.zeros((2, 2, 4), dtype=np.float32))


@pytest.mark.parametrize("lengths, match", [
    ([5, 0], r"lengths must lie in 1..seq_len=5, got values from 0 to 5"),
    ([5, -1], r"lengths must lie in 1..seq_len=5, got values from -1 to 5"),
    ([6, 1], r"lengths must lie in 1..seq_len=5, got values from 1 to 6"),
    ([5], r"lengths must have one entry per batch element: expected shape \(2,\), got \(1,\)"),
    ([[5, 5]], r"lengths must have one entry per batch element"),
])
def test_bad_lengths_values(lstm, lengths, match):
    with pytest.raises(ValueError, match=match):
        lstm(x64(5, 2, 3), lengths=np.array(lengths))


def test_lengths_not_integer(lstm):
    with pytest.raises(TypeError, match="lengths must be integers, got dtype float64"):
        lstm(x64(5, 2, 3), lengths=np.array([5.0, 2.0]))


def test_other_backend_array(lstm, monkeypatch):
    monkeypatch.setattr(be, "is_cupy_array", lambda a: isinstance(a, FakeCupyArray))
    monkeypatch.setattr("rnn_scratch.validation.is_cupy_array", lambda a: isinstance(a, FakeCupyArray))
    with pytest.raises(TypeError, match=r"x is a cupy array but this layer runs on numpy; move it with "
                                        r"rnn_scratch.backend.to_backend\(x, 'numpy'\)"):
        lstm(FakeCupyArray())


def test_numpy_array_to_cupy_layer(monkeypatch):
    """A NumPy array given to a layer on CuPy: checked without a GPU by the validation helper itself."""
    from rnn_scratch.validation import check_array

    with pytest.raises(TypeError, match=r"x is a numpy array but this layer runs on cupy"):
        check_array(x64(2, 2, 2), "x", backend="cupy")


def test_backward_before_forward(lstm):
    with pytest.raises(ValueError, match=r"LSTM.backward\(\) called before forward\(\)"):
        lstm.backward(np.zeros((5, 2, 4)))


def test_backward_wrong_dout_shape(lstm):
    lstm(x64(5, 2, 3))
    with pytest.raises(ValueError, match=r"dout must have shape \(5, 2, 4\), got shape \(5, 2, 3\)"):
        lstm.backward(np.zeros((5, 2, 3)))


def test_backward_wrong_dstate_shape(lstm):
    lstm(x64(5, 2, 3))
    with pytest.raises(ValueError, match=r"dc_n must have shape"):
        lstm.backward(None, (None, np.zeros((2, 1, 4))))


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=0, hidden_size=3), "input_size must be an integer >= 1, got 0"),
    (dict(input_size=2, hidden_size=2.5), "hidden_size must be an integer >= 1, got 2.5"),
    (dict(input_size=2, hidden_size=3, num_layers=0), "num_layers must be an integer >= 1"),
    (dict(input_size=2, hidden_size=3, dropout=1.0), r"dropout must be a probability in \[0, 1\)"),
    (dict(input_size=2, hidden_size=3, nonlinearity="sigmoid"), "nonlinearity must be 'tanh' or 'relu'"),
    (dict(input_size=2, hidden_size=3, backend="tpu"), "argument backend must be one of"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rs.RNN(**kwargs)


def test_bad_dtype_argument():
    with pytest.raises(TypeError, match="dtype must be 'float32' or 'float64', got float16"):
        rs.GRU(2, 3, dtype="float16")


def test_load_state_dict_checks_keys_and_shapes(lstm):
    sd = lstm.state_dict()
    before = {k: v.copy() for k, v in sd.items()}
    bad = dict(sd)
    bad["weight_hh_l1"] = np.zeros((16, 5))
    bad["weight_ih_l0"] = np.ones_like(sd["weight_ih_l0"])
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l1'\] has shape \(16, 5\), expected \(16, 4\)"):
        lstm.load_state_dict(bad)
    assert all(np.array_equal(lstm.params[k], before[k]) for k in before)  # nothing written
    missing = dict(sd)
    missing.pop("bias_hh_l0")
    missing["bias_hh_l9"] = np.zeros(16)
    with pytest.raises(ValueError, match=r"missing \['bias_hh_l0'\], unexpected \['bias_hh_l9'\]"):
        lstm.load_state_dict(missing)
