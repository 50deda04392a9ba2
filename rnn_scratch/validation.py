"""Argument checks shared by the layers: every error names the argument, what it got and what it expected."""

from __future__ import annotations

import numpy as np

from .backend import array_module, backend_of, is_cupy_array, to_numpy

FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))


def as_float_dtype(dtype, name="dtype") -> np.dtype:
    """float32 or float64 from a name or dtype; None means the default, float32 (as torch's default dtype)."""
    if dtype is None:
        return np.dtype("float32")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be 'float32' or 'float64', got {dt}")
    return dt


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(value, name, upper_open=True):
    """A float in [0, 1) (or [0, 1]); NumPy floats and ints are fine, bools are not."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not (0 <= value < 1 if upper_open else 0 <= value <= 1):
        raise ValueError(f"{name} must be a probability in [0, {'1)' if upper_open else '1]'}, got {value!r}")
    return float(value)


def check_array(array, name, *, backend, dtype=None, ndim=None, shape=None, shape_doc=None, finite=False):
    """Check one array argument; returns it unchanged.

    backend: the layer's backend; an array of the other backend is a TypeError (no silent copy).
    dtype: required floating dtype (a non-float or other float dtype is a TypeError).
    ndim / shape: required rank / exact shape (None entries in ``shape`` match anything).
    shape_doc: how to describe the expected shape in the message, e.g. "(seq_len, batch, input_size=3)".
    """
    if not isinstance(array, np.ndarray) and not is_cupy_array(array):
        raise TypeError(f"{name} must be a {backend} array, got {type(array).__name__}")
    got_backend = backend_of(array)
    if got_backend != backend:
        move = f"rnn_scratch.backend.to_backend({name}, {backend!r})"
        raise TypeError(f"{name} is a {got_backend} array but this layer runs on {backend}; move it with {move}")
    expected = shape_doc or (str(tuple(shape)) if shape is not None else None)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {expected or ''}, got shape {tuple(array.shape)}".replace("  ", " "))
    if shape is not None:
        if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
            raise ValueError(f"{name} must have shape {expected}, got shape {tuple(array.shape)}")
    if dtype is not None:
        if array.dtype.kind != "f":
            raise TypeError(f"{name} must be a floating array of dtype {dtype}, got dtype {array.dtype}")
        if array.dtype != dtype:
            other = (f" or create the layer with dtype='{array.dtype}'" if array.dtype in FLOAT_DTYPES
                     else " (layers are float32 or float64)")
            raise TypeError(f"{name} has dtype {array.dtype} but the layer's parameters are {dtype}; "
                            f"cast it with {name}.astype('{dtype}'){other}")
    if finite and array.size and not bool(_isfinite_all(array)):
        raise ValueError(f"{name} contains NaN or infinity")
    return array


def _isfinite_all(array):
    return array_module(array).isfinite(array).all()


def check_lengths(lengths, *, batch, seq_len):
    """lengths: one int per batch element in 1..seq_len. Returns a host int64 array."""
    if is_cupy_array(lengths):
        lengths = to_numpy(lengths)
    if hasattr(lengths, "detach"):  # a torch tensor
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"lengths must have one entry per batch element: expected shape ({batch},), got {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > seq_len):
        raise ValueError(f"lengths must lie in 1..seq_len={seq_len}, got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.int64)
