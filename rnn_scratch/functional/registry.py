"""The cell registry: ``CELLS`` maps each cell's name to its :class:`~rnn_scratch.functional.cell.Cell` record.

Everything that needs "all cells" iterates it (layers, models, the command line, benchmarks, analysis, the
hypothesis strategies and the tests), so a cell is added by its module and one entry below, or from a user's
own module with :func:`rnn_scratch.functional.register_cell`. Names are lower case; the built-in cells are
torch's ``mode`` names (``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"``, ``"gru"``), each cell may add aliases
(``"rnn"`` for ``"rnn_tanh"``).
"""

from __future__ import annotations

import re

from . import gru, indrnn, layernorm_lstm, lstm, peephole_lstm, rnn
from .cell import Cell, FastPath, Kernel, Param, TorchModule, TorchStep

CELLS: dict = {}  # name -> Cell, in registration order
ALIASES: dict = {}  # alias -> name

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DIM = re.compile(r"^(?:I|H|G\*H|[1-9]\d*\*H)$")
MAX_BLOCKS = 64  # k of a 'k*H' axis
MAX_MEMORY = 1000  # (T, B, H) arrays per step a record may declare
MAX_MIN_HIDDEN = 64  # a cell meaningful only above this is not a recurrent cell we can check on a small case


def cell_names() -> tuple:
    """The canonical names, in registration order."""
    return tuple(CELLS)


def cell_choices() -> tuple:
    """What a command line or a model accepts: the names, then the aliases."""
    return tuple(CELLS) + tuple(ALIASES)


def canonical_cell_name(name: str) -> str:
    """The canonical name for a cell name or alias (any case); ValueError naming the choices otherwise."""
    if isinstance(name, str):
        name = ALIASES.get(name.lower(), name.lower())
        if name in CELLS:
            return name
    raise ValueError(f"cell must be one of {list(cell_choices())}, got {name!r}")


def get_cell(cell) -> Cell:
    """The :class:`Cell` for a cell name or alias (a :class:`Cell` record is returned as it is)."""
    if isinstance(cell, Cell):
        return cell
    return CELLS[canonical_cell_name(cell)]


