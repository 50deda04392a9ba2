"""Checkpoints: any metadata save accepts, load gives back; a failed load changes nothing (model, optimiser);
load_model rebuilds the model; files keep sane permissions and no stale partial files."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from rnn_scratch import models
from rnn_scratch.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, load_model, save_checkpoint
from rnn_scratch.optim import SGD, Adam
from rnn_scratch.training import fit, sine_series, sliding_windows


def _trained(cell="lstm", hidden=4, opt_cls=Adam, seed=0):
    m = models.ManyToOneRegressor(cell, 1, hidden, 1, seed=seed, dtype="float64")
    opt = opt_cls(m.parameters(), lr=1e-2)
    x, y = sliding_windows(sine_series(60), 10)
    fit(m, x, y, opt, epochs=2, show_progress=False)
    return m, opt


def _snapshot(model, optimizer=None):
    snap = {k: v.copy() for k, v in model.state_dict().items()}
    if optimizer is not None:
        snap.update({f"opt:{k}": np.array(v, copy=True) for k, v in optimizer.state_dict().items()})
    return snap


def _unchanged(before, model, optimizer=None):
    after = _snapshot(model, optimizer)
    return before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def _fresh(hidden=4, opt_cls=Adam, seed=7):
    m, opt = _trained(hidden=hidden, opt_cls=opt_cls, seed=seed)
    return m, opt, _snapshot(m, opt)


# -- metadata ---------------------------------------------------------------------------------------
def test_any_metadata_save_accepts_load_gives_back(tmp_path):
    m, opt = _trained()
    meta = dict(note=None, history=[0.5, 0.25], params={"lr": 1e-3, "optimisers": ["adam", "sgd"]}, epoch=np.int64(3),
                best=np.float32(0.125), flag=True, name="run-1", shape=(2, 3))
    path = save_checkpoint(tmp_path / "ck.npz", m, opt, **meta)
    got = load_checkpoint(path, m, opt)
    assert got["note"] is None and got["history"] == [0.5, 0.25] and got["params"] == meta["params"]
    assert got["epoch"] == 3 and got["best"] == 0.125 and got["flag"] is True and got["name"] == "run-1"
    assert got["shape"] == [2, 3] and got["format_version"] == FORMAT_VERSION
    with np.load(path, allow_pickle=False) as f:  # no pickled objects inside
        assert all(f[k].dtype != object for k in f.files)


@pytest.mark.parametrize("meta, error, match", [
    (dict(format_version=3), ValueError, "reserved"),
    (dict(model_class="X"), ValueError, "reserved"),
    (dict(obj=object()), TypeError, "metadata 'obj' must be JSON data"),
    (dict(arr=np.zeros(3)), TypeError, "metadata 'arr' must be JSON data"),
    (dict(d={1: 2}), TypeError, "string keys"),
])
def test_bad_metadata_is_refused_before_anything_is_written(tmp_path, meta, error, match):
    m, opt = _trained()
    path = tmp_path / "ck.npz"
    save_checkpoint(path, m, opt, epoch=1)
    good = path.read_bytes()
    with pytest.raises(error, match=match):
        save_checkpoint(path, m, opt, **meta)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["ck.npz"]
    load_checkpoint(path, m, opt)  # still loadable


# -- all or nothing ---------------------------------------------------------------------------------
def test_optimizer_mismatches_leave_model_and_optimizer_untouched(tmp_path):
    m, opt = _trained()
    no_opt = save_checkpoint(tmp_path / "model_only.npz", m)
    with_adam = save_checkpoint(tmp_path / "adam.npz", m, opt)
    m_sgd, opt_sgd = _trained(opt_cls=lambda p, lr: SGD(p, lr=lr, momentum=0.9))
    with_sgd = save_checkpoint(tmp_path / "sgd.npz", m_sgd, opt_sgd)
    cases = [(no_opt, Adam, 4, "holds no optimiser state"), (with_sgd, Adam, 4, "holds SGD state, not Adam"),
             (with_adam, SGD, 4, "holds Adam state, not SGD"), (with_adam, Adam, 5, "does not fit this model")]
    for path, opt_cls, hidden, match in cases:
        target, target_opt, before = _fresh(hidden=hidden, opt_cls=opt_cls)
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path, target, target_opt)
        assert _unchanged(before, target, target_opt), match


def test_optimizer_of_another_model_size_is_refused_whole(tmp_path):
    m, opt = _trained(hidden=4)
    path = save_checkpoint(tmp_path / "ck.npz", m, opt)
    target, _, _ = _fresh(hidden=4)
    other = models.ManyToOneRegressor("lstm", 1, 5, 1, seed=1, dtype="float64")
    other_opt = Adam(other.parameters(), lr=1e-2)
    other_opt.step()
    before = _snapshot(target)
    with pytest.raises(CheckpointError, match="optimiser state does not fit"):
        load_checkpoint(path, target, other_opt)
    assert _unchanged(before, target)


def _corrupt_files(tmp_path, good):
    """{failure mode: path} for every way a file can be wrong."""
    blob = open(good, "rb").read()
    files = {}
    files["truncated"] = tmp_path / "trunc.npz"
    files["truncated"].write_bytes(blob[: len(blob) // 2])
    files["garbage"] = tmp_path / "garbage.npz"
    files["garbage"].write_bytes(b"\x00" * 100)
    files["npy"] = tmp_path / "single.npy"
    np.save(files["npy"], np.zeros(3))
    with np.load(good) as f:
        data = {k: f[k] for k in f.files}
    for name, change in {"version_text": ("meta/format_version", np.array("abc")),
                         "version_list": ("meta/format_version", np.array([1, 1])),
                         "version_future": ("meta/format_version", np.array(99)),
                         "wrong_class": ("meta/model_class", np.array("ManyToManyTagger")),
                         "wrong_shape": ("param/head.weight", np.zeros((2, 2))),
                         "bad_meta": ("meta/user", np.array("{not json")),
                         "pickled_object": ("meta/user", np.array([{"a": 1}], dtype=object))}.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{**data, change[0]: change[1]})
        files[name] = path
    huge = tmp_path / "huge_header.npz"  # an .npy member whose header claims an enormous array
    import zipfile
    with zipfile.ZipFile(huge, "w") as z:
        header = b"\x93NUMPY\x01\x00" + b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
        header += b" " * (118 - len(header)) + b"\n"
        z.writestr("meta/format_version.npy", header + b"\x00" * 8)
    files["oversized_header"] = huge
    return files


def test_every_failure_mode_leaves_model_and_optimizer_bit_identical(tmp_path):
    m, opt = _trained()
    good = save_checkpoint(tmp_path / "good.npz", m, opt)
    for mode, path in _corrupt_files(tmp_path, good).items():
        target, target_opt, before = _fresh()
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path, target, target_opt)
        assert str(path) in str(err.value), mode
        assert _unchanged(before, target, target_opt), mode
        with pytest.raises(CheckpointError):
            load_model(path)


def test_format_1_files_still_load(tmp_path):
    m, opt = _trained()
    entries = {"meta/format_version": np.array(1), "meta/model_class": np.array("ManyToOneRegressor"),
               "meta/epoch": np.array(3), "meta/history": np.array([0.5, 0.25])}
    entries.update({f"param/{k}": v for k, v in m.state_dict().items()})
    entries.update({f"optim/{k}": np.asarray(v) for k, v in opt.state_dict().items()})
    path = tmp_path / "v1.npz"
    np.savez(path, **entries)
    target, target_opt, _ = _fresh()
    meta = load_checkpoint(path, target, target_opt)
    assert meta["epoch"] == 3 and meta["history"] == [0.5, 0.25] and meta["format_version"] == 1
    assert all(np.array_equal(v, target.state_dict()[k]) for k, v in m.state_dict().items())
    with pytest.raises(CheckpointError, match="does not record its model's constructor arguments"):
        load_model(path)


# -- rebuilding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: models.ManyToOneRegressor("gru", 2, 5, 3, num_layers=2, seed=1, dtype="float64"),
    lambda: models.BidirectionalClassifier("lstm", 2, 3, 4, seed=1),
    lambda: models.EncoderDecoder("gru", 7, 8, 3, 5, seed=1, dtype="float64"),
    lambda: models.CharLM(9, cell="rnn", embed_size=3, hidden_size=4, seed=1),
    lambda: __import__("rnn_scratch").LSTM(3, 4, 2, True, True, bidirectional=True, dtype="float64", seed=1),
])
def test_load_model_rebuilds_model_and_optimizer(tmp_path, make):
    model = make()
    opt = Adam(model.parameters(), lr=3e-3, betas=(0.8, 0.99))
    for _, p, g in model.parameters():
        g[...] = np.random.default_rng(0).standard_normal(p.shape)
    opt.step()
    path = save_checkpoint(tmp_path / "ck.npz", model, opt, epoch=5)
    rebuilt, rebuilt_opt = load_model(path, backend="numpy", with_optimizer=True)
    assert type(rebuilt) is type(model) and rebuilt.dtype == model.dtype
    assert all(np.array_equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())
    assert (rebuilt_opt.beta1, rebuilt_opt.beta2, rebuilt_opt.lr, rebuilt_opt.step_count) == (0.8, 0.99, 3e-3, 1)
    for k, v in opt.state_dict().items():
        assert np.array_equal(np.asarray(v), np.asarray(rebuilt_opt.state_dict()[k])), k
    assert type(load_model(path)) is type(model)


# -- files ------------------------------------------------------------------------------------------
def test_file_mode_follows_umask_and_keeps_an_existing_files_mode(tmp_path):
    m, _ = _trained()
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ck.npz", m)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.chmod(path, 0o640)
        save_checkpoint(path, m)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(old)


def test_partial_files_of_killed_saves_are_cleaned_up(tmp_path):
    m, _ = _trained()
    target = tmp_path / "ck.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".ck.npz.rnn_scratch-partial-{int(dead.stdout)}-abcd1234"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / f".ck.npz.rnn_scratch-partial-{os.getpid()}-live0000"  # a save in progress (alive)
    mine.write_bytes(b"in progress")
    other = tmp_path / f".other.npz.rnn_scratch-partial-{int(dead.stdout)}-abcd1234"  # another target's
    other.write_bytes(b"x")
    save_checkpoint(target, m)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ck.npz", mine.name, other.name])
