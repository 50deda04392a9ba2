"""Stateful layers on top of the functional core: ``RNN``, ``LSTM``, ``GRU``, ``Linear``, ``Embedding``.

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
import math
import threading
import weakref

import numpy as np

from . import backend as be
from . import memory as mem
from .functional import (
    PARAM_NAMES,
    CheckpointedCache,
    canonical_cell_name,
    checkpointed_backward,
    checkpointed_forward,
    get_cell,
    param_name,
)
from .validation import as_float_dtype, check_array, check_lengths, check_positive_int, check_probability

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


class RNNBase(Module):
    """Multi-layer, optionally bidirectional recurrent layer; ``mode`` picks the cell.

    Parameters follow torch: for layer k and direction suffix s ('' or '_reverse')
    ``weight_ih_l{k}{s}`` (G*H, in_k), ``weight_hh_l{k}{s}`` (G*H, H), ``bias_ih_l{k}{s}``,
    ``bias_hh_l{k}{s}`` (G*H,), with G = 1 (RNN), 4 (LSTM, gates i f g o), 3 (GRU, gates r z n),
    in_0 = input_size and in_k = H * num_directions above. All start U(-1/sqrt(H), 1/sqrt(H)).

    ``memory="full"`` keeps every step's activations for BPTT (about 12 T B H numbers for an LSTM layer);
    ``memory="checkpoint"`` keeps the state every ``checkpoint_every`` steps (default about sqrt(T)) and
    recomputes each segment in the backward: the same gradients for one more forward pass
    (:mod:`rnn_scratch.functional.recompute`). A full-BPTT call that would need more memory than the
    machine has left is refused up front with a MemoryError naming the bytes.

    Inside, a state is always a tuple, ``(h,)`` or ``(h, c)`` (the functional core's convention):
    :meth:`forward_states` / :meth:`backward_states` take and give tuples, and the torch-shaped
    ``forward`` / ``backward`` of the subclasses translate with :meth:`to_states` / :meth:`from_states`.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", backend=None, seed=None,
                 check_finite=True, memory="full", checkpoint_every=None):
        super().__init__(dtype=dtype, backend=backend)
        self.memory, self.checkpoint_every = mem.check_memory_mode(memory, checkpoint_every)
        self.cell = get_cell(mode)
        self.mode = self.cell.name
        self.input_size = check_positive_int(input_size, "input_size")
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        self.dropout = check_probability(dropout, "dropout")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.check_finite = bool(check_finite)
        self._rng = be.default_rng(seed)
        config = (self.mode, self.input_size, self.hidden_size, self.num_layers, self.bias, self.bidirectional)
        mem.check_available(mem.param_bytes(*mem.param_count(*config), self.dtype), f"{self!r}: the parameters",
                            self.backend)  # before any of them is allocated
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, shape in mem.param_shapes(*config).items():
            self.add_param(name, self._rng.uniform(-bound, bound, shape))
        self.last_dropout_masks = None

    @classmethod
    def _recurrent_config(cls, *args, **kwargs):
        """(mode, input_size, hidden_size, num_layers, bias, bidirectional) of a constructor call, as
        :func:`rnn_scratch.memory.param_shapes` takes them."""
        a = cls.bind_config(*args, **kwargs)
        return cls._mode(a), a["input_size"], a["hidden_size"], a["num_layers"], bool(a["bias"]), \
            bool(a["bidirectional"])

    @classmethod
    def _mode(cls, config):
        return config["mode"]

    @classmethod
    def param_shapes(cls, *args, **kwargs):
        return mem.param_shapes(*cls._recurrent_config(*args, **kwargs))

    @classmethod
    def param_count(cls, *args, **kwargs):
        return mem.param_count(*cls._recurrent_config(*args, **kwargs))

    def _layer_params(self, layer, direction):
        """{kind: parameter or None} of one layer and direction, the functional core's ``params``."""
        return {kind: self.params.get(param_name(kind, layer, direction == 1)) for kind in PARAM_NAMES}

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False),
                              ("memory", "full"), ("checkpoint_every", None)):
            value = getattr(self, name)
            if value != default:
                s += f", {name}={value!r}" if isinstance(value, str) else f", {name}={value}"
        return s + f", dtype={self.dtype}, backend={self.backend!r}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    # -- the state: a tuple inside, torch's form outside -----------------------------------------
    def to_states(self, state, gradient=False):
        """torch's form (h, or (h, c) for the LSTM; None) -> the tuple form (None stays None).

        ``gradient``: the state is a gradient (dh_n, dc_n), which only changes the error message."""
        if state is None:
            return None
        if self.cell.num_states == 1:
            return (state,)
        if not isinstance(state, (tuple, list)) or len(state) != self.cell.num_states:
            names = ", ".join(f"d{s}_n" if gradient else f"{s}0" for s in self.cell.state_names)
            got = type(state).__name__ + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
            raise TypeError(f"{'state gradient' if gradient else 'state'} for {type(self).__name__} must be a tuple "
                            f"({names}) or None, got {got}")
        return tuple(state)

    def from_states(self, states):
        """The tuple form -> torch's form (h alone, or (h, c) for the LSTM)."""
        return states[0] if self.cell.num_states == 1 else tuple(states)

    # -- argument checks ---------------------------------------------------------------------
    def _check_x(self, x):
        """x is (seq_len, batch, input_size), (batch, seq_len, input_size) with batch_first, or unbatched
        (seq_len, input_size) as torch allows. Returns True for unbatched input."""
        layout = "(batch, seq_len, input_size={})" if self.batch_first else "(seq_len, batch, input_size={})"
        batched, unbatched = layout.format(self.input_size), f"(seq_len, input_size={self.input_size})"
        check_array(x, "x", backend=self.backend, dtype=self.dtype)  # finiteness: _check_finite_steps
        if x.ndim not in (2, 3):
            raise ValueError(f"x must be 3-D {batched} or unbatched 2-D {unbatched}, got shape {tuple(x.shape)}")
        doc = batched if x.ndim == 3 else unbatched
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x must have shape {doc}, got shape {tuple(x.shape)}")
        if 0 in x.shape[:-1]:
            raise ValueError(f"x must have shape {doc} with seq_len and batch >= 1, got shape {tuple(x.shape)}")
        return x.ndim == 2

    def _check_finite_steps(self, x, lengths):
        """x holds no NaN or infinity at a valid step (padding past a sequence's length may hold anything:
        it never reaches an output or a gradient)."""
        if lengths is None:
            check_array(x, "x", backend=self.backend, finite=True)
            return
        finite = self.xp.isfinite(x).all(axis=-1)  # (T, B), or (B, T) batch-first
        valid = np.arange(x.shape[1 if self.batch_first else 0])[:, None] < lengths[None, :]
        if not bool(finite[be.to_backend(valid.T if self.batch_first else valid, self.backend)].all()):
            raise ValueError("x contains NaN or infinity at a valid step (within its sequence's length)")

    def _state_shape(self, batch):
        return (self.num_layers * self.num_directions, batch, self.hidden_size)

    def _check_state(self, state, name, batch, unbatched=False):
        shape = self._state_shape(batch)
        if unbatched:
            shape = (shape[0], shape[2])
            doc = f"(num_layers * num_directions={shape[0]}, hidden_size={shape[1]}) for unbatched x"
        else:
            doc = f"(num_layers * num_directions={shape[0]}, batch={batch}, hidden_size={shape[2]})"
        return check_array(state, name, backend=self.backend, dtype=self.dtype, shape=shape, shape_doc=doc,
                           finite=self.check_finite)

    def _checked_states(self, states, names, batch, unbatched=False):
        """A tuple of ``num_states`` parts from ``states`` (None, or a tuple whose missing trailing or None
        parts mean zeros), each checked and given a batch axis; None parts stay None."""
        n = self.cell.num_states
        states = tuple(states or ())
        if len(states) > n:
            raise TypeError(f"{type(self).__name__} has {n} state part(s) {names}, got {len(states)}")
        states += (None,) * (n - len(states))
        out = []
        for value, name in zip(states, names):
            if value is not None:
                self._check_state(value, name, batch, unbatched)
                if unbatched:
                    value = value[:, None]
            out.append(value)
        return tuple(out)

    def _snapshot_params(self):
        """A copy of every (layer, direction)'s params: the backward differentiates the forward that ran,
        whatever happens to the live weights in between (torch raises there; copying costs one pass over
        the weights per forward)."""
        return [[{k: None if v is None else v.copy() for k, v in self._layer_params(layer, d).items()}
                 for d in range(self.num_directions)] for layer in range(self.num_layers)]

    def bptt_bytes(self, seq_len, batch, memory=None, *, masked=False):
        """About how many bytes one forward + backward allocates (the caller's x and dout not counted):
        :func:`rnn_scratch.memory.bptt_bytes` for this layer, ``memory`` (default ``self.memory``) and
        ``masked`` (the call gives ``lengths``). Tested against measured peaks (estimate >= peak >=
        estimate / 1.25)."""
        memory, every = mem.check_memory_mode(memory or self.memory, self.checkpoint_every)
        return mem.bptt_bytes(self.cell, seq_len, batch, self.input_size, self.hidden_size,
                              num_layers=self.num_layers, num_directions=self.num_directions, bias=self.bias,
                              dtype=self.dtype, memory=memory, checkpoint_every=every, masked=masked,
                              batch_first=self.batch_first,
                              dropout=self.training and self.dropout > 0 and self.num_layers > 1)

    def _check_memory(self, T, B, masked):
        """Refuse a call that cannot fit before allocating anything (the OS would kill the process mid-way,
        as allocations are only backed when touched)."""
        hint = ""
        if self.memory == "full":
            hint = f"memory='checkpoint' needs {mem.format_bytes(self.bptt_bytes(T, B, 'checkpoint'))}"
        mem.check_available(self.bptt_bytes(T, B, masked=masked), f"forward + backward of {type(self).__name__} "
                            f"with memory={self.memory!r}: seq_len={T}, batch={B}", self.backend, hint)

    # -- forward / backward --------------------------------------------------------------------
    def forward_states(self, x, states=None, lengths=None, *, dropout_masks=None):
        """Forward with the state as a tuple ((h0,) or (h0, c0); None, or None parts, for zeros).

        x: (seq_len, batch, input_size), batch-first, or unbatched (seq_len, input_size) with states of
        shape (num_layers * num_directions, hidden_size). Returns (out, final state tuple), each part
        (num_layers * num_directions, batch, hidden_size), without the batch axis for unbatched x.
        """
        unbatched = self._check_x(x)
        if unbatched and lengths is not None:
            raise ValueError("lengths needs batched x: unbatched x (seq_len, input_size) is one whole sequence")
        T, B = (x.shape[0], 1) if unbatched else (x.shape[1], x.shape[0]) if self.batch_first else x.shape[:2]
        if lengths is not None:
            lengths = check_lengths(lengths, batch=B, seq_len=T)
        self._check_memory(T, B, lengths is not None)  # before the copy and the finiteness check allocate
        if self.check_finite:
            self._check_finite_steps(x, lengths)
        if unbatched:
            xt = x[:, None].copy()
        else:  # a copy: the caller may change x before the backward
            xt = x.transpose(1, 0, 2).copy() if self.batch_first else x.copy()
        states = self._checked_states(states, tuple(f"{s}0" for s in self.cell.state_names), B, unbatched)
        states = tuple(self.xp.zeros(self._state_shape(B), dtype=self.dtype) if s is None else s for s in states)
        mask = None
        if lengths is not None:
            mask = be.to_backend((np.arange(T)[:, None] < lengths[None, :])[:, :, None], self.backend)
        masks = self._dropout_masks(T, B, dropout_masks)
        params = self._snapshot_params()
        D = self.num_directions
        caches, finals = [], [[None] * (self.num_layers * D) for _ in states]
        layer_in = xt
        for layer in range(self.num_layers):
            if layer > 0 and masks is not None:
                layer_in = layer_in * masks[layer - 1]
            outs, layer_caches = [], []
            for d in range(D):
                idx = layer * D + d
                state = tuple(s[idx] for s in states)
                if self.memory == "checkpoint":
                    out, final, cache = checkpointed_forward(self.cell, layer_in, state, params[layer][d],
                                                             reverse=d == 1, mask=mask, every=self.checkpoint_every)
                else:
                    out, final, cache = self.cell.forward(layer_in, state, params[layer][d], reverse=d == 1,
                                                          mask=mask)
                outs.append(out)
                layer_caches.append(cache)
                for k, f in enumerate(final):
                    finals[k][idx] = f
            if D == 2:
                layer_in = self.xp.concatenate(outs, axis=2)
            elif layer == self.num_layers - 1 and self.memory == "full":  # the returned output must not alias
                layer_in = outs[0].copy()  # the cache (a checkpointed forward's output is its own array)
            else:  # inner layers' outputs never leave
                layer_in = outs[0]
            caches.append(layer_caches)
        self._save_for_backward(caches=caches, masks=masks, shape=(T, B), unbatched=unbatched)
        self.last_dropout_masks = masks
        finals = tuple(self.xp.stack(f) for f in finals)
        if unbatched:
            return layer_in[:, 0], tuple(f[:, 0] for f in finals)
        output = self.xp.ascontiguousarray(layer_in.transpose(1, 0, 2)) if self.batch_first else layer_in
        return output, finals

    def _dropout_masks(self, T, B, given):
        """Inverted-dropout masks for the inputs of layers 1..L-1 (None when dropout is off).

        ``given`` (to replay fixed masks, e.g. ``last_dropout_masks``): a list of num_layers - 1 arrays of
        shape (seq_len, batch, num_directions * hidden_size), time-major, of the layer's dtype; copied."""
        if given is None:
            if not self.training or self.dropout == 0 or self.num_layers == 1:
                return None
            keep = 1.0 - self.dropout
            shape = (T, B, self.hidden_size * self.num_directions)
            return [be.to_backend(((self._rng.random(shape) < keep) / keep).astype(self.dtype), self.backend)
                    for _ in range(self.num_layers - 1)]
        n = self.num_layers - 1
        if not isinstance(given, (list, tuple)) or len(given) != n:
            got = f"{type(given).__name__}" + (f" of length {len(given)}" if isinstance(given, (list, tuple)) else "")
            raise TypeError(f"dropout_masks must be a list of num_layers - 1 = {n} arrays (one per layer input "
                            f"above the first), got {got}")
        shape = (T, B, self.hidden_size * self.num_directions)
        doc = f"(seq_len={T}, batch={B}, num_directions * hidden_size={shape[2]})"
        return [check_array(m, f"dropout_masks[{k}]", backend=self.backend, dtype=self.dtype, shape=shape,
                            shape_doc=doc, finite=True).copy() for k, m in enumerate(given)]

    def backward_states(self, dout, dstates=None):
        """Backward of the last :meth:`forward_states` call on this thread, the state gradient as a tuple
        ((dh_n,) or (dh_n, dc_n); None, missing or None parts for zeros).

        Returns (dx, initial-state gradient tuple); parameter gradients accumulate into ``grads``.
        """
        saved = self._saved()
        (T, B), unbatched = saved["shape"], saved["unbatched"]
        D, H = self.num_directions, self.hidden_size
        if dout is not None:
            if unbatched:
                check_array(dout, "dout", backend=self.backend, dtype=self.dtype, shape=(T, D * H))
                dout = dout[:, None]
            else:
                out_shape = (B, T, D * H) if self.batch_first else (T, B, D * H)
                check_array(dout, "dout", backend=self.backend, dtype=self.dtype, shape=out_shape)
                if self.batch_first:
                    dout = self.xp.ascontiguousarray(dout.transpose(1, 0, 2))
        dstates = self._checked_states(dstates, tuple(f"d{s}_n" for s in self.cell.state_names), B, unbatched)
        d_init = [[None] * (self.num_layers * D) for _ in dstates]
        masks = saved["masks"]
        dcur = dout
        grads = {}
        for layer in reversed(range(self.num_layers)):
            dx_sum = None
            for d in range(D):
                idx = layer * D + d
                dout_d = None if dcur is None else dcur[:, :, d * H:(d + 1) * H]
                dstate_n = None if all(s is None for s in dstates) else tuple(
                    self.xp.zeros((B, H), dtype=self.dtype) if s is None else s[idx] for s in dstates)
                cache = saved["caches"][layer][d]
                backward = checkpointed_backward if isinstance(cache, CheckpointedCache) else self.cell.backward
                dx, d0, dparams = backward(dout_d, dstate_n, cache)
                for kind, g in dparams.items():
                    grads[param_name(kind, layer, d == 1)] = g
                for k, g in enumerate(d0):
                    d_init[k][idx] = g
                dx_sum = dx if dx_sum is None else dx_sum + dx
                del dx, dout_d  # not kept past their use (they would stay alive through the layer below)
            if layer > 0 and masks is not None:
                dx_sum *= masks[layer - 1]
            dcur = dx_sum
        for name, g in grads.items():  # after the whole backward: a failure above adds nothing
            self._accumulate(name, g)
        d_init = tuple(self.xp.stack(g) for g in d_init)
        if unbatched:
            return dcur[:, 0], tuple(g[:, 0] for g in d_init)
        dx = self.xp.ascontiguousarray(dcur.transpose(1, 0, 2)) if self.batch_first else dcur
        return dx, d_init

    def forward(self, x, h0=None, lengths=None, *, hx=None, dropout_masks=None):
        """``out, h_n = layer(x, h0)`` (RNN, GRU; the LSTM takes and gives (h, c)), as torch; ``hx`` is
        torch's name for ``h0``."""
        states = self.to_states(_one_of("h0", h0, "hx", hx))
        out, states = self.forward_states(x, states, lengths, dropout_masks=dropout_masks)
        return out, self.from_states(states)

    def backward(self, dout, dh_n=None):
        """``dx, dh0 = layer.backward(dout, dh_n)`` (RNN, GRU; the LSTM takes and gives (dh, dc)): gradients
        w.r.t. the last call's inputs; parameter gradients accumulate into ``grads``."""
        dx, dstates = self.backward_states(dout, self.to_states(dh_n, gradient=True))
        return dx, self.from_states(dstates)


