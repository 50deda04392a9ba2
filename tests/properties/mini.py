"""A home-made recurrent layer in plain NumPy (tanh RNN, LSTM or GRU; one layer; one or two directions; lengths),
written to the custom adapter's protocol with a gradient function (JAX-style), and able to make one planted
mistake (``bug=``): the mutants of the property suite (:mod:`tests.properties.mutants`).

Conventions are torch's (names ``weight_ih_l0[_reverse]``, gate-blocked rows: LSTM i f g o, GRU r z n), so the
custom adapter's ``unit_layout = "torch"`` holds. With ``bug=None`` it is a correct layer and passes every property.
"""

from __future__ import annotations

import numpy as np

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
BUGS = {
    "rnn": ("tanh_grad_1_minus_h", "no_h_carry", "dWhh_uses_h_t", "bias_twice", "input_skips_weights",
            "recurrence_reads_wih", "batch_coupled", "padding_grad_leak", "output_halves_swapped",
            "reverse_uses_forward_whh"),
    "lstm": ("no_sigmoid_grad_f", "no_tanh_grad_c", "no_c_carry", "dprev_c_drops_dh_path", "gate_order_in_backward",
             "db_mean", "c0_ignored", "padded_outputs_leak", "reverse_not_reversed", "float16_gates",
             "h0_rows_reversed"),
    "gru": ("whh_reshape", "padding_state_leak", "reverse_starts_at_T", "clip_incoming", "stale_gradients",
            "final_state_off_by_one"),
}


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


