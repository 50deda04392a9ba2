"""Checkpoints: model (and optimiser) state in one ``.npz``, no pickle, written atomically, loaded all-or-nothing.

Layout of the archive (every entry a plain ``.npy`` array of numbers or one string)::

    meta/format_version   int, FORMAT_VERSION
    meta/model_class      str, the model's class name
    meta/config           str, JSON {"model": registry key, "kwargs": {...}, "settings": {...}}: the constructor
                          call that rebuilds the model, and the layers' settings changed since (``memory``,
                          ``checkpoint_every``, ``check_finite``, ``dropout``, ``batch_first``; by child path)
    meta/optimizer        str, JSON {"class", "hyperparameters"} (when an optimiser was saved)
    meta/user             str, JSON object: the extra metadata given to save_checkpoint
    param/<name>          every parameter, names as in state_dict()
    optim/<key>           optimiser state (step count, lr, moments)

A file is untrusted. Reading it never imports, calls or builds anything it names: :func:`load_model`
builds only classes of a fixed registry (:data:`MODEL_REGISTRY`, the library's own models and layers,
keyed by class name, never by a module path), and only after the whole file has been checked: every
entry's header (name, dtype, shape, size) against the parameter shapes the config implies (computed
without allocating), the optimiser state as the optimiser's constructor and ``step`` would check it,
and the bytes it all needs against the memory guard (:mod:`rnn_scratch.memory`). Entries are read by
our own reader (the zip directory, then each ``.npy`` header, then exactly the bytes it declares), so a
header claiming a huge array or a compressed bomb costs nothing before it is refused. Every failure is
a :class:`CheckpointError` naming the file and the field, and leaves the model and the optimiser as
they were. Format 1 files (metadata as one array per key) and format 2 files (config naming a module
and a class) still load when they name only the library's classes.

Saving writes a temporary file beside the target (``.<name>.rnn_scratch-partial-<pid>-<random>``; a
long name is shortened and hashed) and renames it over the target, so a crash or error mid-write never
leaves a half-written checkpoint in place of a good one; partial files of saves whose process has died
are removed by the next save to the same target. Saving through a symbolic link writes the file it
points to (as ``np.save`` does). The file gets the permissions a new file gets under the umask, or
keeps those of the file it replaces.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import secrets
import zipfile

import numpy as np

from . import layers, models, optim
from . import memory as mem
from .backend import to_numpy
from .validation import as_float_dtype, check_probability

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
RESERVED_META = ("format_version", "model_class", "config", "optimizer", "user")
META_LIMIT = 64 << 20  # bytes of metadata (JSON sections, format-1 arrays) a file may hold
META_ENTRIES = 1000  # metadata entries a file may hold (format 1 kept one per user key)
LAYER_SETTINGS = ("batch_first", "dropout", "check_finite", "memory", "checkpoint_every")

_LAYERS = (layers.RNNBase, layers.RNN, layers.LSTM, layers.GRU, layers.Linear, layers.Embedding)  # RNNBase: any cell
_MODELS = (models.ManyToOneRegressor, models.ManyToManyTagger, models.OneToManyGenerator, models.EncoderDecoder,
           models.BidirectionalClassifier, models.CharLM)
#: The classes :func:`load_model` builds, by registry key: the library's own models and layers, nothing else.
MODEL_REGISTRY = {cls.__name__: cls for cls in _LAYERS + _MODELS}
#: Format 2 named a module and a class: the (module, class) pairs of the library's classes it could name (their
#: modules as format-2 files recorded them, whatever modules define them now), by registry key.
FORMAT_2_NAMES = {**{("rnn_scratch.layers", cls.__name__): cls.__name__ for cls in _LAYERS},
                  **{("rnn_scratch.models", cls.__name__): cls.__name__ for cls in _MODELS}}
OPTIMIZERS = {"SGD": optim.SGD, "Adam": optim.Adam}


class CheckpointError(ValueError):
    """The file is not a readable checkpoint of this format, or does not fit the model or optimiser."""


class CheckpointMemoryError(CheckpointError, MemoryError):
    """Loading the file needs more memory than the machine has left (a MemoryError and a CheckpointError)."""


# -- JSON values ------------------------------------------------------------------------------------
def _json_value(value, where):
    """``value`` as plain JSON data (NumPy scalars to Python numbers, tuples to lists, dtypes and NumPy
    scalar types to their names); TypeError naming ``where`` when it is not JSON data."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
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
    """The JSON record that rebuilds ``model`` (format 3), or None when its class is not a registry class
    (a subclass of the user's: ``load_checkpoint`` into a model built by hand still works). TypeError
    naming the argument when an argument of a registry class is not JSON data."""
    key = type(model).__name__
    if MODEL_REGISTRY.get(key) is not type(model) or getattr(model, "config", None) is None:
        return None
    kwargs = _json_value(model.config, f"{key} constructor argument")
    settings = {}
    for path, module in _submodules(model):
        if isinstance(module, layers.RNNBase):
            settings[path] = _json_value({name: getattr(module, name) for name in LAYER_SETTINGS},
                                         f"{key} layer {path or '(top)'} setting")
    return {"model": key, "kwargs": kwargs, "settings": settings}


