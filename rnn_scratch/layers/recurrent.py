"""The recurrent layers: ``RNNBase`` (argument checks and the torch-shaped boundary, for any registered cell) and
torch's ``RNN``, ``LSTM``, ``GRU``; :func:`make_layer` builds the layer for a cell name."""

from __future__ import annotations

import inspect

import numpy as np

from .. import backend as be
from .. import memory as mem
from ..functional import TorchModule, default_every, get_cell, param_name, stack_backward, stack_forward
from ..validation import check_array, check_lengths, check_positive_int, check_probability
from .module import Module


class RNNBase(Module):
    """Multi-layer, optionally bidirectional recurrent layer; ``mode`` picks the cell.

    ``mode`` is any registered cell name (``functional.CELLS``); RNN, LSTM and GRU are the torch-shaped subclasses
    for torch's cells, and ``RNNBase(mode, ...)`` itself serves every other cell.

    Parameters are the cell's (``Cell.params``), named as torch names them: for layer k and direction suffix s
    ('' or '_reverse') ``<name>_l{k}{s}``; for torch's cells ``weight_ih_l{k}{s}`` (G*H, in_k),
    ``weight_hh_l{k}{s}`` (G*H, H), ``bias_ih_l{k}{s}``, ``bias_hh_l{k}{s}`` (G*H,), with G = 1 (RNN), 4 (LSTM,
    gates i f g o), 3 (GRU, gates r z n), in_0 = input_size and in_k = H * num_directions above, all starting
    U(-1/sqrt(H), 1/sqrt(H)). The layers x directions loop is :mod:`rnn_scratch.functional.stack`'s.

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
        H, G = self.hidden_size, self.cell.num_gates
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * self.num_directions
            for direction in range(self.num_directions):
                for p in self.cell.params:
                    if self.bias or not p.bias:
                        self.add_param(param_name(p.name, layer, direction == 1), p.initial(self._rng, in_size, H, G))
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

    def cell_params(self, layer, direction):
        """{the cell's parameter name: this layer's array, or None for a bias left out} of one layer and direction:
        the functional core's ``params``."""
        return {p.name: self.params.get(param_name(p.name, layer, direction == 1)) for p in self.cell.params}

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
        mode = f"{self.mode!r}, " if type(self) is RNNBase else ""
        return f"{type(self).__name__}({mode}{self.extra_repr()})"

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
        return [[{k: None if v is None else v.copy() for k, v in self.cell_params(layer, d).items()}
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
        every = None if self.memory == "full" else self.checkpoint_every or default_every(T)
        out, finals, caches = stack_forward(self.cell, xt, states, self._snapshot_params(), mask=mask,
                                            dropout_masks=masks, checkpoint_every=every)
        self._save_for_backward(caches=caches, masks=masks, shape=(T, B), unbatched=unbatched)
        self.last_dropout_masks = masks
        if unbatched:
            return out[:, 0], tuple(f[:, 0] for f in finals)
        output = self.xp.ascontiguousarray(out.transpose(1, 0, 2)) if self.batch_first else out
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
        dx, d_init, by_layer = stack_backward(self.cell, dout, dstates, saved["caches"],
                                              dropout_masks=saved["masks"])
        grads = {param_name(kind, layer, d == 1): g for (layer, d), dparams in by_layer.items()
                 for kind, g in dparams.items()}
        for name, g in grads.items():  # after the whole backward: a failure above adds nothing
            self._accumulate(name, g)
        if unbatched:
            return dx[:, 0], tuple(g[:, 0] for g in d_init)
        dx = self.xp.ascontiguousarray(dx.transpose(1, 0, 2)) if self.batch_first else dx
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
        out, states = self.forward_states(x, self.to_states(_one_of("state", state, "hx", hx)), lengths,
                                          dropout_masks=dropout_masks)
        return out, self.from_states(states)

    def backward(self, dout, dstate=None):
        """``dx, (dh0, dc0) = lstm.backward(dout, (dh_n, dc_n))``; any part may be None (zeros)."""
        return super().backward(dout, dstate)


def _without_mode(init):
    """RNNBase.__init__'s signature without ``mode``: what LSTM(...) and GRU(...) take, for help() and for
    recording their constructor arguments by name."""
    sig = inspect.signature(init)
    return sig.replace(parameters=[p for name, p in sig.parameters.items() if name != "mode"])


LSTM.__init__.__signature__ = GRU.__init__.__signature__ = _without_mode(RNNBase.__init__)


TORCH_SHAPED = {cls.__name__: cls for cls in (RNN, LSTM, GRU)}  # named as torch's classes


def layer_call(cell, input_size, hidden_size, **kwargs):
    """(class, args, kwargs) of the layer :func:`make_layer` builds for a cell name or alias
    (``functional.cell_choices()``): the torch-shaped class named as the cell's ``torch.nn`` class (RNN, LSTM,
    GRU; with that class's arguments, e.g. nonlinearity) when that class builds this cell, else
    ``RNNBase(cell, ...)``. Nothing is built."""
    c = get_cell(cell)
    ref = c.reference
    cls = TORCH_SHAPED.get(ref.name) if isinstance(ref, TorchModule) else None
    if cls is not None:
        call = {**ref.kwargs, **kwargs}
        try:
            builds = get_cell(cls._mode(cls.bind_config(input_size, hidden_size, **call))) is c
        except (TypeError, ValueError):  # the class's own constructor will say what is wrong
            builds = True
        if builds:
            return cls, (input_size, hidden_size), call
    return RNNBase, (c.name, input_size, hidden_size), kwargs


def make_layer(cell, input_size, hidden_size, **kwargs):
    """The layer for a cell name or alias: ``cls(*args, **kwargs)`` of :func:`layer_call`."""
    cls, args, kwargs = layer_call(cell, input_size, hidden_size, **kwargs)
    return cls(*args, **kwargs)
