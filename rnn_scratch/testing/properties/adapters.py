"""Adapters: one way to call any torch-shaped recurrent layer, whoever wrote it.

The properties speak one language: a :class:`Call` (parameters, input, initial state, lengths, and the
gradients arriving from above) goes in, a :class:`Result` (outputs, final states, and the gradients of
``L = sum(dout * out) + sum(dstate_n * state_n)`` with respect to the input, the initial state and
every parameter) comes out, all host NumPy arrays in **time-major** layout:

====================  ==========================================================
x                     (T, B, I)
states, dstates       a tuple, one array per state part ((h,) or (h, c)), each (L*D, B, H)
out, dout             (T, B, D*H)
lengths               None, or B integers in 1..T (padded rows; torch's packed-sequence meaning)
params, grads         {name: array}, torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...)
====================  ==========================================================

An adapter translates to the layer's own habits (``batch_first``, torch tensors, a gradient function...).
Three are ready: :class:`TorchAdapter` (``torch.nn.RNN/LSTM/GRU``, gradients by autograd, padded batches
through ``pack_padded_sequence(..., enforce_sorted=False)``), :class:`RnnScratchAdapter` (this package's
layers, the hand-written backward) and :class:`CustomAdapter` (a small documented protocol, below).

Where the hidden units sit in the parameters is one function, :func:`relabel_units`; which direction owns
a parameter is :func:`swap_directions`; what a parameter does (input weight, recurrent weight, bias) is
:func:`parameter_role`. All three read torch's names and its gate-blocked layout (G blocks of H rows).
"""

from __future__ import annotations

import copy
import re
import signal
import threading
from dataclasses import dataclass, field, replace

import numpy as np

CALL_TIME_LIMIT_S = 10.0  # one forward or backward of a layer under test


class UsageError(Exception):
    """The target cannot be loaded, built or called as the chosen adapter expects (exit status 2)."""


class LayerError(Exception):
    """A call of the layer under test went wrong (raised, never returned, returned the wrong thing): a finding."""


class LayerTimeout(LayerError):
    """A call of the layer under test did not return within the time limit."""


class RelabelUnavailable(Exception):
    """The unit layout of some parameter is not known, so hidden units cannot be relabelled."""


