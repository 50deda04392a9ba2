"""A learner's CS231n-style RNN and LSTM, written as the assignment asks, with switchable mistakes.

``build()`` returns the eight functions, correct; ``build(bug=...)`` plants one of the mistakes below.
Each ``bug_*.py`` module beside this one is one learner's submission with one planted mistake.
"""

import numpy as np

BUGS = ("gate_order_ifgo", "no_h_carry", "no_c_carry", "dprev_c_drops_dh_path", "no_tanh_grad_c", "inplace_prev_c",
        "db_mean", "no_tanh_grad", "no_sigmoid_grad_f", "index_error", "db_keepdims", "nan_log", "endless_loop")


def build(bug=None):
    assert bug is None or bug in BUGS, bug

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    # ---------------------------------------------------------------- vanilla RNN
    def rnn_step_forward(x, prev_h, Wx, Wh, b):
        next_h = np.tanh(prev_h @ Wh + x @ Wx + b)
        if bug == "nan_log":  # a stray term that is zero when it is defined, NaN when prev_h < -1
            next_h = next_h + 0 * np.log(prev_h + 1)
        while bug == "endless_loop" and x.shape[0] > 1:
            pass
        return next_h, (x, prev_h, Wx, Wh, next_h)

    def rnn_step_backward(dnext_h, cache):
        x, prev_h, Wx, Wh, next_h = cache
        da = dnext_h if bug == "no_tanh_grad" else dnext_h * (1 - next_h**2)
        dx = da @ Wx.T
        dprev_h = da @ Wh.T
        dWx = x.T @ da
        dWh = prev_h.T @ da
        if bug == "db_mean":
            db = da.mean(axis=0)
        elif bug == "db_keepdims":
            db = da.sum(axis=0, keepdims=True)
        else:
            db = da.sum(axis=0)
        return dx, dprev_h, dWx, dWh, db

    def rnn_forward(x, h0, Wx, Wh, b):
        N, T, D = x.shape
        h = np.zeros((N, T, h0.shape[1]))
        caches = []
        prev = h0
        for t in range(T):
            xt = x[:, t + 1] if bug == "index_error" and t == T - 1 and T > 2 else x[:, t]
            prev, cache = rnn_step_forward(xt, prev, Wx, Wh, b)
            h[:, t] = prev
            caches.append(cache)
        return h, caches

    def rnn_backward(dh, caches):
        N, T, H = dh.shape
        D = caches[0][0].shape[1]
        dx = np.zeros((N, T, D))
        dWx, dWh, db = np.zeros((D, H)), np.zeros((H, H)), np.zeros(H)
        dprev = np.zeros((N, H))
        for t in reversed(range(T)):
            upstream = dh[:, t] if bug == "no_h_carry" else dh[:, t] + dprev
            dx[:, t], dprev, dWx_t, dWh_t, db_t = rnn_step_backward(upstream, caches[t])
            dWx += dWx_t
            dWh += dWh_t
            db += db_t
        return dx, dprev, dWx, dWh, db

    # ---------------------------------------------------------------- LSTM
    def gates(a, H):
        if bug == "gate_order_ifgo":
            return (sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 3 * H:]), np.tanh(a[:, 2 * H:3 * H]))
        return sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])

    def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
        H = prev_h.shape[1]
        i, f, o, g = gates(x @ Wx + prev_h @ Wh + b, H)
        if bug == "inplace_prev_c":
            prev_c *= f  # scales the caller's array
            next_c = prev_c + i * g
        else:
            next_c = f * prev_c + i * g
        next_h = o * np.tanh(next_c)
        return next_h, next_c, (x, prev_h, prev_c.copy() if bug == "inplace_prev_c" else prev_c, Wx, Wh, i, f, o, g,
                                next_c)

    def lstm_step_backward(dnext_h, dnext_c, cache):
        x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
        if bug == "inplace_prev_c":
            prev_c = prev_c / f
        tc = np.tanh(next_c)
        do = dnext_h * tc
        dc = dnext_c + dnext_h * o if bug == "no_tanh_grad_c" else dnext_c + dnext_h * o * (1 - tc**2)
        di, df, dg = dc * g, dc * prev_c, dc * i
        dprev_c = f * dnext_c if bug == "dprev_c_drops_dh_path" else f * dc
        df_a = df if bug == "no_sigmoid_grad_f" else df * f * (1 - f)
        parts = [di * i * (1 - i), df_a, do * o * (1 - o), dg * (1 - g**2)]
        if bug == "gate_order_ifgo":
            parts = [parts[0], parts[1], parts[3], parts[2]]
        da = np.hstack(parts)
        return da @ Wx.T, da @ Wh.T, dprev_c, x.T @ da, prev_h.T @ da, da.sum(axis=0)

    def lstm_forward(x, h0, Wx, Wh, b):
        N, T, D = x.shape
        H = h0.shape[1]
        h = np.zeros((N, T, H))
        prev_h, prev_c = h0, np.zeros((N, H))
        caches = []
        for t in range(T):
            prev_h, prev_c, cache = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
            h[:, t] = prev_h
            caches.append(cache)
        return h, caches

    def lstm_backward(dh, caches):
        N, T, H = dh.shape
        D = caches[0][0].shape[1]
        dx = np.zeros((N, T, D))
        dWx, dWh, db = np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), np.zeros(4 * H)
        dprev_h, dprev_c = np.zeros((N, H)), np.zeros((N, H))
        for t in reversed(range(T)):
            upstream_c = np.zeros((N, H)) if bug == "no_c_carry" else dprev_c
            dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(dh[:, t] + dprev_h, upstream_c,
                                                                                caches[t])
            dWx += dWx_t
            dWh += dWh_t
            db += db_t
        return dx, dprev_h, dWx, dWh, db

    return {name: fn for name, fn in locals().items() if name.startswith(("rnn_", "lstm_"))}