MEMORY_MODES = mem.MEMORY_MODES


def _one_of(name, value, alias_name, alias):
    """The value given under either of two keyword names (torch's ``hx`` beside ours)."""
    if alias is not None and value is not None:
        raise TypeError(f"give the initial state as {name} or as {alias_name}, not both")
    return value if alias is None else alias


class RNN(RNNBase):
    """Elman RNN, ``torch.nn.RNN``-shaped. ``nonlinearity`` is 'tanh' or 'relu'.

    ``out, h_n = rnn(x, h0=None, lengths=None)``;  ``dx, dh0 = rnn.backward(dout, dh_n=None)``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", backend=None, seed=None, check_finite=True,
                 memory="full", checkpoint_every=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, backend, seed, check_finite, memory, checkpoint_every)

    @classmethod
    def _mode(cls, config):
        if config["nonlinearity"] not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {config['nonlinearity']!r}")
        return f"rnn_{config['nonlinearity']}"

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else s + ", nonlinearity='relu'"


class GRU(RNNBase):
    """Gated recurrent unit, ``torch.nn.GRU``-shaped (gates r, z, n).

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, dtype="float32", backend=None, seed=None, check_finite=True, memory="full",
    checkpoint_every=None)``; ``out, h_n = gru(x, h0=None, lengths=None)``;
    ``dx, dh0 = gru.backward(dout, dh_n=None)``.
    """

    def __init__(self, input_size, hidden_size, *args, **kwargs):
        super().__init__("gru", input_size, hidden_size, *args, **kwargs)

    @classmethod
    def _mode(cls, config):
        return "gru"


class LSTM(RNNBase):
    """Long short-term memory, ``torch.nn.LSTM``-shaped (gates i, f, g, o).

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, dtype="float32", backend=None, seed=None, check_finite=True, memory="full",
    checkpoint_every=None)``; ``out, (h_n, c_n) = lstm(x, (h0, c0)=None, lengths=None)``;
    ``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n)=None)``; any part may be None (zeros).
    """

    def __init__(self, input_size, hidden_size, *args, **kwargs):
        super().__init__("lstm", input_size, hidden_size, *args, **kwargs)

    @classmethod
    def _mode(cls, config):
        return "lstm"

    def forward(self, x, state=None, lengths=None, *, hx=None, dropout_masks=None):
        """``out, (h_n, c_n) = lstm(x, (h0, c0))``; ``hx`` is torch's name for ``state``."""
        return super().forward(x, _one_of("state", state, "hx", hx), lengths, dropout_masks=dropout_masks)

    def backward(self, dout, dstate=None):
        """``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n))``; any part may be None (zeros)."""
        return super().backward(dout, dstate)


