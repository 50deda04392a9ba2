"""Run a cell's torch reference on the same weights and inputs as an rnn_scratch layer (needs torch).

The reference is the cell record's: a ``torch.nn`` class (``torch.nn.RNN/LSTM/GRU`` for torch's cells,
:class:`~rnn_scratch.functional.TorchModule`), or the cell's step written with torch operations
(:class:`~rnn_scratch.functional.TorchStep`), looped over time, layers and directions here with torch's packed-
sequence semantics for lengths, and differentiated by autograd.

Used by the parity tests and the accuracy study: :func:`torch_reference` gives torch's outputs, final
states and every gradient of ``L = sum(dout * out) + sum(dfinal * final)``, in any dtype, so a float32 run
can be judged against a float64 run of the same float32-rounded numbers.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..functional import TorchStep, get_cell, param_name


def torch_module(cfg, dtype="float64", device="cpu"):
    """The torch module for a :class:`~rnn_scratch.testing.LayerConfig`: the cell's ``torch.nn`` class, or a
    module looping its torch step (:class:`StepLoop`)."""
    import torch

    from ..benchmark import torch_layer

    tdtype = {"float32": torch.float32, "float64": torch.float64}[str(np.dtype(dtype))]
    cell = get_cell(cfg.cell)
    if isinstance(cell.reference, TorchStep):
        module = StepLoop(cell, cfg.input_size, cfg.hidden_size, **cfg.kwargs())
    else:
        module = torch_layer(cfg.cell, cfg.input_size, cfg.hidden_size, **cfg.kwargs())
    return module.to(device=device, dtype=tdtype)


def StepLoop(cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
             bidirectional=False):
    """A ``torch.nn.Module`` shaped like torch's recurrent layers (parameters named as ours, ``out, h_n =
    module(x, hx)``, hx and h_n in torch's form, packed sequences for lengths) that loops the cell's
    :class:`~rnn_scratch.functional.TorchStep` over time, layers and directions; autograd differentiates it."""
    import torch

    class _StepLoop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.batch_first, D = batch_first, 2 if bidirectional else 1
            self.layers, self.directions, self.hidden_size = num_layers, D, hidden_size
            for layer in range(num_layers):
                in_size = input_size if layer == 0 else hidden_size * D
                for d in range(D):
                    for name, shape in cell.param_shapes(in_size, hidden_size, bias).items():
                        self.register_parameter(param_name(name, layer, d == 1),
                                                torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)))

        def forward(self, x, hx):
            packed = isinstance(x, torch.nn.utils.rnn.PackedSequence)
            if packed:
                x, lengths = torch.nn.utils.rnn.pad_packed_sequence(x, batch_first=self.batch_first)
            states = hx if isinstance(hx, tuple) else (hx,)
            unbatched = x.dim() == 2  # torch's unbatched input: x (T, I), hx (L*D, H)
            if unbatched:
                x, states = x.unsqueeze(1), tuple(s.unsqueeze(1) for s in states)
            elif self.batch_first:
                x = x.transpose(0, 1)
            T = x.shape[0]
            mask = (torch.arange(T)[:, None] < lengths[None, :])[:, :, None].to(x.device) if packed else None
            finals = [[None] * (self.layers * self.directions) for _ in states]
            layer_in = x
            for layer in range(self.layers):
                outs = []
                for d in range(self.directions):
                    params = {name: getattr(self, param_name(name, layer, d == 1), None) for name in cell.param_names}
                    state = tuple(s[layer * self.directions + d] for s in states)
                    out = [None] * T
                    for t in (range(T - 1, -1, -1) if d else range(T)):
                        new = cell.reference.step(layer_in[t], state, params)
                        if mask is None:
                            state, out[t] = new, new[0]
                        else:  # padded steps carry the state through and output 0
                            state = tuple(torch.where(mask[t], n, o) for n, o in zip(new, state))
                            out[t] = torch.where(mask[t], new[0], torch.zeros_like(new[0]))
                    outs.append(torch.stack(out))
                    for k, f in enumerate(state):
                        finals[k][layer * self.directions + d] = f
                layer_in = torch.cat(outs, dim=2)
            out = layer_in.transpose(0, 1) if self.batch_first and not unbatched else layer_in
            if packed:
                out = torch.nn.utils.rnn.pack_padded_sequence(out, lengths, batch_first=self.batch_first,
                                                              enforce_sorted=False)
            finals = tuple(torch.stack(f) for f in finals)
            if unbatched:
                out, finals = out[:, 0], tuple(f[:, 0] for f in finals)
            return out, finals if len(finals) > 1 else finals[0]

    return _StepLoop()


def torch_reference(cfg, state_dict, inp, dout, dfinals, dtype, device="cpu"):
    """Forward with torch, then backward of L = sum(dout * out) + sum(dfinals * finals).

    ``inp``: a :class:`~rnn_scratch.testing.LayerInputs`; ``dfinals``: a tuple, one per state part. All
    arrays are cast to ``dtype``. Returns a dict of host arrays: out, finals (tuple), dx, dstate0 (tuple),
    grads (name -> array).
    """
    import torch

    module = torch_module(cfg, dtype, device)
    tdtype = next(module.parameters()).dtype
    module.load_state_dict({k: torch.as_tensor(to_numpy(v), dtype=tdtype) for k, v in state_dict.items()})
    module.train(False)

    def t(a):
        return torch.tensor(to_numpy(a), dtype=tdtype, device=device, requires_grad=True)

    x = t(inp.x)
    shape = cfg.state_shape(inp.batch)
    if inp.states is None:
        states = [torch.zeros(shape, dtype=tdtype, device=device, requires_grad=True) for _ in range(cfg.num_states)]
    else:
        states = [t(s) for s in inp.states]
    hx = tuple(states) if cfg.num_states > 1 else states[0]  # torch's form
    if inp.lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(np.asarray(inp.lengths)), batch_first=cfg.batch_first, enforce_sorted=False)
        out, finals = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=cfg.batch_first, total_length=inp.seq_len)
    else:
        out, finals = module(x, hx)
    finals = finals if cfg.num_states > 1 else (finals,)  # torch's form -> a tuple
    loss = (out * torch.as_tensor(to_numpy(dout), dtype=tdtype, device=device)).sum()
    for f, d in zip(finals, dfinals):
        loss = loss + (f * torch.as_tensor(to_numpy(d), dtype=tdtype, device=device)).sum()
    loss.backward()
    return {
        "out": out.detach().cpu().numpy(),
        "finals": tuple(f.detach().cpu().numpy() for f in finals),
        "dx": x.grad.cpu().numpy(),
        "dstate0": tuple(s.grad.cpu().numpy() for s in states),
        "grads": {k: p.grad.cpu().numpy() for k, p in module.named_parameters()},
    }


def absolute_reference(cfg, state_dict, inp, dout, dfinals, device="cpu"):
    """:func:`torch_reference` in float64 on the absolute values of every weight, input and state: the size of
    the terms each output is summed from, with no cancellation (a float32 rounding scale)."""
    from .strategies import LayerInputs

    flipped = LayerInputs(x=np.abs(inp.x), states=None if inp.states is None else tuple(np.abs(s) for s in inp.states),
                          lengths=inp.lengths, seq_len=inp.seq_len, batch=inp.batch)
    return torch_reference(cfg, {k: np.abs(to_numpy(v)) for k, v in state_dict.items()}, flipped, dout, dfinals,
                           "float64", device=device)
