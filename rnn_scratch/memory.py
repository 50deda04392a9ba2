r"""The memory guard: what a size a user chose will allocate, checked against what the machine has left,
before anything is allocated.

Every allocation whose size a user's numbers decide passes :func:`check_available` first: a layer's
parameters at construction (and a model's at :func:`~rnn_scratch.checkpoint.load_model`), one forward +
backward (full or checkpointed BPTT), the data arrays of the command-line tools. A size that cannot fit
is a :class:`MemoryError` naming the bytes, raised in microseconds, instead of a process the operating
system kills minutes later (allocations are only backed when touched, so NumPy's own MemoryError comes
too late or not at all).

Sizes: T steps, B batch rows, I input features, H hidden units, G gates per unit (``Cell.num_gates``),
L layers, D directions, S state parts (``Cell.num_states``); u = T B H, the size of one (T, B, H) array.
Parameters of layer l (per direction): the cell's (``Cell.params``, symbolic shapes); for torch's cells::

    weight_ih_l{l}  (G H, in_l)    in_0 = I,  in_l = D H above
    weight_hh_l{l}  (G H, H)
    bias_ih_l{l}, bias_hh_l{l}  (G H,)      P_l = G H (in_l + H + 2) numbers with biases

(IndRNN's weight_hh is a vector (H,); the LayerNorm LSTM adds gains; P_l counts whatever the cell declares.)

Full BPTT (what stays alive, in numbers of the layer's dtype; ``Cell.memory = (f, b[, s])``)::

    forward:   T B I (the input's copy) + sum_l D [f u + S B H] (the caches) + sum_l D P_l (the weights'
               copy) + the outputs (D = 2: each layer's concatenation, 2u; D = 1: the last layer's copy, u)
    backward:  at layer l, direction d, on top of the forward: the incoming gradient (T B D H below the
               top layer), the input gradients (T B in_l per direction), the cell's b u, and the parameter
               gradients computed so far (P_l each), all held until the end of the call

Checkpointed BPTT (segments of k steps, about sqrt(T)) keeps each layer's output instead of its cache::

    forward:   T B I + sum_l (D H T B: the layer's output) + L D S B H ceil(T / k) (the checkpoints)
               + sum_l D P_l, and while a segment runs: its cache f k B H
    backward:  as full BPTT with one segment recomputed: (f + b) k B H instead of b u

:func:`bptt_bytes` is tested against the ``tracemalloc`` peak of real calls over cells x layers x
directions x modes: estimate >= peak and <= 1.25 x peak.
"""

from __future__ import annotations

import math

import numpy as np

from . import backend as be
from .functional import default_every, get_cell, param_name
from .functional._parallel import blocks as row_blocks
from .validation import as_float_dtype, check_positive_int

MEMORY_MODES = ("full", "checkpoint")
GUARD_FLOOR = 1 << 26  # below 64 MiB a request is not worth reading the machine's state
PER_ARRAY_BYTES = 640  # a parameter and its gradient as Python objects: two ndarrays, the name, dict entries
# Python objects of one forward + backward (measured: ~10 KiB at any size), and NumPy's iteration buffers for
# ufuncs on strided views (at most 8192 elements of each of 3 operands, 192 KiB)
CALL_OBJECT_BYTES = (24 << 10) + 3 * 8192 * 8
LAYER_OBJECT_BYTES = 2 << 10  # ... per layer and direction (its cache and step records)
SEGMENT_OBJECT_BYTES = 400  # ... per checkpoint (a slice and a state tuple)
SAFETY = 1.04  # the model is within about 3% of measured peaks; this keeps the estimate above them
WEIGHT_TEMPORARIES = 3  # weight-sized copies a cell's fast path makes while it runs (reordered, scaled, transposed)


def check_memory_mode(memory, checkpoint_every):
    """``memory`` in MEMORY_MODES and ``checkpoint_every`` None or an integer >= 1; returns them (the int
    as a Python int). ValueError naming the argument."""
    if not isinstance(memory, str) or memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, (bool, np.bool_)) or not isinstance(
            checkpoint_every, (int, np.integer)) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be None (about sqrt(seq_len)) or an integer >= 1, "
                         f"got {checkpoint_every!r}")
    return memory, None if checkpoint_every is None else int(checkpoint_every)


# -- parameters ---------------------------------------------------------------------------------
def _recurrent_sizes(mode, input_size, hidden_size, num_layers, bias, bidirectional):
    cell = get_cell(mode)  # from the cell registry: its parameters' symbolic shapes (Cell.params)
    I = check_positive_int(input_size, "input_size")
    H = check_positive_int(hidden_size, "hidden_size")
    if H < cell.min_hidden_size:
        raise ValueError(f"hidden_size must be an integer >= {cell.min_hidden_size} for the {cell.name} cell "
                         f"(Cell.min_hidden_size: it is degenerate below), got {H}")
    L = check_positive_int(num_layers, "num_layers")
    return cell, I, H, L, 2 if bidirectional else 1, bool(bias)