class Mini:
    """``Mini(cell, input_size, hidden_size, bidirectional=False, bug=None)``: the custom protocol's forward,
    gradients, get_parameters and set_parameters; it computes in the dtype of the parameters it is given."""

    num_layers = 1
    batch_first = False
    unit_layout = "torch"

    def __init__(self, cell, input_size, hidden_size, bidirectional=False, bug=None, seed=0):
        if bug is not None and bug not in BUGS[cell]:
            raise ValueError(f"unknown bug {bug!r} for {cell}")
        self.cell, self.bug, self.hidden_size = cell, bug, hidden_size
        self.bidirectional = bidirectional
        self.state_names = ("h", "c") if cell == "lstm" else ("h",)
        self.memoryless = cell == "rnn"
        G, H = GATES[cell], hidden_size
        rng = np.random.default_rng(seed)
        self.params = {}
        for s in ("", "_reverse")[:2 if bidirectional else 1]:
            for name, shape in (("weight_ih", (G * H, input_size)), ("weight_hh", (G * H, H)),
                                ("bias_ih", (G * H,)), ("bias_hh", (G * H,))):
                self.params[f"{name}_l0{s}"] = rng.uniform(-0.5, 0.5, shape)
        self._stale = None

    def get_parameters(self):
        return {k: v.copy() for k, v in self.params.items()}

    def set_parameters(self, params):
        self.params = {k: np.array(v) for k, v in params.items()}

    # -- one step ------------------------------------------------------------------------------------
    def _step(self, x, state, p):
        """(new state tuple, cache) for one step of every row."""
        bug, H = self.bug, self.hidden_size
        h = state[0]
        if bug == "batch_coupled":  # the state is shared across rows
            h = np.broadcast_to(h.mean(axis=0, keepdims=True), h.shape)
        W_hh = p["weight_ih"] if bug == "recurrence_reads_wih" else p["weight_hh"]
        gi = x @ p["weight_ih"].T + p["bias_ih"] * (2 if bug == "bias_twice" else 1)
        if bug == "input_skips_weights":
            gi = gi + np.pad(x, ((0, 0), (0, max(0, gi.shape[1] - x.shape[1]))))[:, :gi.shape[1]]
        gh = (h @ W_hh.reshape(H, -1) if bug == "whh_reshape" else h @ W_hh.T) + p["bias_hh"]
        if bug == "float16_gates" and x.dtype == np.float32:
            gi, gh = gi.astype(np.float16).astype(np.float32), gh.astype(np.float16).astype(np.float32)
        if self.cell == "rnn":
            new = np.tanh(gi + gh)
            return (new,), (x, h, new)
        if self.cell == "lstm":
            a = gi + gh
            i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
            c = f * state[1] + i * g
            new = o * np.tanh(c)
            return (new, c), (x, h, state[1], i, f, g, o, c)
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        new = (1 - z) * n + z * h
        return (new,), (x, h, r, z, n, gh[:, 2 * H:])

    def _step_backward(self, dstate, cache, p):
        """(dx, dstate_prev tuple, {kind: gradient}) of one step."""
        bug, H = self.bug, self.hidden_size
        W_hh = p["weight_ih"] if bug == "recurrence_reads_wih" else p["weight_hh"]
        if self.cell == "rnn":
            x, h, new = cache
            da = dstate[0] * (1 - (new if bug == "tanh_grad_1_minus_h" else new**2))
            dgi = dgh = da
            dh = da @ W_hh
            dprev_c = None
            dW_hh = da.T @ (new if bug == "dWhh_uses_h_t" else h)
        elif self.cell == "lstm":
            x, h, c_prev, i, f, g, o, c = cache
            dh_, dc_in = dstate
            tc = np.tanh(c)
            dc = dc_in + dh_ * o * (1.0 if bug == "no_tanh_grad_c" else 1 - tc**2)
            blocks = [dc * g * i * (1 - i), dc * c_prev * (1.0 if bug == "no_sigmoid_grad_f" else f * (1 - f)),
                      dc * i * (1 - g**2), dh_ * tc * o * (1 - o)]
            if bug == "gate_order_in_backward":  # i f o g: the forward reads i f g o
                blocks = [blocks[0], blocks[1], blocks[3], blocks[2]]
            da = np.concatenate(blocks, axis=1)
            dgi = dgh = da
            dh = da @ W_hh
            dprev_c = f * (dc_in if bug == "dprev_c_drops_dh_path" else dc)
            dW_hh = da.T @ h
        else:
            x, h, r, z, n, ghn = cache
            dnew = dstate[0]
            dn = dnew * (1 - z) * (1 - n**2)
            dz = dnew * (h - n) * z * (1 - z)
            dr = dn * ghn * r * (1 - r)
            dgi = np.concatenate([dr, dz, dn], axis=1)
            dgh = np.concatenate([dr, dz, dn * r], axis=1)
            if bug == "whh_reshape":
                dh = dnew * z + dgh @ W_hh.reshape(H, -1).T
                dW_hh = (h.T @ dgh).reshape(W_hh.shape)
            else:
                dh = dnew * z + dgh @ W_hh
                dW_hh = dgh.T @ h
            dprev_c = None
        if bug == "input_skips_weights":
            dx_skip = np.pad(dgi, ((0, 0), (0, max(0, x.shape[1] - dgi.shape[1]))))[:, :x.shape[1]]
        else:
            dx_skip = 0
        if bug == "batch_coupled":
            dh = np.broadcast_to(dh.mean(axis=0, keepdims=True), dh.shape).copy()
        grads = {"weight_ih": dgi.T @ x, "weight_hh": dW_hh, "bias_ih": dgi.sum(0), "bias_hh": dgh.sum(0)}
        if bug == "recurrence_reads_wih":
            grads["weight_ih"] = grads["weight_ih"] + dW_hh
            grads["weight_hh"] = np.zeros_like(dW_hh)
        if bug == "db_mean":
            grads["bias_ih"], grads["bias_hh"] = dgi.mean(0), dgh.mean(0)
        dprev = (dh,) if dprev_c is None else (dh, dprev_c)
        return dgi @ p["weight_ih"] + dx_skip, dprev, grads

    # -- a whole direction ---------------------------------------------------------------------------
    def _weights(self, d):
        s = "_reverse" if d else ""
        if self.bug == "reverse_uses_forward_whh" and d:
            s_hh = ""
        else:
            s_hh = s
        return {"weight_ih": self.params[f"weight_ih_l0{s}"], "weight_hh": self.params[f"weight_hh_l0{s_hh}"],
                "bias_ih": self.params[f"bias_ih_l0{s}"], "bias_hh": self.params[f"bias_hh_l0{s}"]}

    def _order(self, d, T):
        return range(T - 1, -1, -1) if d and self.bug != "reverse_not_reversed" else range(T)

    def _mask(self, d, mask):
        if d and self.bug == "reverse_starts_at_T":
            return np.ones_like(mask)
        return mask

    def _direction(self, d, x, state, mask):
        T, B, _ = x.shape
        p, mask = self._weights(d), self._mask(d, mask)
        out = np.zeros((T, B, self.hidden_size), x.dtype)
        caches = [None] * T
        before = state
        for t in self._order(d, T):
            new, caches[t] = self._step(x[t], state, p)
            m = mask[t]
            before = state
            if self.bug == "padding_state_leak":
                state = new
            else:
                state = tuple(np.where(m, a, b) for a, b in zip(new, state))
            out[t] = new[0] if self.bug == "padded_outputs_leak" else np.where(m, new[0], 0)
        if self.bug == "final_state_off_by_one" and d == 0:
            state = before
        return out, state, caches

    def _direction_backward(self, d, dout, dstate, caches, mask):
        T = len(caches)
        p, mask = self._weights(d), self._mask(d, mask)
        dx = np.zeros((T, *caches[0][0].shape), dout.dtype)
        grads = {k: np.zeros_like(v) for k, v in p.items()}
        carried = dstate
        for t in reversed(self._order(d, T)):
            m = np.ones_like(mask[t]) if self.bug == "padding_grad_leak" else mask[t]
            dh = carried[0] + dout[t] * m
            d_in = tuple(g * m for g in (dh, *carried[1:]))
            dx[t], dprev, g = self._step_backward(d_in, caches[t], p)
            for k, v in g.items():
                grads[k] += v
            carried = tuple(a + np.where(m, 0, b) for a, b in zip(dprev, (dh, *carried[1:])))
            if self.bug == "no_h_carry":
                first, carried = carried, (np.zeros_like(dh), *carried[1:])
            if self.bug == "no_c_carry":
                first, carried = carried, (carried[0], np.zeros_like(dh))
        if self.bug in ("no_h_carry", "no_c_carry"):
            carried = first
        return dx, carried, grads

    # -- the protocol --------------------------------------------------------------------------------
    def _prepare(self, x, state, lengths):
        T, B, _ = x.shape
        D, H = 2 if self.bidirectional else 1, self.hidden_size
        if state is None:
            state = tuple(np.zeros((D, B, H), x.dtype) for _ in self.state_names)
        state = tuple(state)
        if self.bug == "h0_rows_reversed":
            state = tuple(s[:, ::-1] for s in state)
        if self.bug == "c0_ignored":
            state = (state[0], np.zeros_like(state[1]))
        n = np.full(B, T) if lengths is None else np.asarray(lengths)
        mask = (np.arange(T)[:, None] < n[None, :])[:, :, None]
        return state, mask

    def forward(self, x, state, lengths):
        state, mask = self._prepare(x, state, lengths)
        outs, finals = [], []
        for d in range(2 if self.bidirectional else 1):
            out, final, _ = self._direction(d, x, tuple(s[d] for s in state), mask)
            outs.append(out)
            finals.append(final)
        if self.bug == "output_halves_swapped":
            outs = outs[::-1]
        return np.concatenate(outs, axis=2), tuple(np.stack(parts) for parts in zip(*finals))

    def gradients(self, x, state, lengths, dout, dstate):
        """(dx, dstate0, grads) of L = sum(dout * out) + sum(dstate * state_n) at (x, state, lengths)."""
        state_, mask = self._prepare(x, state, lengths)
        H, D = self.hidden_size, 2 if self.bidirectional else 1
        if self.bug == "clip_incoming":
            dout = np.clip(dout, -0.5, 0.5)
        halves = [dout[..., k * H:(k + 1) * H] for k in range(D)]
        if self.bug == "output_halves_swapped":
            halves = halves[::-1]
        dx = 0
        grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        d0 = []
        for d in range(D):
            _, _, caches = self._direction(d, x, tuple(s[d] for s in state_), mask)
            dxd, dfirst, g = self._direction_backward(d, halves[d], tuple(s[d] for s in dstate), caches, mask)
            dx = dx + dxd
            d0.append(dfirst)
            w = self._weights(d)
            for kind, value in g.items():  # the gradient goes to the array the step used
                name = next(k for k, v in self.params.items() if v is w[kind])
                grads[name] += value
        dstate0 = tuple(np.stack(parts) for parts in zip(*d0))
        if self.bug == "h0_rows_reversed":
            dstate0 = tuple(s[:, ::-1] for s in dstate0)
        if self.bug == "c0_ignored":
            dstate0 = (dstate0[0], np.zeros_like(dstate0[1]))
        if self.bug == "stale_gradients":  # a buffer that is never cleared between calls
            if self._stale is not None:
                grads = {k: v + self._stale[k] for k, v in grads.items()}
            self._stale = grads
        return dx, dstate0, grads
