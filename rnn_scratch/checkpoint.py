"""Checkpoints: model (and optimiser) state in one ``.npz``, no pickle, written atomically.

Layout of the archive (every entry a plain array, loaded with ``allow_pickle=False``)::

    meta/format_version   int, FORMAT_VERSION
    meta/model_class      str, the model's class name
    meta/<key>            any extra scalars/strings given to save()
    param/<name>          every parameter, names as in state_dict()
    optim/<key>           optimiser state (step count, lr, moments)

Saving writes a temporary file beside the target and renames it over the target, so a crash or
error mid-write never leaves a half-written checkpoint in place of a good one. Loading checks the
format version, the model class, every key and every shape before it writes anything.
"""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from .backend import to_numpy

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The file is not a readable checkpoint of this format, or does not fit the model."""


def save_checkpoint(path, model, optimizer=None, **meta):
    path = os.fspath(path)
    entries = {"meta/format_version": np.array(FORMAT_VERSION), "meta/model_class": np.array(type(model).__name__)}
    for key, value in meta.items():
        entries[f"meta/{key}"] = np.asarray(value)
    for name, value in model.state_dict().items():
        entries[f"param/{name}"] = to_numpy(value)
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            entries[f"optim/{key}"] = to_numpy(value) if hasattr(value, "shape") else np.asarray(value)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path, model, optimizer=None):
    """Load into ``model`` (and ``optimizer``) in place; returns the meta dict. Raises CheckpointError."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): {exc}") from exc
    version = data.get("meta/format_version")
    if version is None:
        raise CheckpointError(f"{path} has no meta/format_version: not an rnn_scratch checkpoint")
    if int(version) != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {int(version)}, this rnn_scratch reads {FORMAT_VERSION}")
    saved_class = str(data.get("meta/model_class"))
    if saved_class != type(model).__name__:
        raise CheckpointError(f"{path} holds a {saved_class}, not a {type(model).__name__}")
    params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    try:
        model.load_state_dict(params)  # checks every key and shape before writing
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} does not fit this model: {exc}") from exc
    if optimizer is not None:
        state = {k[len("optim/"):]: v for k, v in data.items() if k.startswith("optim/")}
        if not state:
            raise CheckpointError(f"{path} holds no optimiser state")
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimiser state does not fit: {exc}") from exc
    return {k[len("meta/"):]: v.item() for k, v in data.items() if k.startswith("meta/")}


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
