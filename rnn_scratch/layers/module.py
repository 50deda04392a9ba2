"""The module base: parameters, gradients, children, train/eval, state_dict, and what a forward saves for its
backward.

Each layer owns its parameters (``params``) and gradients (``grads``, same keys and shapes),
remembers what its last forward call needs for the backward, and has a ``backward`` that returns
the gradients with respect to that call's inputs while *accumulating* parameter gradients
(``zero_grad`` clears them), as torch's ``.grad`` does.

What a forward remembers is a copy: changing the input or the weights in place between forward
and backward does not change the gradients of the forward that ran. It is kept per Python thread,
so a layer shared by threads gives each thread the backward of its own forward (the accumulated
``grads`` are shared, added under a lock); a backward without a forward on the same thread is an
error.
"""

from __future__ import annotations

import inspect
import threading
import weakref

import numpy as np

from .. import backend as be
from ..validation import as_float_dtype, check_array

_GRAD_LOCK = threading.Lock()  # gradients are accumulated under it (a layer may be used from several threads)
_SAVED_LOCK = threading.Lock()  # every module's per-thread saved state is read and changed under it


def _constructor_config(cls, args, kwargs):
    """{argument name: value} of a constructor call, **kwargs flattened, for rebuilding the object."""
    try:
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
    except TypeError:  # the constructor itself will raise the user-facing error
        return None
    config = {}
    for name, value in list(bound.arguments.items())[1:]:
        kind = inspect.signature(cls.__init__).parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            config.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            return None  # cannot be named
        else:
            config[name] = value
    return config


