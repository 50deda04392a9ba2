"""Checkpointed BPTT gives full BPTT's gradients (float64), for every cell, direction, depth and padding."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnn_scratch as rs
from rnn_scratch.functional import CELLS, default_every, sequence_backward, sequence_forward
from rnn_scratch.functional.recompute import segments
from rnn_scratch.gradcheck import relative_error
from rnn_scratch.testing import LayerConfig, LayerInputs, examples, layer_configs, layer_inputs

from .torch_ref import torch_reference


def _run(layer, inp, dout_seed):
    out, finals = layer.forward_states(inp.x, inp.states, inp.lengths)
    rng = np.random.default_rng(dout_seed)
    dout = rng.standard_normal(out.shape)
    dfinals = tuple(rng.standard_normal(f.shape) for f in finals)
    dx, d0 = layer.backward_states(dout, dfinals)
    named = {"out": out, "dx": dx, **{f"final{k}": f for k, f in enumerate(finals)},
             **{f"d0_{k}": d for k, d in enumerate(d0)}, **{k: v.copy() for k, v in layer.grads.items()}}
    return named, dout, dfinals


@settings(max_examples=examples(40))
@given(data=st.data(), every=st.integers(1, 9))
def test_checkpointed_equals_full_bptt(data, every):
    cfg = data.draw(layer_configs(hidden_size=st.integers(1, 5)))
    inp = data.draw(layer_inputs(cfg, seq_len=st.integers(1, 12)))
    full = cfg.build(dtype="float64", seed=inp.seed % 1000)
    ckpt = cfg.build(dtype="float64", seed=inp.seed % 1000, memory="checkpoint", checkpoint_every=every)
    a, _, _ = _run(full, inp, inp.seed)
    b, _, _ = _run(ckpt, inp, inp.seed)
    worst = max(relative_error(b[k], v) for k, v in a.items())
    assert worst < 1e-12, (cfg, every, worst)


@pytest.mark.parametrize("cell", list(CELLS))
def test_checkpointed_matches_torch(cell):
    """Torch parity stays exact with memory='checkpoint' (default segment length), bidirectional, 2 layers, lengths."""
    cfg = LayerConfig(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=list(CELLS).index(cell) % 4 in (1, 2))
    rng = np.random.default_rng(0)
    T, B = 23, 3
    x = rng.standard_normal((B, T, 3) if cfg.batch_first else (T, B, 3))
    inp = LayerInputs(x=x, states=None, lengths=np.array([23, 7, 16]), seq_len=T, batch=B)
    layer = cfg.build(dtype="float64", seed=0, memory="checkpoint")
    ours, dout, dfinals = _run(layer, inp, 1)
    ref = torch_reference(cfg, layer.state_dict(), inp, dout, dfinals, "float64")
    assert relative_error(ours["out"], ref["out"]) < 1e-9 and relative_error(ours["dx"], ref["dx"]) < 1e-9
    for name, g in ref["grads"].items():
        assert relative_error(ours[name], g) < 1e-9, name


def test_functional_checkpointing_and_segments():
    rng = np.random.default_rng(0)
    params = {"weight_ih": rng.standard_normal((16, 2)), "weight_hh": rng.standard_normal((16, 4)) * 0.5,
              "bias_ih": rng.standard_normal(16), "bias_hh": None}
    params["bias_hh"] = np.zeros(16)
    x = rng.standard_normal((10, 3, 2))
    state = (rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))
    for reverse in (False, True):
        out_f, st_f, cache_f = sequence_forward("lstm", x, state, params, reverse=reverse)
        out_c, st_c, cache_c = sequence_forward("lstm", x, state, params, reverse=reverse, checkpoint_every=3)
        assert len(cache_c.checkpoints) == 4
        assert np.allclose(out_f, out_c, rtol=1e-14, atol=0) and all(np.array_equal(a, b) for a, b in
                                                                     zip(st_f, st_c))
        dout = rng.standard_normal(out_f.shape)
        full, ckpt = sequence_backward("lstm", dout, None, cache_f), sequence_backward("lstm", dout, None, cache_c)
        assert relative_error(full[0], ckpt[0]) < 1e-13
        assert all(relative_error(full[2][k], ckpt[2][k]) < 1e-13 for k in full[2])
    assert [(s.start, s.stop) for s in segments(10, 3, False)] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [(s.start, s.stop) for s in segments(10, 3, True)] == [(9, 10), (6, 9), (3, 6), (0, 3)]
    assert default_every(10_000) == 100 and default_every(1) == 1


def test_full_bptt_that_cannot_fit_is_refused_naming_the_memory():
    layer = rs.LSTM(1, 128, check_finite=False)
    need = layer.bptt_bytes(100_000, 32)
    assert need > 10 * layer.bptt_bytes(100_000, 32, "checkpoint")  # the output stays
    x = np.zeros((100_000, 32, 1), dtype="float32")
    with mock.patch("rnn_scratch.backend.available_bytes", return_value=need // 2):
        with pytest.raises(MemoryError, match=r"memory='full': seq_len=100000, batch=32 needs about \d+\.\d GiB "
                                              r".* memory='checkpoint' needs about"):
            layer(x)


def test_memory_arguments_are_checked():
    with pytest.raises(ValueError, match=r"memory must be one of \('full', 'checkpoint'\)"):
        rs.GRU(2, 3, memory="low")
    with pytest.raises(ValueError, match="checkpoint_every must be None"):
        rs.GRU(2, 3, memory="checkpoint", checkpoint_every=0)
    assert "memory='checkpoint', checkpoint_every=5" in repr(rs.GRU(2, 3, memory="checkpoint", checkpoint_every=5))