# -- what goes in and what comes out ---------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One forward (and backward) of a layer. Time-major host arrays; see the module docstring.

    ``states``/``dstates`` None: zeros. ``dout`` None: forward only."""

    params: dict
    x: np.ndarray
    states: tuple | None = None
    lengths: np.ndarray | None = None
    dout: np.ndarray | None = None
    dstates: tuple | None = None

    def but(self, **changes) -> Call:
        return replace(self, **changes)


@dataclass
class Result:
    """What one :class:`Call` gave: out (T, B, D*H), finals (tuple of (L*D, B, H)); after a backward also
    dx (T, B, I), dstate0 (tuple like finals) and grads {name: array}."""

    out: np.ndarray
    finals: tuple
    dx: np.ndarray | None = None
    dstate0: tuple | None = None
    grads: dict = field(default_factory=dict)
    changed_inputs: list = field(default_factory=list)  # what the layer changed in place of what it was given

    def named(self, state_names) -> dict:
        """{tensor name: array}: ``out``, ``h_n``/``c_n``, ``dx``, ``dh0``/``dc0``, ``d weight_ih_l0``..."""
        named = {"out": self.out, **{f"{s}_n": f for s, f in zip(state_names, self.finals)}}
        if self.dx is not None:
            named["dx"] = self.dx
            named.update({f"d{s}0": d for s, d in zip(state_names, self.dstate0)})
            named.update({f"d {k}": v for k, v in sorted(self.grads.items())})
        return named


# -- torch's parameter names and layout ------------------------------------------------------------------
_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
ROLES = {"weight_ih": "input", "weight_hh": "recurrent", "bias_ih": "bias", "bias_hh": "bias"}


def parse_name(name):
    """(kind, layer, direction) of a torch parameter name, e.g. ``("weight_hh", 1, 1)`` for
    ``weight_hh_l1_reverse``; None for any other name."""
    m = _NAME.match(name)
    return None if m is None else (m.group(1), int(m.group(2)), 1 if m.group(3) else 0)


def parameter_role(name):
    """"input" (W_ih), "recurrent" (W_hh), "bias", or None for a name torch does not use."""
    parsed = parse_name(name)
    return None if parsed is None else ROLES[parsed[0]]


TORCH_LAYOUT = {"weight_ih": ("G*H", "I"), "weight_hh": ("G*H", "H"), "bias_ih": ("G*H",), "bias_hh": ("G*H",)}


def _unit_axes(name, shape, *, hidden_size, num_gates, num_directions, layout=None):
    """Per axis of a parameter, the hidden units it indexes: None (no units: layer 0's input features) or a
    list of segments of H entries, each the units of one (layer, direction). ``layout``: {kind: symbolic shape}
    as a cell declares it (``Cell.params``: ``"G*H"`` G gate blocks of the layer's own units, ``"k*H"`` k blocks,
    ``"H"`` one, ``"I"`` the layer's input); default torch's gate-blocked layout:

    - weight_ih_l{k}{s} (G*H, in_k): rows are G gate blocks of layer k's units; columns (k >= 1) are the
      D blocks of layer k-1's units, forward then reverse, as layer k-1's output concatenates them;
    - weight_hh_l{k}{s} (G*H, H): rows as above, columns are layer k's units (a vector (G*H,) has rows only);
    - bias_ih_l{k}{s}, bias_hh_l{k}{s} (G*H,): gate blocks of layer k's units.
    """
    from ...functional import Param

    m = _SUFFIX.match(name)
    layout = TORCH_LAYOUT if layout is None else layout
    if m is None or m.group(1) not in layout:
        raise RelabelUnavailable(f"parameter {name!r} is not one of the layer's known parameters "
                                 f"({', '.join(sorted(layout))}), so where its hidden units sit is unknown")
    kind, layer, d = m.group(1), int(m.group(2)), 1 if m.group(3) else 0
    blocks = Param(kind, layout[kind]).hidden_blocks(num_gates)
    if kind == "weight_hh" and len(shape) == 1 and len(blocks) == 2:
        blocks = blocks[:1]  # a vector recurrent weight (one per row)
    H, own = hidden_size, (layer, d)
    axes = [None if b is None and layer == 0 else [(layer - 1, e) for e in range(num_directions)] if b is None
            else [own] * b for b in blocks]
    if len(axes) != len(shape):
        raise RelabelUnavailable(f"parameter {name!r} has shape {tuple(shape)}: not the layout {layout[kind]}")
    for axis, segments in enumerate(axes):
        if segments is not None and shape[axis] != len(segments) * H:
            raise RelabelUnavailable(f"parameter {name!r} has shape {tuple(shape)}: axis {axis} should hold "
                                     f"{len(segments)} blocks of hidden_size={H} units")
    return axes


def relabel_units(params, perms, *, hidden_size, num_gates, num_directions, layout=None):
    """Every parameter with the hidden units relabelled: new unit k of (layer l, direction d) is old unit
    ``perms[l, d][k]``, so the new layer's state is ``h[..., perms[l, d]]`` of the old one.

    This is the one place that knows where hidden units sit in the parameters (:func:`_unit_axes`: torch's
    gate-blocked layout, G = ``num_gates`` blocks of H rows, or a cell's declared ``layout``). It is a
    permutation of coordinates, so it
    maps parameter *gradients* the same way. Raises :class:`RelabelUnavailable` for an unknown parameter.
    """
    out = {}
    for name, value in params.items():
        value = np.asarray(value)
        axes = _unit_axes(name, value.shape, hidden_size=hidden_size, num_gates=num_gates,
                          num_directions=num_directions, layout=layout)
        for axis, segments in enumerate(axes):
            if segments is not None:
                index = np.concatenate([j * hidden_size + np.asarray(perms[key]) for j, key in enumerate(segments)])
                value = np.take(value, index, axis=axis)
        out[name] = value
    return out


def inverse_perms(perms):
    """The relabelling that undoes ``perms``."""
    return {key: np.argsort(p) for key, p in perms.items()}


_SUFFIX = re.compile(r"^(.+)_l(\d+)(_reverse)?$")


def swap_directions(params, *, hidden_size):
    """The parameters with the two directions exchanged: ``*_l{k}`` takes ``*_l{k}_reverse``'s value and the
    other way round (any name with torch's suffix: a peephole or a LayerNorm gain too); for k >= 1 the input
    columns of ``weight_ih`` swap halves as well (layer k-1's output is [forward units, reverse units]). An
    involution, and a permutation of coordinates (gradients map alike)."""
    out = {}
    for name, value in params.items():
        m = _SUFFIX.match(name)
        if m is None:
            raise RelabelUnavailable(f"parameter {name!r}: which layer and direction own it is unknown (torch's "
                                     "names end in _l<k> or _l<k>_reverse)")
        kind, layer, reverse = m.group(1), int(m.group(2)), bool(m.group(3))
        value = np.asarray(value)
        if kind == "weight_ih" and layer > 0:
            H = hidden_size
            value = np.concatenate([value[:, H:2 * H], value[:, :H]], axis=1)
        out[f"{kind}_l{layer}{'' if reverse else '_reverse'}"] = value
    return out


# -- calling untrusted code ------------------------------------------------------------------------------
class _Stop(BaseException):
    pass


def guarded(what, fn, *args, limit=None):
    """``fn(*args)``, with anything it raises (even SystemExit) and a call that does not return within
    ``limit`` seconds (default ``CALL_TIME_LIMIT_S``; main thread only, through SIGALRM) turned into
    :class:`LayerError` naming ``what``."""
    limit = CALL_TIME_LIMIT_S if limit is None else limit
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")

    def stop(signum, frame):
        raise _Stop

    if use_alarm:
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        with np.errstate(all="ignore"):
            return fn(*args)
    except _Stop:
        raise LayerTimeout(f"{what} did not return within {limit:g} s") from None
    except LayerError:
        raise
    except (Exception, SystemExit) as exc:
        raise LayerError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _named(what, fn, *args):
    """``fn(*args)`` with what it raises turned into :class:`LayerError` naming ``what`` (no timer: it runs inside
    :func:`guarded`, whose one timer covers the whole call)."""
    try:
        return fn(*args)
    except LayerError:
        raise
    except (Exception, SystemExit) as exc:
        raise LayerError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _host(value, what, shape, dtype=None):
    """A NumPy copy of an array-like the layer returned, checked against the expected shape."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        value = value.get()
    if not isinstance(value, np.ndarray):
        raise LayerError(f"{what} is a {type(value).__name__}, expected an array of shape {shape}")
    if value.shape != tuple(shape):
        raise LayerError(f"{what} has shape {value.shape}, expected {tuple(shape)}")
    if dtype is not None and value.dtype != dtype:
        raise LayerError(f"{what} has dtype {value.dtype}, expected {dtype} (the dtype of the call)")
    return np.array(value)


def _same(a, b):
    """Equal arrays (NaN equal to NaN), tuples or dicts of them, or both None."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    if a is None or b is None:
        return a is b
    return np.array_equal(a, b, equal_nan=True)


def _state_tuple(state, n, what):
    """The layer's state in tuple form: h alone counts as (h,) for one-part states."""
    if n == 1 and not isinstance(state, (tuple, list)):
        return (state,)
    if not isinstance(state, (tuple, list)) or len(state) != n:
        got = type(state).__name__ + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
        raise LayerError(f"{what} is a {got}, expected {n} state part(s)")
    return tuple(state)


# -- the adapters ----------------------------------------------------------------------------------------
class Adapter:
    """How the properties call one layer. Subclasses fill in the structure and :meth:`_run`.

    Structure: ``input_size``, ``hidden_size``, ``num_layers``, ``num_directions``, ``batch_first``,
    ``state_names`` (("h",) or ("h", "c")), ``num_gates`` (G: rows of W_ih per hidden unit; None when the
    layout is unknown), ``dtype`` (a NumPy dtype), ``supports_lengths``, and ``memoryless``: True when the
    state reaches the next step only through the recurrent weights (the Elman RNN: zero them and each step
    is a feed-forward map), False when the cell also carries it otherwise (an LSTM's c, a GRU's z * h),
    None when unknown.
    """

    kind = "adapter"
    supports_lengths = True
    memoryless = None
    layout = None  # {parameter kind: symbolic shape} (Cell.params); None: torch's four, gate-blocked
    min_hidden_size = 1  # the smallest hidden size the layer is built at (Cell.min_hidden_size)
    zero_at_zero = True  # with every parameter and the state zero the outputs are zero (tanh, relu, the gates)
    torch_layout = True  # parameters named and laid out as torch's (relabelling, direction swap, roles)

    def __init__(self, layer, label):
        self.layer = layer
        self.label = label

    # structure
    @property
    def num_states(self):
        return len(self.state_names)

    @property
    def state_shape(self):
        return (self.num_layers * self.num_directions, self.hidden_size)

    def describe(self):
        """One line: the layer and its structure."""
        parts = [f"I={self.input_size}", f"H={self.hidden_size}", f"layers={self.num_layers}",
                 "bidirectional" if self.num_directions == 2 else "unidirectional",
                 "batch_first" if self.batch_first else "time-major", f"built as {self.dtype}"]
        return f"{self.label} ({', '.join(parts)})"

    # parameters and layout
    def parameters(self) -> dict:
        """{name: host copy} in the layer's dtype."""
        raise NotImplementedError

    def relabel(self, params, perms):
        """:func:`relabel_units` with this layer's sizes; :class:`RelabelUnavailable` when its layout is unknown."""
        if not self.torch_layout or self.num_gates is None:
            raise RelabelUnavailable(f"the {self.kind} adapter of {self.label} declares no unit layout")
        return relabel_units(params, perms, hidden_size=self.hidden_size, num_gates=self.num_gates,
                             num_directions=self.num_directions, layout=self.layout)

    def swap_directions(self, params):
        if not self.torch_layout:
            raise RelabelUnavailable(f"the {self.kind} adapter of {self.label} declares no parameter layout")
        return swap_directions(params, hidden_size=self.hidden_size)

    def roles(self):
        """{name: "input" | "recurrent" | "bias" | None (another kind: a peephole, a LayerNorm gain)}, from torch's
        names; None when the layer declares no torch layout or has no ``weight_ih_l0``."""
        names = list(self.parameters())
        if not self.torch_layout or "weight_ih_l0" not in names:
            return None
        return {n: parameter_role(n) for n in names}

    # calling
    def astype(self, dtype) -> Adapter:
        """The same layer in another dtype (a new adapter; this one is unchanged)."""
        raise NotImplementedError

    def run(self, call: Call, backward=True) -> Result:
        """Forward, then (with ``backward`` and ``call.dout``) the backward of L; host arrays, time-major.

        Every array handed to the layer is a fresh copy in the layer's dtype; everything returned is checked
        for shape (and dtype) and copied, so a layer that keeps or changes what it got cannot change a case."""
        T, B, _ = call.x.shape
        dt = self.dtype
        params = {k: np.array(v, dtype=dt) for k, v in call.params.items()}
        x = np.array(call.x, dtype=dt)
        states = None if call.states is None else tuple(np.array(s, dtype=dt) for s in call.states)
        lengths = None if call.lengths is None else np.array(call.lengths, dtype=np.int64)
        dout = None if (call.dout is None or not backward) else np.array(call.dout, dtype=dt)
        dstates = None
        if dout is not None:
            dstates = tuple(np.array(d, dtype=dt) if call.dstates is not None else
                            np.zeros((self.num_layers * self.num_directions, B, self.hidden_size), dt)
                            for d in (call.dstates or (None,) * self.num_states))
        if self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
            dout = None if dout is None else np.ascontiguousarray(dout.transpose(1, 0, 2))
        given = {"x": x, "the initial state": states, "lengths": lengths, "dout": dout, "dstate_n": dstates,
                 "the parameters": params}
        kept = copy.deepcopy(given)
        what = f"{self.label} ({'forward and backward' if dout is not None else 'forward'})"
        out, finals, dx, d0, grads = guarded(what, self._run, params, x, states, lengths, dout, dstates)
        changed = [k for k in given if not _same(given[k], kept[k])]
        D, H = self.num_directions, self.hidden_size
        out_shape = (B, T, D * H) if self.batch_first else (T, B, D * H)
        out = _host(out, "the output", out_shape, dt)
        sshape = (self.num_layers * D, B, H)
        finals = tuple(_host(f, f"the final {s}", sshape, dt) for s, f in
                       zip(self.state_names, _state_tuple(finals, self.num_states, "the final state")))
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        result = Result(out, finals, changed_inputs=changed)
        if dout is None:
            return result
        x_shape = (B, T, self.input_size) if self.batch_first else (T, B, self.input_size)
        dx = _host(dx, "dx", x_shape, dt)
        result.dx = dx.transpose(1, 0, 2) if self.batch_first else dx
        result.dstate0 = tuple(_host(d, f"d{s}0", sshape, dt) for s, d in
                               zip(self.state_names, _state_tuple(d0, self.num_states, "the initial-state gradient")))
        if not isinstance(grads, dict) or set(grads) != set(params):
            got = sorted(grads) if isinstance(grads, dict) else type(grads).__name__
            raise LayerError(f"the parameter gradients are {got}, expected one per parameter {sorted(params)}")
        result.grads = {k: _host(v, f"the gradient of {k}", params[k].shape, dt) for k, v in grads.items()}
        return result

    def _run(self, params, x, states, lengths, dout, dstates):
        """Layer-layout arrays in; (out, finals, dx, dstate0, grads) out (dx... None without dout)."""
        raise NotImplementedError


class TorchAdapter(Adapter):
    """``torch.nn.RNN``, ``LSTM``, ``GRU`` (and subclasses): gradients by autograd, in eval mode (no dropout).

    Torch layers take no ``lengths``: a padded batch goes through ``pack_padded_sequence(x, lengths,
    enforce_sorted=False)`` and comes back through ``pad_packed_sequence(..., total_length=T)``, which puts
    zeros past each length, as torch users do.
    """

    kind = "torch"

    def __init__(self, module, label=None):
        import torch

        if not isinstance(module, torch.nn.RNNBase):
            raise UsageError(f"the torch adapter takes a torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise UsageError("the torch adapter does not take an LSTM with proj_size > 0 (h and c differ in size)")
        super().__init__(module, label or repr(module))
        self.module = module.train(False)
        self.input_size, self.hidden_size = module.input_size, module.hidden_size
        self.num_layers, self.num_directions = module.num_layers, 2 if module.bidirectional else 1
        self.batch_first = bool(module.batch_first)
        self.state_names = ("h", "c") if isinstance(module, torch.nn.LSTM) else ("h",)
        self.num_gates = module.weight_ih_l0.shape[0] // module.hidden_size
        self.memoryless = isinstance(module, torch.nn.RNN)
        self.dtype = np.dtype(str(module.weight_ih_l0.dtype).replace("torch.", ""))
        self._tdtype = module.weight_ih_l0.dtype

    def parameters(self):
        return {k: v.detach().cpu().numpy().copy() for k, v in self.module.named_parameters()}

    def astype(self, dtype):
        import torch

        tdtype = {"float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name]
        return TorchAdapter(copy.deepcopy(self.module).to(tdtype), self.label)

    def _run(self, params, x, states, lengths, dout, dstates):
        import torch

        m, T = self.module, x.shape[1 if self.batch_first else 0]
        grad = dout is not None
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(torch.as_tensor(params[name]))
                p.grad = None
        with torch.enable_grad() if grad else torch.no_grad():
            xt = torch.tensor(x, requires_grad=grad)
            B = x.shape[0 if self.batch_first else 1]
            sshape = (self.num_layers * self.num_directions, B, self.hidden_size)
            st = [torch.tensor(s, requires_grad=grad) if states is not None else
                  torch.zeros(sshape, dtype=self._tdtype, requires_grad=grad) for s in states or self.state_names]
            hx = tuple(st) if self.num_states == 2 else st[0]
            if lengths is not None:
                packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths),
                                                                 batch_first=self.batch_first, enforce_sorted=False)
                out, finals = m(packed, hx)
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=self.batch_first, total_length=T)
            else:
                out, finals = m(xt, hx)
            finals = finals if self.num_states == 2 else (finals,)
            if not grad:
                return out, finals, None, None, None
            loss = (out * torch.as_tensor(dout)).sum()
            for f, d in zip(finals, dstates):
                loss = loss + (f * torch.as_tensor(d)).sum()
            loss.backward()
        grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in m.named_parameters()}
        return out, finals, xt.grad, tuple(s.grad if s.grad is not None else torch.zeros_like(s) for s in st), grads


class RnnScratchAdapter(Adapter):
    """rnn_scratch's layers (``rs.RNN/LSTM/GRU``, ``layers.make_layer``; any cell of the registry), in eval mode:
    ``forward_states`` / ``backward_states`` and the hand-written backward's ``grads``."""

    kind = "rnn_scratch"

    def __init__(self, layer, label=None):
        from ...layers import RNNBase

        if not isinstance(layer, RNNBase):
            raise UsageError(f"the rnn_scratch adapter takes an rnn_scratch recurrent layer (rs.RNN, LSTM, GRU, "
                             f"layers.make_layer), got {type(layer).__name__}")
        super().__init__(layer, label or repr(layer))
        layer.eval()
        self.input_size, self.hidden_size = layer.input_size, layer.hidden_size
        self.num_layers, self.num_directions = layer.num_layers, layer.num_directions
        self.batch_first = layer.batch_first
        self.state_names = tuple(layer.cell.state_names)
        self.num_gates = layer.cell.num_gates
        self.layout = {p.name: p.shape for p in layer.cell.params}  # where the units sit: the cell's record
        self.min_hidden_size = layer.cell.min_hidden_size
        # one gate block and one state part: the new state is a function of (x_t, W_hh-term) only
        self.memoryless = layer.cell.num_gates == 1 and layer.cell.num_states == 1
        self.dtype = np.dtype(layer.dtype)

    def parameters(self):
        from ...backend import to_numpy

        return {k: to_numpy(v).copy() for k, v in self.layer.state_dict().items()}

    def astype(self, dtype):
        config = self.layer.config
        if config is None:
            raise UsageError(f"{self.label} cannot be rebuilt in {dtype}: its constructor arguments are unknown")
        layer = type(self.layer)(**{**config, "dtype": np.dtype(dtype).name})
        return RnnScratchAdapter(layer, self.label)

    def _run(self, params, x, states, lengths, dout, dstates):
        from ...backend import to_backend

        layer = self.layer
        on = lambda a: None if a is None else to_backend(a, layer.backend)  # noqa: E731
        layer.load_state_dict(params)
        layer.zero_grad()
        out, finals = layer.forward_states(on(x), None if states is None else tuple(on(s) for s in states), lengths)
        if dout is None:
            return out, finals, None, None, None
        dx, d0 = layer.backward_states(on(dout), tuple(on(d) for d in dstates))
        return out, finals, dx, d0, {k: v.copy() for k, v in layer.grads.items()}


class CustomAdapter(Adapter):
    """Any layer object that follows this protocol (NumPy arrays everywhere; it computes in the dtype of the
    arrays it is given)::

        layer.hidden_size                        # required; input_size is read from the weights or the factory
        layer.forward(x, state, lengths)        -> (out, state)
        layer.backward(dout, dstate)            -> (dx, dstate0, grads)    # of its last forward, or instead
        layer.gradients(x, state, lengths, dout, dstate) -> (dx, dstate0, grads)   # a gradient function
        layer.get_parameters()                  -> {name: array}
        layer.set_parameters({name: array})

    ``state``/``dstate``: None or a tuple of arrays (L*D, B, H), one per state part; ``grads``: a dict keyed
    like the parameters. Optional attributes (default): ``num_layers`` (1), ``bidirectional`` (False),
    ``batch_first`` (False), ``state_names`` (("h",); the first part is the one output), ``supports_lengths``
    (True), ``memoryless`` (None; True: the state reaches the next step only through the recurrent weights),
    ``zero_at_zero`` (True: zero parameters and state give zero outputs), and ``unit_layout``: ``"torch"`` when
    the parameters carry torch's names and gate-blocked layout (G blocks of H rows), which is what relabelling
    hidden units, exchanging directions and zeroing input or recurrent weights need; without it those
    properties are reported as not available.
    """

    kind = "custom"

    def __init__(self, layer, label=None, input_size=None):
        super().__init__(layer, label or type(layer).__name__)
        for method in ("forward", "get_parameters", "set_parameters"):
            if not callable(getattr(layer, method, None)):
                raise UsageError(f"{self.label} has no {method}() (the custom protocol: forward, backward or "
                                 "gradients, get_parameters, set_parameters)")
        if not callable(getattr(layer, "backward", None)) and not callable(getattr(layer, "gradients", None)):
            raise UsageError(f"{self.label} has neither backward() nor gradients() (the custom protocol needs one)")
        H = getattr(layer, "hidden_size", None)
        if isinstance(H, bool) or not isinstance(H, (int, np.integer)) or H < 1:
            raise UsageError(f"{self.label}.hidden_size must be a positive integer, got {H!r}")
        self.hidden_size = int(H)
        self.num_layers = int(getattr(layer, "num_layers", 1))
        self.num_directions = 2 if getattr(layer, "bidirectional", False) else 1
        self.batch_first = bool(getattr(layer, "batch_first", False))
        self.state_names = tuple(getattr(layer, "state_names", ("h",)))
        self.supports_lengths = bool(getattr(layer, "supports_lengths", True))
        self.memoryless = getattr(layer, "memoryless", None)
        self.zero_at_zero = bool(getattr(layer, "zero_at_zero", True))
        self.torch_layout = getattr(layer, "unit_layout", None) == "torch"
        params = guarded(f"{self.label}.get_parameters()", layer.get_parameters)
        if not isinstance(params, dict) or not params:
            raise UsageError(f"{self.label}.get_parameters() returned {type(params).__name__}, expected a non-empty "
                             "dict of arrays")
        self._params = {k: np.array(v) for k, v in params.items()}
        self.dtype = np.result_type(*self._params.values())
        if self.dtype not in (np.float32, np.float64):
            raise UsageError(f"{self.label}'s parameters are {self.dtype}, expected float32 or float64")
        w = self._params.get("weight_ih_l0")
        self.input_size = int(w.shape[1]) if w is not None and w.ndim == 2 else input_size
        if self.input_size is None:
            raise UsageError(f"{self.label}: the input size is unknown (no weight_ih_l0, no factory size)")
        self.num_gates = (w.shape[0] // self.hidden_size) if (self.torch_layout and w is not None) else None

    def parameters(self):
        return {k: v.astype(self.dtype) for k, v in self._params.items()}

    def astype(self, dtype):
        twin = copy.copy(self)
        twin.dtype = np.dtype(dtype)
        return twin

    def _run(self, params, x, states, lengths, dout, dstates):
        layer = self.layer
        _named(f"{self.label}.set_parameters()", layer.set_parameters, params)
        res = _named(f"{self.label}.forward()", layer.forward, x, states, lengths)
        if not isinstance(res, tuple) or len(res) != 2:
            raise LayerError(f"{self.label}.forward() returned {type(res).__name__}, expected (out, state)")
        out, finals = res
        if dout is None:
            return out, finals, None, None, None
        if callable(getattr(layer, "gradients", None)):
            g = _named(f"{self.label}.gradients()", layer.gradients, x.copy(), None if states is None else tuple(
                s.copy() for s in states), lengths, dout, dstates)
        else:
            g = _named(f"{self.label}.backward()", layer.backward, dout, dstates)
        if not isinstance(g, tuple) or len(g) != 3:
            raise LayerError(f"{self.label}'s backward returned {type(g).__name__}, expected (dx, dstate0, grads)")
        return out, finals, *g