def _without_mode(init):
    """RNNBase.__init__'s signature without ``mode``: what LSTM(...) and GRU(...) take, for help() and for
    recording their constructor arguments by name."""
    sig = inspect.signature(init)
    return sig.replace(parameters=[p for name, p in sig.parameters.items() if name != "mode"])


LSTM.__init__.__signature__ = GRU.__init__.__signature__ = _without_mode(RNNBase.__init__)


def layer_call(cell, input_size, hidden_size, **kwargs):
    """(class, args, kwargs) of the layer :func:`make_layer` builds for a cell name."""
    name = canonical_cell_name(cell)
    if name.startswith("rnn_"):
        return RNN, (input_size, hidden_size), dict(nonlinearity=name[len("rnn_"):], **kwargs)
    return {"lstm": LSTM, "gru": GRU}[name], (input_size, hidden_size), kwargs


def make_layer(cell, input_size, hidden_size, **kwargs):
    """The layer for a cell name (``functional.CELL_CHOICES``: rnn_tanh (alias rnn), rnn_relu, lstm, gru)."""
    cls, args, kwargs = layer_call(cell, input_size, hidden_size, **kwargs)
    return cls(*args, **kwargs)


class Linear(Module):
    """``y = x W^T + b`` over the last axis (any leading axes), ``torch.nn.Linear``-shaped.

    Backward: dx = dy W,  dW += dy^T x,  db += sum dy (over all leading axes).
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", backend=None, seed=None):
        super().__init__(dtype=dtype, backend=backend)
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        shapes = mem.linear_shapes(in_features, out_features, bias)
        mem.check_available(mem.param_bytes(*mem.shapes_count(shapes), self.dtype),
                            f"Linear({self.in_features}, {self.out_features}): the parameters", self.backend)
        rng = be.default_rng(seed)
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight", rng.uniform(-bound, bound, (out_features, in_features)))
        if bias:
            self.add_param("bias", rng.uniform(-bound, bound, (out_features,)))

    @classmethod
    def param_shapes(cls, *args, **kwargs):
        a = cls.bind_config(*args, **kwargs)
        return mem.linear_shapes(a["in_features"], a["out_features"], bool(a["bias"]))

    @classmethod
    def param_count(cls, *args, **kwargs):
        return mem.shapes_count(cls.param_shapes(*args, **kwargs))

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={'bias' in self.params})"

    def forward(self, x):
        self._check_input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), got shape {tuple(x.shape)}")
        weight = self.params["weight"].copy()  # copies: the caller may change x or the weights before backward
        self._save_for_backward(x=x.copy(), weight=weight)
        y = x @ weight.T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dy):
        saved = self._saved()
        x = saved["x"]
        check_array(dy, "dy", backend=self.backend, dtype=self.dtype, shape=(*x.shape[:-1], self.out_features))
        dy2 = dy.reshape(-1, self.out_features)
        self._accumulate("weight", dy2.T @ x.reshape(-1, self.in_features))
        if "bias" in self.params:
            self._accumulate("bias", dy2.sum(axis=0))
        return dy @ saved["weight"]


class Embedding(Module):
    """Lookup table ``y = W[idx]``, ``torch.nn.Embedding``-shaped; W ~ N(0, 1).

    Backward scatters: dW[idx] += dy (repeated indices add up).
    """

    def __init__(self, num_embeddings, embedding_dim, dtype="float32", backend=None, seed=None):
        super().__init__(dtype=dtype, backend=backend)
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
        shapes = mem.embedding_shapes(num_embeddings, embedding_dim)
        mem.check_available(mem.param_bytes(*mem.shapes_count(shapes), self.dtype), f"{self!r}: the parameters",
                            self.backend)
        self.add_param("weight", be.default_rng(seed).standard_normal((num_embeddings, embedding_dim)))

    @classmethod
    def param_shapes(cls, *args, **kwargs):
        a = cls.bind_config(*args, **kwargs)
        return mem.embedding_shapes(a["num_embeddings"], a["embedding_dim"])

    @classmethod
    def param_count(cls, *args, **kwargs):
        return mem.shapes_count(cls.param_shapes(*args, **kwargs))

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def forward(self, idx):
        check_array(idx, "idx", backend=self.backend)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"idx must be an integer array, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            raise ValueError(f"idx values must lie in 0..{self.num_embeddings - 1}, "
                             f"got {int(idx.min())}..{int(idx.max())}")
        self._save_for_backward(idx=idx.copy())
        return self.params["weight"][idx]

    def backward(self, dy):
        idx = self._saved()["idx"]
        check_array(dy, "dy", backend=self.backend, dtype=self.dtype, shape=(*idx.shape, self.embedding_dim))
        with _GRAD_LOCK:
            self.xp.add.at(self.grads["weight"], idx.reshape(-1), dy.reshape(-1, self.embedding_dim))
        return None
