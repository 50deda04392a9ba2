"""Modules, losses, models, optimisers, the whole training loop, truncated BPTT, checkpoints."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import rnn_scratch as rs
from rnn_scratch import models
from rnn_scratch.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_torch_state_dict,
    save_checkpoint,
)
from rnn_scratch.functional import CELLS
from rnn_scratch.gradcheck import gradcheck, numerical_gradient, relative_error
from rnn_scratch.losses import mse, softmax_cross_entropy
from rnn_scratch.optim import SGD, Adam, clip_grad_norm, clip_grad_value
from rnn_scratch.training import fit, sine_series, sliding_windows, tbptt_gradients

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rng = np.random.default_rng(0)


# ---------------------------------------------------------------- losses
def test_mse_gradient():
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss, grad = mse(pred, target)
    assert np.isclose(loss, torch.nn.functional.mse_loss(torch.tensor(pred), torch.tensor(target)).item())
    num = numerical_gradient(lambda: mse(pred, target)[0], pred)
    assert relative_error(grad, num) < 1e-7


@pytest.mark.parametrize("ignore", [None, 2])
def test_cross_entropy_matches_torch_and_fd(ignore):
    logits = rng.standard_normal((3, 5, 4)) * 3
    targets = rng.integers(0, 4, size=(3, 5))
    loss, grad = softmax_cross_entropy(logits, targets, ignore_index=ignore)
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits).reshape(-1, 4), torch.tensor(targets).reshape(-1),
                                            ignore_index=-100 if ignore is None else ignore)
    assert np.isclose(loss, ref.item(), rtol=1e-12)
    num = numerical_gradient(lambda: softmax_cross_entropy(logits, targets, ignore_index=ignore)[0], logits)
    assert relative_error(grad, num) < 1e-7
    if ignore is not None:
        assert not grad[targets == ignore].any()


def test_cross_entropy_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([1]))
    assert np.isfinite(loss) and np.isclose(loss, 2000.0)
    assert np.isfinite(grad).all()


def test_cross_entropy_mask():
    logits = rng.standard_normal((2, 3, 4))
    targets = rng.integers(0, 4, (2, 3))
    mask = np.array([[True, True, False], [True, False, False]])
    loss, grad = softmax_cross_entropy(logits, targets, mask=mask)
    loss_ref, _ = softmax_cross_entropy(logits[mask], targets[mask])
    assert np.isclose(loss, loss_ref)
    assert not grad[~mask].any()


# ---------------------------------------------------------------- modules and models, finite differences
def _check_model(model, forward, seed=0):
    """FD over every parameter of a model (and nothing else), loss = sum(R * forward())."""
    out = forward()
    r = np.random.default_rng(seed).standard_normal(out.shape)
    model.zero_grad()
    forward()
    model.backward(r)
    arrays = {n: p for n, p, _ in model.named_parameters()}
    analytic = {n: g for n, _, g in model.named_parameters()}
    report = gradcheck(lambda: float((r * forward()).sum()), arrays, analytic)
    assert report.passed, str(report)
    return report


def test_linear_fd():
    lin = rs.Linear(3, 2, dtype="float64", seed=0)
    x = rng.standard_normal((4, 5, 3))
    r = rng.standard_normal((4, 5, 2))
    lin(x)
    dx = lin.backward(r)
    assert relative_error(dx, numerical_gradient(lambda: float((r * lin(x)).sum()), x)) < 1e-8
    _check_model(lin, lambda: lin(x))


def test_embedding_fd_with_repeated_indices():
    emb = rs.Embedding(5, 3, dtype="float64", seed=0)
    idx = np.array([[0, 1, 1], [4, 1, 0]])
    _check_model(emb, lambda: emb(idx))


def _f64(cls, *a, **k):
    return cls(*a, dtype="float64", seed=0, **k)


@pytest.mark.parametrize("cell", [c for c in CELLS if CELLS[c].nonsmooth_at is None])  # no kinks: differences
def test_models_fd(cell):
    x = rng.standard_normal((3, 4, 2))
    m = _f64(models.ManyToOneRegressor, cell, 2, 3, 2, num_layers=2)
    _check_model(m, lambda: m(x))
    m = _f64(models.ManyToManyTagger, cell, 2, 3, 3, bidirectional=True)
    _check_model(m, lambda: m(x, lengths=np.array([4, 2, 3])))
    m = _f64(models.BidirectionalClassifier, cell, 2, 3, 2)
    _check_model(m, lambda: m(x))
    v, tgt = rng.standard_normal((3, 2)), rng.standard_normal((3, 4, 1))
    for feedback in (False, True):
        m = _f64(models.OneToManyGenerator, cell, 2, 3, 1, feedback=feedback)
        _check_model(m, lambda m=m: m(v, tgt))
    src, tgt_in = rng.integers(0, 6, (2, 5)), rng.integers(0, 6, (2, 3))
    m = _f64(models.EncoderDecoder, cell, 6, 6, 3, 4)
    _check_model(m, lambda: m(src, tgt_in))
    m = _f64(models.CharLM, 6, cell=cell, embed_size=3, hidden_size=4)
    _check_model(m, lambda: m(src)[0])


def test_models_on_padded_batch_ignore_padding():
    m = _f64(models.ManyToOneRegressor, "lstm", 2, 3, 1)
    x = rng.standard_normal((2, 5, 2))
    y_full = m(x, lengths=np.array([5, 3]))
    x2 = x.copy()
    x2[1, 3:] = 99.0  # garbage in the padding
    assert np.allclose(y_full, m(x2, lengths=np.array([5, 3])))


def test_charlm_sample_is_reproducible():
    m = models.CharLM(7, hidden_size=8, seed=0)
    a = m.sample([1, 2], 20, 0.8, np.random.default_rng(3))
    b = m.sample([1, 2], 20, 0.8, np.random.default_rng(3))
    assert a == b and len(a) == 20 and all(0 <= t < 7 for t in a)


# ---------------------------------------------------------------- optimisers vs torch
def _pair(seed=0):
    ours = rs.GRU(3, 4, dtype="float64", seed=seed)
    theirs = torch.nn.GRU(3, 4).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("make", [
    lambda p, tp: (Adam(p, lr=1e-2), torch.optim.Adam(tp, lr=1e-2)),
    lambda p, tp: (Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                   torch.optim.Adam(tp, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    lambda p, tp: (SGD(p, lr=0.1), torch.optim.SGD(tp, lr=0.1)),
    lambda p, tp: (SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
                   torch.optim.SGD(tp, lr=0.05, momentum=0.9, weight_decay=0.01)),
    lambda p, tp: (SGD(p, lr=0.05, momentum=0.9, nesterov=True), torch.optim.SGD(tp, lr=0.05, momentum=0.9,
                                                                                  nesterov=True)),
], ids=["adam", "adam-options", "sgd", "sgd-momentum", "sgd-nesterov"])
def test_optimizers_match_torch_step_for_step(make):
    ours, theirs = _pair()
    opt, topt = make(ours.parameters(), theirs.parameters())
    for step in range(6):
        x = np.random.default_rng(step).standard_normal((5, 2, 3))
        opt.zero_grad()
        topt.zero_grad()
        out, _ = ours(x)
        ours.backward(np.cos(out))
        tout, _ = theirs(torch.tensor(x))
        torch.sin(tout).sum().backward()  # d/dout sin(out) = cos(out): the same gradient
        opt.step()
        topt.step()
        for name, p in theirs.named_parameters():
            assert relative_error(ours.params[name], p.detach().numpy()) < 1e-12, (step, name)


def test_clipping_matches_torch():
    ours, theirs = _pair()
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    out, _ = ours(x)
    ours.backward(100 * np.ones_like(out))
    tout, _ = theirs(torch.tensor(x))
    (100 * tout).sum().backward()
    norm = clip_grad_norm(ours.parameters(), 1.0)
    tnorm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    assert np.isclose(norm, tnorm.item(), rtol=1e-12)
    for name, p in theirs.named_parameters():
        assert relative_error(ours.grads[name], p.grad.numpy()) < 1e-12
    before = clip_grad_value(ours.parameters(), 0.01)
    assert np.isclose(before, 1.0, rtol=1e-5)
    assert max(np.abs(g).max() for g in ours.grads.values()) <= 0.01


# ---------------------------------------------------------------- the whole loop against torch
@pytest.mark.slow
def test_whole_training_loop_matches_torch():
    """Vanilla RNN forecaster + Adam, same weights and data: same loss at every epoch (float64)."""
    series = sine_series(200)
    x, y = sliding_windows(series, 20)
    model = models.ManyToOneRegressor("rnn", 1, 16, 1, seed=0, dtype="float64")
    rnn_t = torch.nn.RNN(1, 16, batch_first=True).double()
    head_t = torch.nn.Linear(16, 1).double()
    sd = model.state_dict()
    rnn_t.load_state_dict({k[4:]: torch.tensor(v) for k, v in sd.items() if k.startswith("rnn.")})
    head_t.load_state_dict({k[5:]: torch.tensor(v) for k, v in sd.items() if k.startswith("head.")})
    losses = fit(model, x, y, Adam(model.parameters(), lr=1e-2), epochs=30, show_progress=False)
    topt = torch.optim.Adam(list(rnn_t.parameters()) + list(head_t.parameters()), lr=1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    tlosses = []
    for _ in range(30):
        topt.zero_grad()
        out, _ = rnn_t(xt)
        loss = torch.nn.functional.mse_loss(head_t(out[:, -1]), yt)
        loss.backward()
        topt.step()
        tlosses.append(loss.item())
    rel = np.abs(np.array(losses) - np.array(tlosses)) / np.abs(np.array(tlosses))
    assert rel.max() < 1e-8, rel
    assert losses[-1] < losses[0] / 5  # it actually learned


# ---------------------------------------------------------------- truncated BPTT
@pytest.mark.parametrize("cls", [rs.LSTM, rs.GRU])
def test_tbptt_equals_truncated_graph(cls):
    B, T, chunk = 2, 11, 4
    layer = cls(2, 3, batch_first=True, dtype="float64", seed=0)
    head = rs.Linear(3, 1, dtype="float64", seed=1)
    stream = rng.standard_normal((B, T, 2))
    targets = rng.standard_normal((B, T, 1))
    losses, _ = tbptt_gradients(layer, head, stream, targets, chunk)
    tl = (torch.nn.LSTM if cls is rs.LSTM else torch.nn.GRU)(2, 3, batch_first=True).double()
    th = torch.nn.Linear(3, 1).double()
    tl.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    th.load_state_dict({k: torch.tensor(v) for k, v in head.state_dict().items()})
    state, tlosses = None, []
    for s in range(0, T, chunk):
        out, state = tl(torch.tensor(stream[:, s:s + chunk]), state)
        loss = torch.nn.functional.mse_loss(th(out), torch.tensor(targets[:, s:s + chunk]))
        loss.backward()
        tlosses.append(loss.item())
        state = tuple(h.detach() for h in state) if isinstance(state, tuple) else state.detach()
    assert np.allclose(losses, tlosses, rtol=1e-12)
    for name, p in tl.named_parameters():
        assert relative_error(layer.grads[name], p.grad.numpy()) < 1e-10, name
    # and it differs from full BPTT: the truncation is real
    full = cls(2, 3, batch_first=True, dtype="float64", seed=0)
    out, _ = full(stream)
    full.backward(head.backward(mse(head(out), targets)[1]))
    assert not np.allclose(full.grads["weight_hh_l0"], layer.grads["weight_hh_l0"])


# ---------------------------------------------------------------- checkpoints
def _trained():
    m = models.ManyToOneRegressor("lstm", 1, 4, 1, seed=0, dtype="float64")
    opt = Adam(m.parameters(), lr=1e-2)
    x, y = sliding_windows(sine_series(60), 10)
    fit(m, x, y, opt, epochs=3, show_progress=False)
    return m, opt, x, y


def test_checkpoint_round_trip_exact(tmp_path):
    m, opt, x, y = _trained()
    path = save_checkpoint(tmp_path / "ck.npz", m, opt, epoch=3, note="hello")
    m2 = models.ManyToOneRegressor("lstm", 1, 4, 1, seed=99, dtype="float64")
    opt2 = Adam(m2.parameters(), lr=1e-2)
    meta = load_checkpoint(path, m2, opt2)
    assert meta["epoch"] == 3 and meta["note"] == "hello" and meta["format_version"] == FORMAT_VERSION
    for k, v in m.state_dict().items():
        assert np.array_equal(v, m2.state_dict()[k])
    # continuing training from the checkpoint is identical to never having stopped
    fit(m, x, y, opt, epochs=2, show_progress=False)
    fit(m2, x, y, opt2, epochs=2, show_progress=False)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, m2.state_dict()[k])
    with np.load(path, allow_pickle=False) as f:  # no pickled objects inside
        assert all(f[k].dtype != object for k in f.files)


def test_checkpoint_corrupt_truncated_wrong_shape(tmp_path):
    m, opt, _, _ = _trained()
    path = str(tmp_path / "ck.npz")
    save_checkpoint(path, m, opt)
    blob = open(path, "rb").read()
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(blob[: len(blob) // 2])
    target = models.ManyToOneRegressor("lstm", 1, 4, 1, seed=5, dtype="float64")
    before = target.state_dict()
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated, target)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage, target)
    bigger = models.ManyToOneRegressor("lstm", 1, 5, 1, seed=5, dtype="float64")
    with pytest.raises(CheckpointError, match=r"does not fit this model: .*shape"):
        load_checkpoint(path, bigger)
    other = models.ManyToManyTagger("lstm", 1, 4, 1, seed=5, dtype="float64")
    with pytest.raises(CheckpointError, match="holds a ManyToOneRegressor, not a ManyToManyTagger"):
        load_checkpoint(path, other)
    assert all(np.array_equal(v, target.state_dict()[k]) for k, v in before.items())  # untouched


def test_checkpoint_wrong_version(tmp_path):
    m, _, _, _ = _trained()
    path = str(tmp_path / "ck.npz")
    save_checkpoint(path, m)
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    data["meta/format_version"] = np.array(99)
    np.savez(path, **data)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path, m)


def test_failed_save_leaves_existing_checkpoint_intact(tmp_path, monkeypatch):
    m, opt, _, _ = _trained()
    path = str(tmp_path / "ck.npz")
    save_checkpoint(path, m, opt)
    good = open(path, "rb").read()

    def boom(f, **entries):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, m, opt)
    assert open(path, "rb").read() == good
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temp file left behind


def test_import_torch_state_dict_into_model():
    t = torch.nn.LSTM(1, 4, batch_first=True).double()
    m = models.ManyToOneRegressor("lstm", 1, 4, 1, dtype="float64")
    load_torch_state_dict(m, t.state_dict(), prefix="rnn.")
    x = rng.standard_normal((2, 7, 1))
    out, _ = t(torch.tensor(x))
    _, (h, _) = m.rnn(x)
    assert relative_error(h[-1], out[:, -1].detach().numpy()) < 1e-12
    with pytest.raises(ValueError, match="keys this module lacks"):
        load_torch_state_dict(m, torch.nn.LSTM(1, 4, num_layers=2).state_dict(), prefix="rnn.")


# ---------------------------------------------------------------- CLI and examples (fast mode)
def _run(*args):
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.slow
def test_cli_sine(tmp_path):
    out = _run("-m", "rnn_scratch", "sine", "--epochs", "3", "--out", str(tmp_path))
    assert "forecast MSE over 50 steps" in out
    assert (tmp_path / "sine_forecast.png").stat().st_size > 10_000
    assert (tmp_path / "sine_loss.png").exists()


@pytest.mark.slow
def test_cli_gradflow_quick(tmp_path):
    out = _run("-m", "rnn_scratch", "gradflow", "--steps", "30", "--epochs", "2", "--radii", "0.5", "1.5",
               "--out", str(tmp_path), "--no-progress")
    assert "steps back until the gradient falls below" in out
    assert {p.name for p in tmp_path.iterdir()} >= {"gradflow_distance.png", "gradflow_training_heatmap.png",
                                                    "gradflow_clipping.png"}


@pytest.mark.slow
def test_cli_gradcheck_and_bench_quick(tmp_path):
    out = _run("-m", "rnn_scratch", "gradcheck", "--cell", "gru", "--layers", "2", "--bidirectional",
               "--lengths", "5", "2", "3")
    assert "PASS" in out
    out = _run("-m", "rnn_scratch", "bench", "--quick", "--sizes", "tiny", "--cells", "gru", "--sweep-max", "64",
               "--backends", "numpy", "--out", str(tmp_path), "--no-progress")
    assert "gru" in out and (tmp_path / "bench_cpu.json").exists()


def test_cli_help_lists_commands():
    out = _run("-m", "rnn_scratch", "--help")
    for name in ("sine", "char", "gradcheck", "demo", "gradflow", "bench"):
        assert name in out


@pytest.mark.slow
@pytest.mark.parametrize("backend", [None, "numpy"], ids=["auto", "numpy"])
@pytest.mark.parametrize("script, args", [
    ("sine_forecast.py", ["--epochs", "2"]),
    ("char_rnn.py", ["--epochs", "1"]),
    ("seq2seq_reverse.py", ["--epochs", "1"]),
    ("bidirectional_tagging.py", ["--epochs", "1"]),
    ("one_to_many.py", ["--epochs", "1"]),
    ("vanishing_gradients.py", ["--steps", "60"]),
])
def test_examples_run(script, args, backend, tmp_path):
    """Every example runs unchanged with the backend chosen automatically (CuPy where a GPU works) and with NumPy."""
    _run(os.path.join("examples", script), *args, *([] if backend is None else ["--backend", backend]),
         "--out", str(tmp_path))
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())


@pytest.mark.slow
def test_check_your_lstm_example_runs():
    """The conformance-kit example (NumPy only: the kit compares in float64 on the host)."""
    out = _run(os.path.join("examples", "check_your_lstm.py"), "--max-examples", "15")
    assert "DOES NOT CONFORM" in out and "likely cause: the tanh' factor" in out and out.rstrip().endswith(
        "lstm_backward ok")
