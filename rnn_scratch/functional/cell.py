"""What a cell is: the :class:`Cell` record every part of the project asks, and its parts.

A cell module (``rnn.py``, ``lstm.py``, ...) holds one cell's equations and declares its record:

- the readable step pair, ``step_forward(x_t, state, params) -> (state_t, step cache)`` and
  ``step_backward(dstate_t, step cache) -> (dx_t, dstate_{t-1}, dparams)``: the specification;
- its parameters (:class:`Param`: names, symbolic shapes, which axes index hidden units, initialisation);
- its per-step fast-path math (a :class:`FastPath`, run by the time-loop driver, :mod:`.driver`), with its
  CUDA kernel in a file of its own (:class:`Kernel`), or None: the step loop then runs whole sequences;
- the reference it is tested against (:class:`TorchModule`: a ``torch.nn`` class computing the same thing;
  :class:`TorchStep`: the step written with torch operations, differentiated by autograd).

:func:`rnn_scratch.functional.register_cell` checks a record and adds it to the registry
(``functional.CELLS``), which layers, models, the command line, benchmarks, analysis and tests iterate.

Sizes: T steps, B batch rows, I input features, H hidden units, G gates (rows of W_ih per hidden unit).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import NamedTuple


class Param(NamedTuple):
    """One parameter of a cell (per layer and direction), e.g. ``Param("weight_hh", ("G*H", "H"))``.

    ``shape``: per axis ``"I"`` (the layer's input size: input_size in layer 0, num_directions * H above),
    ``"H"`` (H hidden units), ``"G*H"`` (G gate blocks of H hidden units, G the cell's gate count) or ``"k*H"``
    (k blocks of H), so generic code finds, without allocating, each parameter's shape
    (:meth:`Cell.param_shapes`) and which axes index hidden units in how many blocks (:meth:`hidden_blocks`):
    relabelling hidden unit j as pi(j) permutes every such axis, block by block.
    ``bias``: dropped when a layer is built with ``bias=False``. ``init``: ``"uniform"`` (U(-1/sqrt(H),
    1/sqrt(H)), torch's), ``"ones"``, ``"zeros"``, or a callable ``init(rng, shape, input_size, hidden_size)``
    returning the array.
    """

    name: str
    shape: tuple
    bias: bool = False
    init: object = "uniform"

    def dims(self, input_size: int, hidden_size: int, num_gates: int) -> tuple:
        """The shape for these sizes."""
        return tuple(input_size if d == "I" else hidden_size * blocks
                     for d, blocks in zip(self.shape, self.hidden_blocks(num_gates)))

    def hidden_blocks(self, num_gates: int) -> tuple:
        """Per axis: how many blocks of H hidden units it holds (1 for ``"H"``), or None (the input axis)."""
        out = []
        for d in self.shape:
            if d == "I":
                out.append(None)
            elif d == "H":
                out.append(1)
            elif d == "G*H":
                out.append(num_gates)
            else:
                out.append(int(d.split("*")[0]))
        return tuple(out)

    def initial(self, rng, input_size: int, hidden_size: int, num_gates: int):
        """A freshly initialised host array (NumPy, float64)."""
        import numpy as np

        shape = self.dims(input_size, hidden_size, num_gates)
        if callable(self.init):
            value = np.asarray(self.init(rng, shape, input_size, hidden_size), dtype=np.float64)
            if value.shape != shape or not np.isfinite(value).all():
                what = f"shape {value.shape}" if value.shape != shape else "non-finite values"
                raise ValueError(f"parameter {self.name!r}: its init returned {what}, expected finite values of "
                                 f"shape {shape} (declared {self.shape})")
            return value
        if self.init == "uniform":
            bound = 1.0 / math.sqrt(hidden_size)
            return rng.uniform(-bound, bound, shape)
        return (np.ones if self.init == "ones" else np.zeros)(shape)


TORCH_PARAMS = (Param("weight_ih", ("G*H", "I")), Param("weight_hh", ("G*H", "H")),
                Param("bias_ih", ("G*H",), bias=True), Param("bias_hh", ("G*H",), bias=True))  # torch's RNN/LSTM/GRU


def param_name(kind: str, layer: int, reverse: bool = False) -> str:
    """torch's parameter name, e.g. ``param_name("weight_hh", 1, True) == "weight_hh_l1_reverse"``."""
    return f"{kind}_l{layer}{'_reverse' if reverse else ''}"


@dataclass(frozen=True)
class TorchModule:
    """A ``torch.nn`` class that computes the same cell: ``getattr(torch.nn, name)(I, H, **kwargs, ...)``, with
    our parameter names. Tests and benchmarks compare against it; a layer of ours for this cell is the class of
    the same name in :mod:`rnn_scratch.layers` when there is one."""

    name: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TorchStep:
    """The step written with torch operations: ``step(x_t, state, params) -> state_t`` (torch tensors; ``params``
    by :class:`Param` name, None for absent biases). The tests loop it over time, layers and directions and let
    autograd differentiate it: a reference that shares no code with the hand-written backward."""

    step: Callable


@cache
def read_source(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


@dataclass(frozen=True)
class Kernel:
    """A cell's fused CUDA step kernels: the file holding their source and the two kernels' names.

    The parameter order of both kernels is the driver's convention (:mod:`rnn_scratch.functional.driver`), so
    the driver launches any cell's kernels without knowing the cell.
    """

    path: str
    forward: str
    backward: str

    @property
    def source(self) -> str:
        """The CUDA C source (``real`` stands for the element type)."""
        return read_source(self.path)


def kernel_file(module_file: str, name: str) -> str:
    """The path of ``kernels/<name>`` beside a cell module (``module_file``: its ``__file__``)."""
    return os.path.join(os.path.dirname(os.path.abspath(module_file)), "kernels", name)


class Prepared(NamedTuple):
    """A direction's weights as the fast path uses them (built by :meth:`FastPath.forward_weights` or
    :meth:`FastPath.backward_weights`).

    w_ih (K*H, I): the input projection (rows in the fast path's order; K = len(FastPath.order));
    w_hh (G*H, H), or (H,) for a recurrent weight that acts elementwise (a vector);
    bias (K*H,) or None: added in the input projection (then the driver also sums dG_x, dG_h into the role
    gradients ``bias_ih``, ``bias_hh``); consts: the cell's extra arrays, in its kernel's order; flags: the
    kernel's int flags; extra: anything else the cell's own methods use.
    """

    w_ih: object
    w_hh: object
    bias: object = None
    consts: tuple = ()
    flags: tuple = ()
    extra: object = None


class FastPath:
    """A cell's per-step fast-path math, run by the time-loop driver (:mod:`rnn_scratch.functional.driver`).

    The driver owns everything cells share (setup, batch-row blocks on threads, the input projection of all
    steps as one GEMM, the recurrent product per step and its orientation, padding, the fused CUDA launches
    and graph capture, the weight-gradient GEMMs after the loop). A cell supplies:

    - ``order``: its gate names in the fast path's row order; ``buffers``: {name: width in units of H} of the
      per-step (T, B, width*H) arrays its forward keeps for the backward; ``backward_buffers``: likewise for the
      backward (filled by :meth:`factors`, a run of steps at a time, when the cell has it); ``scratch``:
      {name: width} of (b, width*H) work arrays the backward step may overwrite (one per block of rows);
    - ``separate_recurrent_grad``: the gradient reaching the recurrent product, dG_h, differs from the one
      reaching the input projection, dG_x (GRU); ``carries_h``: dL/dh_{t-1} has a direct part besides
      dG_h W_hh, left in ``a.dh`` by :meth:`backward_step` (GRU's z * dh); else the driver overwrites ``a.dh``;
    - :meth:`forward_weights` / :meth:`backward_weights`: the :class:`Prepared` weights of a direction;
    - the steps, in place on one block of b batch rows, through ``a``, the block's arrays by name (views): ``gates``
      (T, b, K*H: the input projection on entry, what the backward needs on exit); per state part s (``h``,
      ``c``) ``s_prev`` and ``s_new`` (T, b, H): the state before and after each step, in time order; each
      forward buffer by its name; in the backward also ``dgates`` (T, b, K*H), ``dgates_h`` (T, b, G*H; the same
      array unless ``separate_recurrent_grad``), the backward buffers, the scratch, and ``ds`` (b, H) per state
      part: the
      gradient reaching the state (dL/dh_t including the output's), to be left as dL/ds_{t-1} (for h: its part
      besides dG_h W_hh);
    - :meth:`forward_step` (a, t, a_hh: the recurrent product (b, G*H)); :meth:`backward_step` (a, t);
      optionally :meth:`project` (before the loop, all rows) and ``factors(xp, p, a, steps)`` (a slice of steps);
    - :meth:`input_side` (optional): dG_x for all steps after the loop; :meth:`param_grads`: the gradients by
      :class:`Param` name from the role gradients ``weight_ih``, ``weight_hh`` (and ``bias_ih``, ``bias_hh``)
      the driver computed in the fast order; ``run`` holds the arrays of all rows and ``run.cache``.
    """

    order: tuple = ()
    buffers: dict = {}
    backward_buffers: dict = {}
    scratch: dict = {}
    separate_recurrent_grad = False
    carries_h = False
    kernel: Kernel | None = None
    factors = None  # or a method factors(xp, p, a, steps) filling the backward buffers of a run of steps

    def forward_weights(self, xp, params, H) -> Prepared:
        raise NotImplementedError

    def backward_weights(self, xp, params, H) -> Prepared:
        return self.forward_weights(xp, params, H)

    def project(self, xp, p, a):
        """Optional: work on the input projection of all steps (``a.gates``), in place."""

    def forward_step(self, xp, p, a, t, a_hh):
        raise NotImplementedError

    def backward_step(self, xp, p, a, t):
        raise NotImplementedError

    def input_side(self, xp, p, run):
        """dG_x (T, B, K*H), what reaches the input projection, from the loop's ``run.dgates``."""
        return run.dgates

    def param_grads(self, xp, p, grads, run) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class Cell:
    """One cell type: everything the rest of the project asks about it.

    ``name`` (lower case; torch's mode name where torch has the cell) and ``aliases``; ``state_names``
    (``("h",)`` or ``("h", "c")``: states are tuples in this order, h first); ``gate_names`` in the weights'
    row order; ``params`` (:class:`Param`, in initialisation order); the readable step pair; ``fast``: its
    :class:`FastPath` or None; ``memory``: the (T, B, H) arrays the fast forward's cache holds and the
    fast backward adds (what full BPTT costs per step and hidden unit); ``reference``: a :class:`TorchModule`
    or :class:`TorchStep` (None: nothing to test against); ``nonsmooth_at``: for a cell with a kink
    (relu), ``f(x, prev_state, params)`` giving the arguments of its non-differentiable function, whose
    distance from 0 finite differences must respect; ``step_derivatives(step cache) -> StepDerivatives``: the
    step's Jacobians factored per hidden unit, for the forward-mode gradient algorithms (:mod:`rnn_scratch.online`);
    None when the cell does not provide them; ``float32_in_distribution``: True for a cell whose float32
    error is set by the data's conditioning (a norm of a row with little spread amplifies rounding by up to
    1/sqrt(eps)), so that one draw's torch float32 error is a noisy yardstick: its float32 parity with torch is
    judged over a fixed set of draws rather than draw by draw (tests/test_parity.py); ``min_hidden_size``: the
    smallest hidden size the cell is meaningful at (the layers refuse less; the strategies draw no less).
    """

    name: str
    state_names: tuple
    gate_names: tuple
    params: tuple
    step_forward: Callable
    step_backward: Callable
    fast: FastPath | None = None
    memory: tuple = (0, 0)
    reference: object = None
    aliases: tuple = ()
    nonsmooth_at: Callable | None = None
    step_derivatives: Callable | None = None
    float32_in_distribution: bool = False
    min_hidden_size: int = 1

    @property
    def num_states(self) -> int:
        return len(self.state_names)

    @property
    def num_gates(self) -> int:
        return len(self.gate_names)

    @property
    def kernel(self) -> Kernel | None:
        return None if self.fast is None else self.fast.kernel

    @property
    def param_names(self) -> tuple:
        return tuple(p.name for p in self.params)

    def param_shapes(self, input_size: int, hidden_size: int, bias: bool = True) -> dict:
        """{param name: shape} for one layer and direction (biases left out when ``bias`` is False)."""
        return {p.name: p.dims(input_size, hidden_size, self.num_gates) for p in self.params if bias or not p.bias}