def check_record(cell) -> None:
    """TypeError / ValueError naming the field of a :class:`Cell` record that is malformed (nothing is run)."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be a rnn_scratch.functional.Cell record, got {type(cell).__name__}")
    where = f"Cell {cell.name!r}" if isinstance(cell.name, str) else "Cell"
    if not isinstance(cell.name, str) or not _NAME.match(cell.name):
        raise ValueError(f"{where}: name must be a lower-case identifier, got {cell.name!r}")
    if (not isinstance(cell.aliases, tuple) or not all(isinstance(a, str) and _NAME.match(a) for a in cell.aliases)
            or len(set(cell.aliases)) != len(cell.aliases) or cell.name in cell.aliases):
        raise ValueError(f"{where}: aliases must be a tuple of distinct lower-case identifiers other than the name, "
                         f"got {cell.aliases!r}")
    if (not isinstance(cell.state_names, tuple) or not cell.state_names or cell.state_names[0] != "h"
            or not all(isinstance(s, str) and _NAME.match(s) for s in cell.state_names)
            or len(set(cell.state_names)) != len(cell.state_names)):
        raise ValueError(f"{where}: state_names must be a tuple of distinct identifiers starting with 'h' (the "
                         f"output), e.g. ('h',) or ('h', 'c'), got {cell.state_names!r}")
    if not isinstance(cell.gate_names, tuple) or not cell.gate_names or not all(
            isinstance(g, str) for g in cell.gate_names):
        raise ValueError(f"{where}: gate_names must be a non-empty tuple of names, got {cell.gate_names!r}")
    if not isinstance(cell.params, tuple) or not cell.params or not all(isinstance(p, Param) for p in cell.params):
        raise ValueError(f"{where}: params must be a non-empty tuple of Param records, got {cell.params!r}")
    names = [p.name for p in cell.params]
    for p in cell.params:
        if not isinstance(p.name, str) or not _NAME.match(p.name) or re.search(r"_l\d+(_reverse)?$", p.name):
            raise ValueError(f"{where}: parameter name {p.name!r} must be a lower-case identifier not ending in "
                             "_l<k> (layers add that suffix)")
        if not isinstance(p.shape, tuple) or not p.shape or not all(isinstance(d, str) and _DIM.match(d)
                                                                   for d in p.shape):
            raise ValueError(f"{where}: parameter {p.name!r} has shape {p.shape!r}; each axis must be 'I', 'H', "
                             "'G*H' or 'k*H'")
        if any(d[0].isdigit() and int(d.split("*")[0]) > MAX_BLOCKS for d in p.shape):
            raise ValueError(f"{where}: parameter {p.name!r} has shape {p.shape!r}: k in 'k*H' must be at most "
                             f"{MAX_BLOCKS}")
        if not isinstance(p.bias, bool):
            raise ValueError(f"{where}: parameter {p.name!r}: bias must be True or False, got {p.bias!r}")
        if not (callable(p.init) or p.init in ("uniform", "ones", "zeros")):
            raise ValueError(f"{where}: parameter {p.name!r}: init must be 'uniform', 'ones', 'zeros' or a callable, "
                             f"got {p.init!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: parameter names must be distinct, got {names}")
    for field in ("step_forward", "step_backward"):
        if not callable(getattr(cell, field)):
            raise TypeError(f"{where}: {field} must be callable, got {type(getattr(cell, field)).__name__}")
    if cell.fast is not None:
        if not isinstance(cell.fast, FastPath):
            raise TypeError(f"{where}: fast must be a FastPath or None, got {type(cell.fast).__name__}")
        if not isinstance(cell.fast.order, tuple) or not cell.fast.order:
            raise ValueError(f"{where}: fast.order must name the fast path's gate rows, got {cell.fast.order!r}")
        if cell.fast.kernel is not None and not isinstance(cell.fast.kernel, Kernel):
            raise TypeError(f"{where}: fast.kernel must be a Kernel or None, got {type(cell.fast.kernel).__name__}")
    if (not isinstance(cell.memory, tuple) or len(cell.memory) != 2
            or not all(isinstance(m, int) and not isinstance(m, bool) and 0 <= m <= MAX_MEMORY for m in cell.memory)):
        raise ValueError(f"{where}: memory must be a pair of integers in 0..{MAX_MEMORY} ((T, B, H) arrays in the "
                         f"forward cache, more in the backward), got {cell.memory!r}")
    if cell.reference is not None and not isinstance(cell.reference, (TorchModule, TorchStep)):
        raise TypeError(f"{where}: reference must be a TorchModule, a TorchStep or None, got "
                        f"{type(cell.reference).__name__}")
    for field in ("nonsmooth_at", "step_derivatives"):
        if getattr(cell, field) is not None and not callable(getattr(cell, field)):
            raise TypeError(f"{where}: {field} must be callable or None, got {type(getattr(cell, field)).__name__}")
    if not isinstance(cell.float32_in_distribution, bool):
        raise TypeError(f"{where}: float32_in_distribution must be True or False, got {cell.float32_in_distribution!r}")
    if (isinstance(cell.min_hidden_size, bool) or not isinstance(cell.min_hidden_size, int)
            or not 1 <= cell.min_hidden_size <= MAX_MIN_HIDDEN):
        raise ValueError(f"{where}: min_hidden_size must be an integer in 1..{MAX_MIN_HIDDEN}, got "
                         f"{cell.min_hidden_size!r}")


def add(cell: Cell, replace: bool = False) -> Cell:
    """Check a record (:func:`check_record`) and add it under its name and aliases; a name or alias already taken
    by another cell is a ValueError unless ``replace``. Returns the cell."""
    check_record(cell)
    taken = {cell.name, *cell.aliases} & (set(CELLS) | set(ALIASES))
    if cell.name in CELLS and replace:
        taken -= {cell.name, *CELLS[cell.name].aliases}
    if taken:
        raise ValueError(f"cell names {sorted(taken)} are taken (registered: {list(cell_choices())}); pass "
                         "replace=True to replace a cell of the same name")
    if cell.name in CELLS:
        remove(cell.name)
    CELLS[cell.name] = cell
    for alias in cell.aliases:
        ALIASES[alias] = cell.name
    return cell


def remove(name: str) -> Cell:
    """Take a cell (by name or alias) out of the registry; returns its record."""
    cell = CELLS.pop(canonical_cell_name(name))
    for alias in cell.aliases:
        ALIASES.pop(alias, None)
    return cell


for _cell in (rnn.RNN_TANH_CELL, rnn.RNN_RELU_CELL, lstm.LSTM_CELL, gru.GRU_CELL, indrnn.INDRNN_CELL,
              peephole_lstm.PEEPHOLE_LSTM_CELL, layernorm_lstm.LAYERNORM_LSTM_CELL):
    add(_cell)
BUILT_IN = tuple(CELLS)  # the package's own cells: the torch-shaped classes and the tests rely on them