class Module:
    """Parameters, gradients, children, train/eval, state_dict; the base of every layer and model.

    ``config``: the arguments the module was constructed with (what a checkpoint stores to rebuild it).
    """

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.config = _constructor_config(cls, args, kwargs)
        return self

    def __init__(self, *, dtype="float32", backend=None):
        self.dtype = as_float_dtype(dtype)
        self.backend = be.resolve_backend(backend)
        self.xp = be.get_xp(self.backend)
        self.params: dict = {}
        self.grads: dict = {}
        self.children: dict = {}
        self.training = True
        # thread -> what the last forward on that thread saved for its backward. Keyed by the Thread object,
        # weakly: an ended thread's entry goes with its Thread object, and a new thread that reuses an ended
        # one's id is a new key. Read and changed under _SAVED_LOCK.
        self._per_thread = weakref.WeakKeyDictionary()

    # -- what a forward saves for its backward (per thread) --------------------------------------
    def _save_for_backward(self, **values):
        """Remember ``values`` for the backward of this forward, on this thread."""
        with _SAVED_LOCK:
            for thread in [t for t in self._per_thread.keys() if not t.is_alive()]:  # ended, object still held
                self._per_thread.pop(thread, None)
            self._per_thread[threading.current_thread()] = values

    def _saved(self):
        """What the last forward on this thread saved; ValueError when there was none."""
        with _SAVED_LOCK:
            saved = self._per_thread.get(threading.current_thread())
        if saved is None:
            raise ValueError(f"{type(self).__name__}.backward() called before forward(): there is no cached "
                             "forward pass to differentiate (on this thread)")
        return saved

    def _accumulate(self, name, grad):
        with _GRAD_LOCK:
            self.grads[name] += grad

    # -- parameters ----------------------------------------------------------------------
    def add_param(self, name, value):
        """Register a parameter (host array) under ``name``; its gradient starts at zero."""
        self.params[name] = be.to_backend(np.asarray(value, dtype=self.dtype), self.backend)
        self.grads[name] = self.xp.zeros_like(self.params[name])

    def add_child(self, name, module):
        self.children[name] = module
        return module

    def named_parameters(self, prefix=""):
        """Yield (name, parameter, gradient) for this module and its children, torch-style dotted names."""
        for name, value in self.params.items():
            yield prefix + name, value, self.grads[name]
        for cname, child in self.children.items():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def parameters(self):
        """List of (name, parameter, gradient) triples, what the optimisers take."""
        return list(self.named_parameters())

    def num_parameters(self):
        return sum(int(p.size) for _, p, _ in self.named_parameters())

    def zero_grad(self):
        for _, _, grad in self.named_parameters():
            grad[...] = 0

    def train(self, mode=True):
        self.training = bool(mode)
        for child in self.children.values():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """{name: copy of the parameter} on the module's backend, names as torch would give them."""
        return {name: value.copy() for name, value, _ in self.named_parameters()}

    def grad_dict(self):
        """{name: gradient} (the live arrays), same keys as state_dict()."""
        return {name: grad for name, _, grad in self.named_parameters()}

    def check_state_dict(self, state_dict, strict=True):
        """Check a state_dict against this module without changing anything.

        Returns ({name: host array to write}, missing keys, unexpected keys). With ``strict`` any missing
        or unexpected key is a ValueError; without it only the matching keys are returned. Every value
        given for a known key must have the right shape and a numeric dtype.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"state_dict must be a mapping of parameter names to arrays, got "
                            f"{type(state_dict).__name__}")
        own = {name: value for name, value, _ in self.named_parameters()}
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict keys do not match: missing {missing}, unexpected {unexpected}")
        converted = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = _host_array(state_dict[name], f"state_dict[{name!r}]")
            if value.shape != tuple(target.shape):
                raise ValueError(f"state_dict[{name!r}] has shape {value.shape}, expected {tuple(target.shape)}")
            if value.dtype.kind not in "fiu":
                raise TypeError(f"state_dict[{name!r}] must be numeric, got dtype {value.dtype}")
            converted[name] = value
        return converted, missing, unexpected

    def load_state_dict(self, state_dict, strict=True):
        """Copy values in place. Accepts NumPy or CuPy arrays or torch tensors (bfloat16/float16 tensors
        through float32); checks every key and shape before writing anything.

        ``strict=False`` loads the keys that match and ignores the rest, as torch. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        converted, missing, unexpected = self.check_state_dict(state_dict, strict)
        own = {name: value for name, value, _ in self.named_parameters()}
        for name, value in converted.items():  # only write once everything checked out
            own[name][...] = be.to_backend(value.astype(self.dtype), self.backend)
        return IncompatibleKeys(missing, unexpected)

    def _check_input(self, x, name="x"):
        return check_array(x, name, backend=self.backend, dtype=self.dtype)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- the parameters a constructor call would make, without making them ------------------------
    @classmethod
    def bind_config(cls, *args, **kwargs):
        """{argument name: value} of the constructor call ``cls(*args, **kwargs)``, defaults filled in and
        ``**kwargs`` kept as a dict under its own name; TypeError (as the call would raise) for arguments
        the constructor does not take."""
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        bound.apply_defaults()
        return dict(list(bound.arguments.items())[1:])

    @classmethod
    def children_spec(cls, config):
        """[(child name, class, args, kwargs)]: the child modules the constructor builds from ``config``
        (:meth:`bind_config`), in order. Models describe theirs; a module with parameters of its own
        overrides :meth:`param_shapes` and :meth:`param_count` instead."""
        raise TypeError(f"{cls.__name__} does not describe the parameters its constructor makes")

    @classmethod
    def param_shapes(cls, *args, **kwargs):
        """{name: shape} of the parameters ``cls(*args, **kwargs)`` would have, as ``state_dict()`` names
        them, computed from the arguments without allocating anything (the sizes checked as the
        constructor checks them)."""
        shapes = {}
        for name, child, cargs, ckwargs in cls.children_spec(cls.bind_config(*args, **kwargs)):
            shapes.update({f"{name}.{key}": shape for key, shape in child.param_shapes(*cargs, **ckwargs).items()})
        return shapes

    @classmethod
    def param_count(cls, *args, **kwargs):
        """(numbers, arrays, numbers of the largest array) of those parameters, in closed form: pricing a
        model never enumerates its parameters (:mod:`rnn_scratch.memory`)."""
        numbers = arrays = largest = 0
        for _, child, cargs, ckwargs in cls.children_spec(cls.bind_config(*args, **kwargs)):
            n, a, big = child.param_count(*cargs, **ckwargs)
            numbers, arrays, largest = numbers + n, arrays + a, max(largest, big)
        return numbers, arrays, largest


class IncompatibleKeys(tuple):
    """(missing_keys, unexpected_keys), as torch's ``load_state_dict`` returns them."""

    def __new__(cls, missing_keys, unexpected_keys):
        return super().__new__(cls, (missing_keys, unexpected_keys))

    @property
    def missing_keys(self):
        return self[0]

    @property
    def unexpected_keys(self):
        return self[1]


def _host_array(value, name):
    """A NumPy array from a NumPy/CuPy array or a torch tensor (half and bfloat16 tensors through float32)."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray) or be.is_cupy_array(value):
        return be.to_numpy(value)
    if isinstance(value, (int, float, list, tuple)):
        return np.asarray(value)
    raise TypeError(f"{name} must be an array or a torch tensor, got {type(value).__name__}")
