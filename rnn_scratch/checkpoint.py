"""Checkpoints: model (and optimiser) state in one ``.npz``, no pickle, written atomically, loaded all-or-nothing.

Layout of the archive (every entry a plain array, loaded with ``allow_pickle=False``)::

    meta/format_version   int, FORMAT_VERSION
    meta/model_class      str, the model's class name
    meta/config           str, JSON: {"module", "class", "kwargs"}: the constructor call that rebuilds the model
                          (absent when the constructor arguments are not JSON values)
    meta/optimizer        str, JSON: {"class", "hyperparameters"} (when an optimiser was saved)
    meta/user             str, JSON: the extra metadata given to save_checkpoint
    param/<name>          every parameter, names as in state_dict()
    optim/<key>           optimiser state (step count, lr, moments)

Saving writes a temporary file beside the target (``.<name>.rnn_scratch-partial-<pid>-<random>``)
and renames it over the target, so a crash or error mid-write never leaves a half-written
checkpoint in place of a good one; partial files of saves whose process has died are removed by
the next save to the same target. The file gets the permissions a new file gets under the umask,
or keeps those of the file it replaces.

Loading reads and checks everything first (format version, model class, every key and shape of
the parameters and of the optimiser state, the metadata), and only then writes into the model and
the optimiser: a failed load leaves both as they were. Format-1 files (metadata as one array per
key) still load.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import json
import os
import secrets
import zipfile

import numpy as np

from .backend import to_numpy

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
RESERVED_META = ("format_version", "model_class", "config", "optimizer", "user")


class CheckpointError(ValueError):
    """The file is not a readable checkpoint of this format, or does not fit the model or optimiser."""


# -- JSON values ------------------------------------------------------------------------------------
def _json_value(value, where):
    """``value`` as plain JSON data (NumPy scalars to Python numbers, tuples to lists); TypeError naming
    ``where`` when it is not JSON data."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{where}[{k}]") for k, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where} must have string keys, got {sorted(map(repr, value))}")
        return {k: _json_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{where} must be JSON data (None, bool, int, float, str, or lists and dicts of them), "
                    f"got {type(value).__name__}")


def _json_entry(value):
    return np.array(json.dumps(value))


def _model_config(model):
    """The JSON constructor record of a model, or None when its arguments are not JSON data."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    try:
        kwargs = _json_value(config, "config")
    except TypeError:
        return None
    return {"module": type(model).__module__, "class": type(model).__name__, "kwargs": kwargs}


# -- saving -----------------------------------------------------------------------------------------
def save_checkpoint(path, model, optimizer=None, **meta):
    """Write ``model``'s parameters (and ``optimizer``'s state) to ``path`` atomically; returns the path.

    ``meta``: extra metadata, any JSON data (None, bool, int, float, str, lists and dicts of them;
    tuples come back as lists, NumPy scalars as Python numbers); checked before anything is written.
    """
    path = os.fspath(path)
    reserved = sorted(set(meta) & set(RESERVED_META))
    if reserved:
        raise ValueError(f"metadata keys {reserved} are reserved by the checkpoint format; use other names")
    user = {key: _json_value(value, f"metadata {key!r}") for key, value in meta.items()}
    entries = {"meta/format_version": np.array(FORMAT_VERSION), "meta/model_class": np.array(type(model).__name__),
               "meta/user": _json_entry(user)}
    config = _model_config(model)
    if config is not None:
        entries["meta/config"] = _json_entry(config)
    for name, value in model.state_dict().items():
        entries[f"param/{name}"] = to_numpy(value)
    if optimizer is not None:
        entries["meta/optimizer"] = _json_entry({"class": type(optimizer).__name__,
                                                 "hyperparameters": optimizer.hyperparameters})
        for key, value in optimizer.state_dict().items():
            entries[f"optim/{key}"] = to_numpy(value) if hasattr(value, "shape") else np.asarray(value)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    _remove_stale_partials(path)
    tmp = _partial_name(path, os.getpid())
    mode = _file_mode(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _partial_name(path, pid):
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.rnn_scratch-partial-{pid}-{secrets.token_hex(4)}")


def _remove_stale_partials(path):
    """Partial files of earlier saves to ``path`` whose process is gone (a save that was killed)."""
    directory, name = os.path.split(os.path.abspath(path))
    for partial in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.rnn_scratch-partial-*")):
        try:
            pid = int(partial.rsplit("-partial-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if not _process_alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(partial)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _file_mode(path):
    """The mode of the file being replaced, else what a new file gets under the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# -- loading ----------------------------------------------------------------------------------------