def _submodules(module, prefix=""):
    """(dotted path, module) of ``module`` ('') and all its descendants."""
    yield prefix, module
    for name, child in module.children.items():
        yield from _submodules(child, f"{prefix}{name}" if not prefix else f"{prefix}.{name}")


# -- saving -----------------------------------------------------------------------------------------
def save_checkpoint(path, model, optimizer=None, **meta):
    """Write ``model``'s parameters (and ``optimizer``'s state) to ``path`` atomically; returns the path.

    ``meta``: extra metadata, any JSON data (None, bool, int, float, str, lists and dicts of them;
    tuples come back as lists, NumPy scalars as Python numbers); checked before anything is written.
    ``path`` may be a str, bytes or path object; through a symbolic link the file it points to is written.
    """
    path = _file_path(path)
    reserved = sorted(set(meta) & set(RESERVED_META))
    if reserved:
        raise ValueError(f"metadata keys {reserved} are reserved by the checkpoint format; use other names")
    try:
        user = {key: _json_value(value, f"metadata {key!r}") for key, value in meta.items()}
        json.dumps(user)
    except RecursionError:
        raise ValueError("metadata is nested too deeply to be written as JSON") from None
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
    target = os.path.realpath(path)  # through a symbolic link: its target, as np.save writes it
    if os.path.lexists(target) and not os.path.isfile(target):  # a device, a pipe, a socket: never replaced
        raise ValueError(f"path {path!r} exists and is not a regular file; a checkpoint replaces only files")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    _remove_stale_partials(target)
    tmp = _partial_name(target, os.getpid())
    mode = _file_mode(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _file_path(path):
    """``path`` (str, bytes or os.PathLike) as a str naming a file; TypeError or ValueError otherwise."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str, bytes or os.PathLike naming a file, got {type(path).__name__}") from None
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise ValueError(f"path must name a file, got {path!r}")
    return path


def _partial_stem(target):
    """The start of the names of ``target``'s partial files. Names stay under 255 bytes: a long name is
    cut and followed by a hash of the whole."""
    directory, name = os.path.split(target)
    if len(os.fsencode(name)) > 150:
        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
        name = os.fsdecode(os.fsencode(name)[:100]).rstrip("\ufffd") + "~" + digest
    return os.path.join(directory, f".{name}.rnn_scratch-partial-")


def _partial_name(target, pid):
    return f"{_partial_stem(target)}{pid}-{secrets.token_hex(4)}"


def _remove_stale_partials(target):
    """Partial files of earlier saves to ``target`` whose process is gone (a save that was killed)."""
    stem = _partial_stem(target)
    for partial in glob.glob(glob.escape(stem) + "*"):
        try:
            pid = int(partial[len(stem):].split("-")[0])
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
    except (PermissionError, OverflowError):
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


# -- reading: the archive ---------------------------------------------------------------------------
class _Entry:
    """One ``.npy`` member, known from its header: dtype, shape, where its data starts; not read yet."""

    def __init__(self, info, dtype, shape, fortran, offset):
        self.info, self.dtype, self.shape, self.fortran, self.offset = info, dtype, shape, fortran, offset
        self.nbytes = math.prod(shape) * dtype.itemsize


class _Archive:
    """The zip directory of a file, and the ``.npy`` header of each member once asked for (a file with 100,000
    members is refused on its names, not after 100,000 headers); data is read on request, exactly the bytes
    each header declares."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:  # a missing or unreadable path is the OSError it is
            magic = f.read(6)
        if magic.startswith(b"\x93NUMPY"):
            raise self.error("", "holds a single array (.npy), not an rnn_scratch checkpoint (.npz)")
        if not magic.startswith(b"PK"):
            raise self.error("", "is not an .npz checkpoint (it is not a zip archive)")
        try:
            self.zip = zipfile.ZipFile(path)
        except Exception as exc:  # noqa: BLE001 -- whatever the zip reader raises on these bytes
            raise self.error("", f"is not a readable checkpoint (truncated or corrupted?): {_describe(exc)}") from exc
        self.infos, self.headers = {}, {}
        try:
            for info in self.zip.infolist():
                self._add(info)
        except CheckpointError:
            self.zip.close()
            raise
        except Exception as exc:  # noqa: BLE001
            self.zip.close()
            raise self.error("", f"is not a readable checkpoint (truncated or corrupted?): {_describe(exc)}") from exc

    def error(self, field, problem, cls=CheckpointError):
        return cls(f"{self.path}: {field}: {problem}" if field else f"{self.path} {problem}")

    def _add(self, info):
        name = info.filename
        if not name.endswith(".npy") or not name.startswith(("meta/", "param/", "optim/")):
            raise self.error(repr(name[:200]), "unexpected entry (a checkpoint holds meta/, param/ and optim/ "
                                               "arrays only)")
        key = name[:-4]
        if key in self.infos:
            raise self.error(key, "appears twice in the archive")
        if info.flag_bits & 0x1:
            raise self.error(key, "is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(key, f"uses zip compression method {info.compress_type} (stored or deflated only)")
        self.infos[key] = info

    def __contains__(self, key):
        return key in self.infos

    def keys(self, prefix):
        return sorted(k[len(prefix):] for k in self.infos if k.startswith(prefix))

    def entry(self, key):
        """The :class:`_Entry` of member ``key``, from its header (read once)."""
        if key not in self.headers:
            self.headers[key] = self._header(key)
        return self.headers[key]

    def _header(self, key):
        info = self.infos[key]
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} (1.0 and 2.0 only)")
                offset = f.tell()
        except Exception as exc:  # noqa: BLE001 -- the header's bytes are the file's
            raise self.error(key, f"has no readable .npy header: {_describe(exc)}") from exc
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufU":
            raise self.error(key, f"has dtype {dtype} (plain numbers or strings only; no pickled objects)")
        entry = _Entry(info, dtype, tuple(shape), fortran, offset)
        if info.file_size != offset + entry.nbytes:
            raise self.error(key, f"declares {entry.nbytes:,} bytes of {dtype} {entry.shape} but holds "
                                  f"{info.file_size - offset:,} (truncated or padded)")
        return entry

    def read(self, key):
        """The array of entry ``key`` (exactly its declared bytes, checked against the zip's CRC)."""
        entry = self.entry(key)
        try:
            with self.zip.open(entry.info) as f:
                f.read(entry.offset)
                data = f.read(entry.nbytes)
                if len(data) != entry.nbytes or f.read(1):
                    raise ValueError(f"holds {len(data):,} bytes, its header declares {entry.nbytes:,}")
        except Exception as exc:  # noqa: BLE001
            raise self.error(key, f"cannot be read (truncated or corrupted?): {_describe(exc)}") from exc
        array = np.frombuffer(data, dtype=entry.dtype)
        return array.reshape(entry.shape, order="F" if entry.fortran else "C")

    def close(self):
        self.zip.close()


def _describe(exc):
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- reading: the checkpoint ------------------------------------------------------------------------
class _Checkpoint:
    """A checkpoint file whose directory, headers and metadata have been read and checked; its parameter
    and optimiser arrays are read by :meth:`read_arrays` once they have been checked against a model."""

    def __init__(self, path):
        self.path = path
        self.archive = _Archive(path)
        try:
            self._read_meta()
        except BaseException:
            self.archive.close()
            raise
        self.params = self.archive.keys("param/")
        self.optim = self.archive.keys("optim/")

    def error(self, field, problem, cls=CheckpointError):
        return self.archive.error(field, problem, cls)

    def close(self):
        self.archive.close()

    # -- metadata ---------------------------------------------------------------------------------
    def _read_meta(self):
        meta_keys = [f"meta/{k}" for k in self.archive.keys("meta/")]
        if len(meta_keys) > META_ENTRIES:
            raise self.error("meta/", f"holds {len(meta_keys):,} metadata entries, more than this reader takes "
                                      f"({META_ENTRIES:,})")
        size = sum(self.archive.entry(k).nbytes for k in meta_keys)
        if size > META_LIMIT:
            raise self.error("meta/", f"holds {size:,} bytes of metadata, more than this reader takes "
                                      f"({META_LIMIT:,})")
        self.version = self._version()
        self.model_class = self._string("meta/model_class")
        self.config = self._json("meta/config", dict) if "meta/config" in self.archive else None
        self.optimizer = self._json("meta/optimizer", dict) if "meta/optimizer" in self.archive else None
        if self.version >= 2:
            user = self._json("meta/user", dict)
        else:  # format 1: one array per key
            user = {}
            for key in meta_keys:
                name = key[len("meta/"):]
                if name not in RESERVED_META:
                    value = self.archive.read(key)
                    user[name] = value.item() if value.shape == () else value.tolist()
        reserved = sorted(set(user) & set(RESERVED_META))
        if reserved:
            raise self.error("meta/user", f"uses the reserved keys {reserved}")
        self.meta = {"format_version": self.version, "model_class": self.model_class, **user}

    def _scalar(self, key, kinds, what):
        if key not in self.archive:
            raise self.error(key, "is missing: not an rnn_scratch checkpoint")
        entry = self.archive.entry(key)
        if entry.shape != () or entry.dtype.kind not in kinds:
            raise self.error(key, f"must be {what}, got {entry.dtype} of shape {entry.shape}")
        return self.archive.read(key)[()]

    def _version(self):
        version = int(self._scalar("meta/format_version", "iu", "an integer"))
        if version not in READABLE_VERSIONS:
            raise self.error("meta/format_version", f"has format version {version}, this rnn_scratch reads "
                                                    f"{list(READABLE_VERSIONS)}")
        return version

    def _string(self, key):
        return str(self._scalar(key, "U", "a string"))

    def _json(self, key, kind):
        try:
            value = json.loads(self._string(key))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so are 5000-digit ints
            raise self.error(key, f"is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc
        if not isinstance(value, kind):
            raise self.error(key, f"must be a JSON {'object' if kind is dict else kind.__name__}, "
                                  f"got {type(value).__name__}")
        return value

    # -- checks against a model and an optimiser, on the headers alone -----------------------------
    def check_params(self, expected, what):
        """The file's parameters have exactly the names and shapes ``expected`` ({name: shape}) and numeric
        dtypes. ``what``: the model's description, for the message."""
        if set(self.params) != set(expected):
            missing = sorted(set(expected) - set(self.params))
            unexpected = sorted(set(self.params) - set(expected))
            raise self.error("param/", f"does not fit {what}: missing {_few(missing)}, unexpected {_few(unexpected)}")
        for name, shape in expected.items():  # the names matched: now their headers
            entry = self.archive.entry(f"param/{name}")
            if entry.shape != tuple(shape):
                raise self.error(f"param/{name}", f"does not fit {what}: shape {entry.shape}, expected {tuple(shape)}")
            if entry.dtype.kind not in "fiu":
                raise self.error(f"param/{name}", f"must be numeric, got dtype {entry.dtype}")

    def check_optimizer_headers(self, optimizer_class, shapes):
        """The optimiser section fits ``optimizer_class`` over parameters of ``shapes`` ({name: shape}),
        judged on the headers: every key known, every moment of its parameter's shape."""
        if not self.optim:
            raise self.error("optim/", "holds no optimiser state")
        if self.optimizer is not None:  # (format 1 files have no optimiser section)
            saved = self.optimizer.get("class")
            if saved != optimizer_class.__name__:
                raise self.error("meta/optimizer", f"holds {saved} state, not {optimizer_class.__name__} state")
        for key in self.optim:  # the names first
            kind, _, name = key.partition("/")
            if key not in ("lr", "step_count") and (kind not in optimizer_class.state_kinds or name not in shapes):
                raise self.error(f"optim/{key}", f"is not state of {optimizer_class.__name__} over these parameters "
                                                 f"({optimizer_class.__name__} keeps {optimizer_class.state_kinds})")
        for key in self.optim:
            entry = self.archive.entry(f"optim/{key}")
            if key in ("lr", "step_count"):
                if entry.shape != ():
                    raise self.error(f"optim/{key}", f"must be a scalar, got shape {entry.shape}")
                continue
            name = key.partition("/")[2]
            if entry.shape != tuple(shapes[name]):
                raise self.error(f"optim/{key}", f"has shape {entry.shape}, the parameter has {tuple(shapes[name])}")

    def guard(self, keys, more=0, what="loading"):
        """The memory guard for reading ``keys`` (and ``more`` bytes besides), before any is read."""
        need = sum(self.archive.entry(k).nbytes for k in keys) + more
        try:
            mem.check_available(need, f"{self.path}: {what}")
        except MemoryError as exc:
            raise CheckpointMemoryError(str(exc)) from None

    def read_arrays(self, prefix):
        return {k: self.archive.read(prefix + k) for k in (self.params if prefix == "param/" else self.optim)}


def _few(names, limit=8):
    """At most ``limit`` names, and how many more: an error message stays short whatever the file holds."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{f', ... ({len(names) - limit} more)' if len(names) > limit else ''}]"


def _check_model_state(ckpt, model, params, what):
    """The parameters of ``ckpt`` checked by ``model`` itself, as a CheckpointError naming the file."""
    try:
        model.check_state_dict(params)
    except (ValueError, TypeError) as exc:
        raise ckpt.error("param/", f"does not fit {what}: {exc}") from exc


def _check_optimizer_state(ckpt, optimizer, state):
    """The optimiser state of ``ckpt`` checked by ``optimizer`` itself (as its constructor and step
    would), as a CheckpointError naming the file."""
    try:
        optimizer.check_state_dict(state)
    except (ValueError, TypeError, KeyError) as exc:
        raise ckpt.error("optim/", f"optimiser state does not fit: {exc}") from exc


# -- loading ----------------------------------------------------------------------------------------
def load_checkpoint(path, model, optimizer=None):
    """Load into ``model`` (and ``optimizer``) in place; returns the metadata dict.

    Everything is checked before anything is written: on a CheckpointError the model and the optimiser
    are exactly as they were.
    """
    ckpt = _Checkpoint(_load_path(path))
    try:
        if ckpt.model_class != type(model).__name__:
            raise ckpt.error("meta/model_class", f"holds a {ckpt.model_class}, not a {type(model).__name__}")
        own = {name: tuple(p.shape) for name, p, _ in model.named_parameters()}
        ckpt.check_params(own, "this model")
        keys = [f"param/{k}" for k in ckpt.params]
        if optimizer is not None:
            ckpt.check_optimizer_headers(type(optimizer), own)
            keys += [f"optim/{k}" for k in ckpt.optim]
        ckpt.guard(keys)
        params = ckpt.read_arrays("param/")
        _check_model_state(ckpt, model, params, "this model")
        state = None
        if optimizer is not None:
            state = ckpt.read_arrays("optim/")
            _check_optimizer_state(ckpt, optimizer, state)
        model.load_state_dict(params)  # only now: everything checked
        if optimizer is not None:
            optimizer.load_state_dict(state)
        return ckpt.meta
    finally:
        ckpt.close()


def _load_path(path):
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str, bytes or os.PathLike, got {type(path).__name__}") from None


def load_model(path, *, backend=None, with_optimizer=False):
    """Rebuild the model a checkpoint was saved from, with its weights (format 2 and 3 files).

    Only the library's own models and layers are built (:data:`MODEL_REGISTRY`), and only after the file
    has been checked whole (module docstring). ``backend``: where the rebuilt model runs (None:
    automatic). With ``with_optimizer``, returns ``(model, optimizer)``, the optimiser rebuilt with its
    hyperparameters and state (None when the checkpoint holds none).
    """
    ckpt = _Checkpoint(_load_path(path))
    try:
        return _load_model(ckpt, backend, with_optimizer)
    finally:
        ckpt.close()


def _load_model(ckpt, backend, with_optimizer):
    cls, kwargs, settings = _registered_call(ckpt)
    try:
        dtype = as_float_dtype(kwargs.get("dtype"), "dtype")
        numbers, arrays, largest = cls.param_count(**kwargs)  # closed form: nothing enumerated yet
    except (ValueError, TypeError) as exc:
        raise ckpt.error("meta/config", f"is not a valid {cls.__name__} configuration: {exc}") from exc
    if arrays != len(ckpt.params):
        raise ckpt.error("param/", f"holds {len(ckpt.params)} parameter arrays, the {cls.__name__} its config "
                                   f"describes has {arrays}")
    opt_cls = hyper = None
    if with_optimizer and ckpt.optimizer is not None:
        opt_cls, hyper = _optimizer_call(ckpt)
    shapes = cls.param_shapes(**kwargs)  # as many as the file holds: bounded by the file
    ckpt.check_params(shapes, f"the {cls.__name__} its config describes")
    if opt_cls is not None:
        ckpt.check_optimizer_headers(opt_cls, shapes)
    model_bytes = mem.param_bytes(numbers, arrays, largest, dtype)
    moments = 0 if opt_cls is None else len(opt_cls.state_kinds) * numbers * dtype.itemsize
    keys = [f"param/{k}" for k in ckpt.params] + ([f"optim/{k}" for k in ckpt.optim] if opt_cls else [])
    ckpt.guard(keys, model_bytes + moments, f"rebuilding its {cls.__name__}")
    settings = _checked_settings(ckpt, settings, _recurrent_paths(cls, kwargs))
    params = ckpt.read_arrays("param/")
    state = None
    if opt_cls is not None:  # hyperparameters and state, checked by the optimiser over stand-ins of the shapes
        state = ckpt.read_arrays("optim/")
        stand_ins = [(name, np.broadcast_to(np.zeros((), dtype), shape), None) for name, shape in shapes.items()]
        try:
            stand_in = opt_cls(stand_ins, **hyper)  # (broadcast views: nothing allocated)
        except (ValueError, TypeError) as exc:
            raise ckpt.error("meta/optimizer", f"hyperparameters do not build {opt_cls.__name__}: {exc}") from exc
        _check_optimizer_state(ckpt, stand_in, state)
    try:  # the file is checked; the model is built only now
        model = cls(**{**kwargs, "backend": backend})
    except (ValueError, TypeError) as exc:
        raise ckpt.error("meta/config", f"does not build a {cls.__name__}: {exc}") from exc
    paths = dict(_submodules(model))
    for path, values in settings.items():
        for name, value in values.items():
            setattr(paths[path], name, value)
    _check_model_state(ckpt, model, params, "the rebuilt model")
    optimizer = None
    if opt_cls is not None:
        optimizer = opt_cls(model.parameters(), **hyper)
    model.load_state_dict(params)
    if optimizer is not None:
        optimizer.load_state_dict(state)
    return (model, optimizer) if with_optimizer else model


def _registered_call(ckpt):
    """(registry class, constructor kwargs, layer settings) of the file's config; nothing imported."""
    config = ckpt.config
    if config is None:
        raise ckpt.error("meta/config", "is missing: the file does not record its model's constructor arguments "
                                        "(written by an older rnn_scratch, or for a class that is not the "
                                        "library's own): build the model yourself and use load_checkpoint")
    if ckpt.version == 2:  # {"module", "class", "kwargs"}: only the library's own classes are recognised
        name = (config.get("module"), config.get("class"))
        key = FORMAT_2_NAMES.get(name) if all(isinstance(n, str) for n in name) else None
        if key is None:
            raise ckpt.error("meta/config", f"names {name[0]!r}.{name[1]!r}, which is not one of the library's "
                                            f"classes ({sorted(MODEL_REGISTRY)}); nothing is imported from a file")
        allowed = {"module", "class", "kwargs"}
    else:
        key = config.get("model")
        if not isinstance(key, str) or key not in MODEL_REGISTRY:
            raise ckpt.error("meta/config", f"names the model {key!r}, which is not one of {sorted(MODEL_REGISTRY)}")
        allowed = {"model", "kwargs", "settings"}
    extra = sorted(set(config) - allowed)
    if extra:
        raise ckpt.error("meta/config", f"has unknown fields {extra}")
    if key != ckpt.model_class:
        raise ckpt.error("meta/config", f"builds a {key} but meta/model_class says {ckpt.model_class!r}")
    kwargs, settings = config.get("kwargs"), config.get("settings", {})
    if not isinstance(kwargs, dict):
        raise ckpt.error("meta/config", f"kwargs must be a JSON object, got {type(kwargs).__name__}")
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ckpt.error("meta/config", "settings must be a JSON object of objects")
    kwargs = {k: v for k, v in kwargs.items() if k != "backend"}  # where to run is the caller's choice
    return MODEL_REGISTRY[key], kwargs, settings


def _recurrent_paths(cls, kwargs):
    """The dotted paths of the recurrent layers ``cls(**kwargs)`` would have ('' for a layer itself), from
    the constructor's description of its children: nothing is built."""
    if issubclass(cls, layers.RNNBase):
        return {""}
    if issubclass(cls, (layers.Linear, layers.Embedding)):
        return set()
    return {name for name, child, _, _ in cls.children_spec(cls.bind_config(**kwargs))
            if issubclass(child, layers.RNNBase)}


def _checked_settings(ckpt, settings, paths):
    """The layer settings of the file, each value checked as the layer's constructor checks it, each path
    one of ``paths`` (the model's recurrent layers)."""
    checked = {}
    for path, values in settings.items():
        if path not in paths:
            raise ckpt.error("meta/config", f"settings name {path!r}, which is not a recurrent layer of the model "
                                            f"({sorted(paths)})")
        unknown = sorted(set(values) - set(LAYER_SETTINGS))
        if unknown:
            raise ckpt.error("meta/config", f"settings of {path!r} have unknown keys {unknown}")
        try:
            memory, every = mem.check_memory_mode(values.get("memory", "full"), values.get("checkpoint_every"))
            out = {"memory": memory, "checkpoint_every": every}
            if "dropout" in values:
                out["dropout"] = check_probability(values["dropout"], "dropout")
            for flag in ("batch_first", "check_finite"):
                if flag in values:
                    if not isinstance(values[flag], bool):
                        raise TypeError(f"{flag} must be true or false, got {values[flag]!r}")
                    out[flag] = values[flag]
        except (ValueError, TypeError) as exc:
            raise ckpt.error("meta/config", f"settings of {path!r}: {exc}") from exc
        checked[path] = {k: v for k, v in out.items() if k in values}
    return checked


def _optimizer_call(ckpt):
    """(optimiser class, hyperparameters) of the file's optimiser section, checked for form."""
    section = ckpt.optimizer
    name, hyper = section.get("class"), section.get("hyperparameters", {})
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ckpt.error("meta/optimizer", f"names the optimiser {name!r}, which is not one of {sorted(OPTIMIZERS)}")
    if not isinstance(hyper, dict):
        raise ckpt.error("meta/optimizer", f"hyperparameters must be a JSON object, got {type(hyper).__name__}")
    extra = sorted(set(section) - {"class", "hyperparameters"})
    if extra:
        raise ckpt.error("meta/optimizer", f"has unknown fields {extra}")
    return OPTIMIZERS[name], hyper


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
