"""Run ``torch.nn.RNN/LSTM/GRU`` on the same weights and inputs as an rnn_scratch layer (needs torch).

Used by the parity tests and the accuracy study: :func:`torch_reference` gives torch's outputs, final
states and every gradient of ``L = sum(dout * out) + sum(dfinal * final)``, in any dtype, so a float32 run
can be judged against a float64 run of the same float32-rounded numbers.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy


def torch_module(cfg, dtype="float64", device="cpu"):
    """The torch module for a :class:`~rnn_scratch.testing.LayerConfig`."""
    import torch

    from ..benchmark import torch_layer

    tdtype = {"float32": torch.float32, "float64": torch.float64}[str(np.dtype(dtype))]
    kw = {k: v for k, v in cfg.kwargs().items() if k != "nonlinearity"}
    return torch_layer(cfg.cell, cfg.input_size, cfg.hidden_size, **kw).to(device=device, dtype=tdtype)


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
    hx = tuple(states) if cfg.num_states == 2 else states[0]  # torch's form
    if inp.lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(np.asarray(inp.lengths)), batch_first=cfg.batch_first, enforce_sorted=False)
        out, finals = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=cfg.batch_first, total_length=inp.seq_len)
    else:
        out, finals = module(x, hx)
    finals = finals if cfg.num_states == 2 else (finals,)  # torch's form -> a tuple
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