class _Checkpoint:
    """A checkpoint file read and checked in memory: nothing of it has been applied yet."""

    def __init__(self, path):
        self.path = path
        self.data = _read_entries(path)
        self.version = self._version()
        self.model_class = self._string("meta/model_class")
        self.params = {k[len("param/"):]: v for k, v in self.data.items() if k.startswith("param/")}
        self.optim = {k[len("optim/"):]: v for k, v in self.data.items() if k.startswith("optim/")}
        self.meta = self._meta()
        self.config = self._json("meta/config") if "meta/config" in self.data else None
        self.optimizer = self._json("meta/optimizer") if "meta/optimizer" in self.data else None

    def _version(self):
        version = self.data.get("meta/format_version")
        if version is None:
            raise CheckpointError(f"{self.path} has no meta/format_version: not an rnn_scratch checkpoint")
        if version.shape != () or version.dtype.kind not in "iu":
            raise CheckpointError(f"{self.path} has a malformed meta/format_version ({version.dtype}, shape "
                                  f"{version.shape}): not an rnn_scratch checkpoint")
        if int(version) not in READABLE_VERSIONS:
            raise CheckpointError(f"{self.path} has format version {int(version)}, this rnn_scratch reads "
                                  f"{list(READABLE_VERSIONS)}")
        return int(version)

    def _string(self, key):
        value = self.data.get(key)
        if value is None or value.shape != () or value.dtype.kind != "U":
            raise CheckpointError(f"{self.path} has no readable {key}")
        return str(value)

    def _json(self, key):
        try:
            return json.loads(self._string(key))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{self.path}: {key} is not valid JSON ({exc})") from exc

    def _meta(self):
        if self.version >= 2:
            meta = self._json("meta/user")
        else:  # format 1: one array per key
            meta = {k[len("meta/"):]: v.item() if v.shape == () else v.tolist()
                    for k, v in self.data.items() if k.startswith("meta/") and k[5:] not in RESERVED_META}
        return {"format_version": self.version, "model_class": self.model_class, **meta}

    def check_model(self, model):
        if self.model_class != type(model).__name__:
            raise CheckpointError(f"{self.path} holds a {self.model_class}, not a {type(model).__name__}")
        try:
            model.check_state_dict(self.params)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{self.path} does not fit this model: {exc}") from exc

    def check_optimizer(self, optimizer):
        if not self.optim:
            raise CheckpointError(f"{self.path} holds no optimiser state")
        saved = (self.optimizer or {}).get("class")
        if saved is not None and saved != type(optimizer).__name__:
            raise CheckpointError(f"{self.path} holds {saved} state, not {type(optimizer).__name__} state")
        try:
            optimizer.check_state_dict(self.optim)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{self.path}: optimiser state does not fit: {exc}") from exc


def _read_entries(path):
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError, MemoryError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path} holds a single array (.npy), not an rnn_scratch checkpoint (.npz)")
    try:
        with loaded as archive:
            return {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError, MemoryError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): "
                              f"{type(exc).__name__}: {exc}") from exc


def load_checkpoint(path, model, optimizer=None):
    """Load into ``model`` (and ``optimizer``) in place; returns the metadata dict.

    Everything is checked before anything is written: on a CheckpointError the model and the optimiser
    are exactly as they were.
    """
    ckpt = _Checkpoint(os.fspath(path))
    ckpt.check_model(model)
    if optimizer is not None:
        ckpt.check_optimizer(optimizer)
    model.load_state_dict(ckpt.params)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt.optim)
    return ckpt.meta


def load_model(path, *, backend=None, with_optimizer=False):
    """Rebuild the model a checkpoint was saved from, with its weights (format 2 files).

    ``backend``: where the rebuilt model runs (None: automatic). With ``with_optimizer``, returns
    ``(model, optimizer)``, the optimiser rebuilt with its hyperparameters and state (None when the
    checkpoint holds none).
    """
    from . import optim
    from .layers import Module

    ckpt = _Checkpoint(os.fspath(path))
    if ckpt.config is None:
        raise CheckpointError(f"{ckpt.path} does not record its model's constructor arguments (written by an "
                              "older rnn_scratch, or they were not JSON data): build the model yourself and use "
                              "load_checkpoint")
    try:
        cls = getattr(importlib.import_module(ckpt.config["module"]), ckpt.config["class"])
    except (ImportError, AttributeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{ckpt.path}: cannot find the model class {ckpt.config!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise CheckpointError(f"{ckpt.path}: {ckpt.config['class']} is not an rnn_scratch Module")
    model = cls(**{**ckpt.config["kwargs"], "backend": backend})
    ckpt.check_model(model)
    optimizer = None
    if with_optimizer and ckpt.optimizer is not None:
        opt_cls = getattr(optim, ckpt.optimizer["class"], None)
        if not (isinstance(opt_cls, type) and issubclass(opt_cls, optim.Optimizer)):
            raise CheckpointError(f"{ckpt.path}: unknown optimiser class {ckpt.optimizer['class']!r}")
        optimizer = opt_cls(model.parameters(), **ckpt.optimizer["hyperparameters"])
        ckpt.check_optimizer(optimizer)
    model.load_state_dict(ckpt.params)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt.optim)
    return (model, optimizer) if with_optimizer else model


def load_torch_state_dict(module, torch_state_dict, prefix=""):
    """Load a torch ``state_dict`` (tensors) into a layer or model: keys map one to one, with an optional
    prefix for the module's own names (e.g. ``prefix="rnn."`` to fill a model's recurrent layer)."""
    own = module.state_dict()
    converted = {prefix + k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
                 for k, v in torch_state_dict.items()}
    merged = {k: converted.get(k, v) for k, v in own.items()}
    unknown = sorted(set(converted) - set(own))
    if unknown:
        raise ValueError(f"torch state_dict has keys this module lacks: {unknown}")
    module.load_state_dict(merged)