def _numbers(shape):
    return math.prod(shape)


def param_count(mode, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    """(numbers, arrays, numbers of the largest array) of a recurrent layer's parameters, in closed form:
    nothing is enumerated per layer, so a num_layers of 10**9 costs nothing to price."""
    cell, I, H, L, D, bias = _recurrent_sizes(mode, input_size, hidden_size, num_layers, bias, bidirectional)
    first, above = cell.param_shapes(I, H, bias), cell.param_shapes(D * H, H, bias)  # layer 0; layers 1..L-1
    numbers = D * (sum(map(_numbers, first.values())) + (L - 1) * sum(map(_numbers, above.values())))
    largest = max(map(_numbers, [*first.values(), *(above.values() if L > 1 else ())]), default=0)
    return numbers, L * D * len(first), largest


def param_shapes(mode, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False):
    """{torch's parameter name: shape} of a recurrent layer, computed from its configuration without
    allocating, in the order the layer creates them (layer, direction, then the cell's parameters in
    ``Cell.params`` order: W_ih, W_hh, b_ih, b_hh for torch's cells).

    ``mode``: a cell name of the registry (``functional.CELLS``); the sizes are checked as the layer's
    constructor checks them (ValueError/TypeError naming the argument).
    """
    cell, I, H, L, D, bias = _recurrent_sizes(mode, input_size, hidden_size, num_layers, bias, bidirectional)
    shapes = {}
    for layer in range(L):
        for direction in range(D):
            for kind, shape in cell.param_shapes(I if layer == 0 else H * D, H, bias).items():
                shapes[param_name(kind, layer, direction == 1)] = shape
    return shapes


def linear_shapes(in_features, out_features, bias=True):
    """{name: shape} of :class:`~rnn_scratch.layers.Linear`."""
    i = check_positive_int(in_features, "in_features")
    o = check_positive_int(out_features, "out_features")
    return {"weight": (o, i), **({"bias": (o,)} if bias else {})}


def embedding_shapes(num_embeddings, embedding_dim):
    """{name: shape} of :class:`~rnn_scratch.layers.Embedding`."""
    return {"weight": (check_positive_int(num_embeddings, "num_embeddings"),
                       check_positive_int(embedding_dim, "embedding_dim"))}


def shapes_count(shapes):
    """(numbers, arrays, numbers of the largest array) of a {name: shape} dict."""
    sizes = [math.prod(s) for s in shapes.values()]
    return sum(sizes), len(sizes), max(sizes, default=0)


def param_bytes(numbers, arrays, largest, dtype):
    """Bytes that creating ``arrays`` parameters of ``numbers`` numbers in all allocates (the triple of
    :func:`param_count` or :func:`shapes_count`): each parameter and its gradient, their Python objects,
    and the float64 draw of the largest one that initialisation makes before casting."""
    return 2 * numbers * as_float_dtype(dtype).itemsize + 8 * largest + arrays * PER_ARRAY_BYTES


# -- one forward + backward ----------------------------------------------------------------------
def bptt_bytes(cell, seq_len, batch, input_size, hidden_size, *, num_layers=1, num_directions=1, bias=True,
               dtype="float32", memory="full", checkpoint_every=None, masked=False, batch_first=False,
               dropout=False):
    """Bytes that one forward + backward of a recurrent layer allocates (the caller's x and dout not
    counted; everything else is: the input's copy, caches, the output, which the caller holds through
    the backward, gradients), by the model in the module docstring.

    ``cell``: a :class:`~rnn_scratch.functional.Cell` (its ``memory`` and ``num_states``); ``masked``: the
    call gives ``lengths``; ``dropout``: dropout masks between layers are drawn.
    """
    forward, backward = bptt_peaks(cell, seq_len, batch, input_size, hidden_size, num_layers=num_layers,
                                   num_directions=num_directions, bias=bias, memory=memory,
                                   checkpoint_every=checkpoint_every, masked=masked, batch_first=batch_first,
                                   dropout=dropout)
    segments = 0 if memory == "full" else -(-seq_len // min(seq_len, checkpoint_every or default_every(seq_len)))
    objects = (CALL_OBJECT_BYTES + num_layers * num_directions * (  # caches, weights' copies, gradients
        len(cell.param_shapes(1, 1, bias)) * PER_ARRAY_BYTES + LAYER_OBJECT_BYTES + segments * SEGMENT_OBJECT_BYTES))
    return int(SAFETY * (max(forward, backward) * as_float_dtype(dtype).itemsize + objects))


def bptt_peaks(cell, seq_len, batch, input_size, hidden_size, *, num_layers=1, num_directions=1, bias=True,
               memory="full", checkpoint_every=None, masked=False, batch_first=False, dropout=False):
    """(forward peak, backward peak) of :func:`bptt_bytes`, in numbers of the layer's dtype."""
    T, B, I, H, L, D = seq_len, batch, input_size, hidden_size, num_layers, num_directions
    f, b = cell.memory
    S, G = cell.num_states, cell.num_gates
    u = T * B * H
    ins = [I] + [D * H] * (L - 1)
    P = [sum(map(_numbers, cell.param_shapes(n, H, bias).values())) for n in ins]  # per direction
    weights = D * sum(P)
    alive = T * B * I + weights + 2 * L * D * S * B * H  # the input's copy, the weights' copy, h0 and h_n
    if memory == "full":
        for n in ins:
            alive += D * (f * u + S * B * H)
            if masked:  # the cache's masked copy of the layer's input
                alive += D * T * B * n
        alive += 2 * u * L if D == 2 else u
        transient = 0
        if masked:  # the last layer's masked outputs; a masked output's temporary, the layer below's output
            alive += D * u
            transient = 2 * u
        joined = 0  # the directions' outputs are views of their caches
    else:
        k = min(T, checkpoint_every or default_every(T))
        segments = -(-T // k)
        alive += L * D * u + L * D * S * B * H * segments
        transient = f * k * B * H + S * B * H  # inside a cell's forward: one segment's cache
        joined = D * u if D == 2 else 0  # both directions' outputs while they are concatenated
        if masked:
            transient += 3 * k * B * H + T * B * max(ins)
    if dropout and L > 1:  # the masks; full BPTT also keeps the masked inputs beside the outputs
        alive += (2 if memory == "full" else 1) * (L - 1) * T * B * D * H
    flipped = T * B * D * H if batch_first else 0  # batch-first: the output's and dout's time-major copies
    # row blocks running in threads each make their own weight copies and partial weight gradients
    weight_temporaries = WEIGHT_TEMPORARIES + 2 * (len(row_blocks(np, B, G * H)) - 1)
    transient += (G + 1) * B * H  # a step's scratch (h W_hh^T and the like)
    forward_peak = alive + flipped + max(transient + weight_temporaries * max(P), joined)
    backward_peak = 0
    grads = 0
    for layer in reversed(range(L)):
        n = ins[layer]
        incoming = flipped + (T * B * D * H if layer < L - 1 else 0)  # the gradient from the layer above
        # the cell's backward ends with dx (of its steps) and the weight gradients, with the weights' copies
        ends = (T if memory == "full" else k) * B * n + (1 + weight_temporaries) * P[layer] + (G + 3) * B * H
        if memory == "full":
            work = b * u + ends
        else:  # dx of all steps first; one segment recomputed; the segments' gradients summed
            work = T * B * n + (f + b) * k * B * H + S * B * H + 2 * P[layer] + ends
        if masked:
            work += u if memory == "full" else k * B * H
        for d in range(D):
            backward_peak = max(backward_peak, alive + grads + incoming + d * T * B * n + work)
            grads += P[layer]
        if D == 2:  # both directions' dx and their sum
            backward_peak = max(backward_peak, alive + grads + incoming + 3 * T * B * n)
    if batch_first:
        backward_peak = max(backward_peak, alive + grads + flipped + 2 * T * B * I)
    return forward_peak, backward_peak


# -- the guard ------------------------------------------------------------------------------------
def format_bytes(n):
    """``n`` bytes as 'about 1.5 GiB (1,610,612,736 bytes)'; absurd sizes stay short."""
    if n >= 10**24:
        return "more than 10^24 bytes"
    for unit, scale in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                        ("KiB", 2**10)):
        if n >= scale:
            return f"about {n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def available_bytes(backend="numpy"):
    """What can still be allocated on ``backend`` (see :func:`rnn_scratch.backend.available_bytes`)."""
    return be.available_bytes(be.resolve_backend(backend))


def check_available(need, what, backend="numpy", hint=""):
    """Raise a MemoryError naming ``what`` and the bytes when ``need`` bytes cannot be allocated on
    ``backend`` now; nothing when they can or when the machine does not say (or ``need`` is small)."""
    if need < GUARD_FLOOR:
        return
    free = available_bytes(backend)
    if free is not None and need > free:
        raise MemoryError(f"{what} needs {format_bytes(need)}, only {format_bytes(free)} is available"
                          f"{'; ' + hint if hint else ''}")
