"""Run torch.nn.RNN/LSTM/GRU on the same weights and inputs as an rnn_scratch layer."""

import numpy as np
import torch

from rnn_scratch.backend import to_numpy

TORCH_CLS = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def torch_reference(cfg, state_dict, inp, dout, dfinals, dtype, device="cpu"):
    """Forward with torch, then backward of L = sum(dout * out) + sum(dfinals * finals).

    Returns dict of host arrays: out, finals (tuple), dx, dstate0 (tuple), grads (name -> array).
    """
    tdtype = {"float32": torch.float32, "float64": torch.float64}[str(np.dtype(dtype))]
    module = TORCH_CLS[cfg.cell](cfg.input_size, cfg.hidden_size, **cfg.kwargs()).to(device=device, dtype=tdtype)
    module.load_state_dict({k: torch.as_tensor(to_numpy(v)) for k, v in state_dict.items()})
    module.train(False)

    def t(a):
        return torch.tensor(to_numpy(a), dtype=tdtype, device=device, requires_grad=True)

    x = t(inp.x)
    B, T = inp.batch, inp.seq_len
    shape = cfg.state_shape(B)
    if inp.states is None:
        states = [torch.zeros(shape, dtype=tdtype, device=device, requires_grad=True) for _ in range(cfg.num_states)]
    else:
        states = [t(s) for s in inp.states]
    hx = tuple(states) if cfg.is_lstm else states[0]  # torch's form
    if inp.lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.as_tensor(np.asarray(inp.lengths)), batch_first=cfg.batch_first, enforce_sorted=False)
        out, finals = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=cfg.batch_first, total_length=T)
    else:
        out, finals = module(x, hx)
    finals = finals if cfg.is_lstm else (finals,)  # torch's form -> a tuple
    loss = (out * torch.as_tensor(to_numpy(dout), device=device)).sum()
    for f, d in zip(finals, dfinals):
        loss = loss + (f * torch.as_tensor(to_numpy(d), device=device)).sum()
    loss.backward()
    return {
        "out": out.detach().cpu().numpy(),
        "finals": tuple(f.detach().cpu().numpy() for f in finals),
        "dx": x.grad.cpu().numpy(),
        "dstate0": tuple(s.grad.cpu().numpy() for s in states),
        "grads": {k: p.grad.cpu().numpy() for k, p in module.named_parameters()},
    }
