"""One test per finding of the second hostile probe (issue 23) outside checkpoints and memory."""

import os

import numpy as np
import pytest

import rnn_scratch as rs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
