"""The seed preset is the reference tutorial exactly: its data, its loop, its loss table, its carried-state forecast."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnn_scratch.models import ManyToOneRegressor
from rnn_scratch.training import SINE_PRESETS, forecast, sine_experiment, tutorial_sine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import tutorial_torch  # noqa: E402


def test_windows_and_targets_are_the_tutorials_exactly():
    data, x, y = tutorial_sine()
    X_ref, y_ref = tutorial_torch.tutorial_data()  # the tutorial's own loop
    t = np.linspace(0, 1020, 1020)
    assert np.array_equal(data, np.sin(t)) and data.shape == (1020,)
    assert x.shape == (1000, 20, 1) and y.shape == (1000, 1)
    assert np.array_equal(x[..., 0], X_ref) and np.array_equal(y[:, 0], y_ref)


def _twins(seed=3):
    """Our seed-preset model in float64, and its initial weights under torch's names."""
    model = ManyToOneRegressor("rnn_tanh", 1, 50, 1, seed=seed, dtype="float64")
    sd = model.state_dict()
    torch_sd = {("rnn." + k[4:]) if k.startswith("rnn.") else k.replace("head.", "fc."): v for k, v in sd.items()}
    return model, torch_sd


def test_seed_preset_matches_the_tutorials_torch_code_epoch_by_epoch_and_forecast():
    """Same initial weights, float64: the same loss at each of the 30 epochs and the same 50 carried-state forecasts."""
    model, torch_sd = _twins()
    ours = sine_experiment(**SINE_PRESETS["seed"], model=model)
    theirs = tutorial_torch.run(dtype=torch.float64, initial_state_dict=torch_sd, verbose=False)
    rel = np.abs(np.array(ours["losses"]) - theirs["losses"]) / np.abs(theirs["losses"])
    assert len(ours["losses"]) == 30 and rel.max() < 1e-8, rel.max()
    assert np.allclose(ours["forecast"], theirs["predictions"], rtol=1e-8, atol=1e-10)
    assert np.array_equal(ours["truth"], theirs["truth"])


def test_carried_and_reset_state_forecasts_differ_and_carry_is_the_tutorials():
    model, _ = _twins()
    _, x, _ = tutorial_sine()
    carried, reset = forecast(model, x[0], 10, state="carry"), forecast(model, x[0], 10, state="reset")
    assert carried[0] == reset[0] and not np.allclose(carried[1:], reset[1:])  # first call: both from zeros
    with pytest.raises(ValueError, match="state must be one of"):
        forecast(model, x[0], 3, state="keep")


@pytest.mark.slow
def test_cli_seed_preset_prints_the_tutorials_lines(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rnn_scratch", "sine", "--preset", "seed", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split(",")[0] for line in lines] == [f"Epoch {k}" for k in range(30)]
    assert all(len(line.split("Loss: ")[1]) == 6 for line in lines)  # x.xxxx
    assert "(carry state)" in r.stdout
    assert (tmp_path / "sine_forecast.png").stat().st_size > 10_000


@pytest.mark.slow
def test_default_preset_forecasts_below_1e_3():
    result = sine_experiment(**SINE_PRESETS["default"], seed=0)
    assert result["mse"] < 1e-3, result["mse"]
