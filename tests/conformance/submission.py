"""A learner's CS231n assignment folder, written on demand: ``assignment3/cs231n/{__init__,layers,rnn_layers}.py``.

``write(tmp_path, bugs=...)`` writes the folder and returns the path of ``rnn_layers.py``. The code is what the
assignment asks, in the style submissions have (in-place ``+=`` in the backward, helpers imported from the
sibling ``layers.py``, the template's ``None`` stubs); each name in ``bugs`` plants one mistake or one hostile
behaviour seen in real submissions or in a probe of the kit.
"""

import textwrap

IMPORTS = {
    "relative": "from .layers import *",
    "absolute": "from cs231n.layers import *",
    "sibling": "from layers import *",  # works from inside the folder, or with the folder on sys.path
}

BUGS = {
    # values
    "no_tanh_grad", "rnn_index_error_T1", "rnn_no_carry", "lstm_no_sigmoid_f", "tanh_grad_of_tanh_g",
    "sigmoid_grad_f_from_i", "db_keepdims", "db_wrong_axis", "squeeze_D", "dprev_h_half", "inplace_prev_c",
    # stubs
    "stub_lstm", "stub_lstm_backward", "stub_step_backward_behind_failing_forward", "lstm_forward_raises",
    "name_error_behind_stub_forward",
    # hostile
    "exit_at_import", "sys_exit_in_function", "os_exit_at_import", "os_exit_in_function", "keyboard_interrupt",
    "generator_exit", "endless_loop", "endless_loop_ignoring_alarm", "hang_in_c", "seterr_raise",
    "patch_numpy", "nondeterministic", "script_tail", "thread_left_running", "print_noise",
}


def _pick(bugs, name, bad, good):
    return bad if name in bugs else good


def rnn_layers_source(bugs=(), imports="relative"):
    bugs = set(bugs)
    assert bugs <= BUGS, bugs - BUGS
    b = lambda name, bad, good: _pick(bugs, name, bad, good)  # noqa: E731
    top = [IMPORTS[imports], "import numpy as np"]
    if "exit_at_import" in bugs:
        top.append("exit()")
    if "os_exit_at_import" in bugs:
        top += ["import os", "os._exit(0)"]
    if "seterr_raise" in bugs:
        top.append("np.seterr(all='raise')")
    if "patch_numpy" in bugs:  # makes every comparison the kit could do in this process pass
        top += ["np.abs = lambda a, *args, **kwargs: np.zeros_like(np.asarray(a, dtype=float))",
                "np.array_equal = lambda *args, **kwargs: True", "np.allclose = lambda *args, **kwargs: True"]
    if "thread_left_running" in bugs:
        top += ["import threading, time", "threading.Thread(target=lambda: time.sleep(3600)).start()"]
    if "print_noise" in bugs:
        top.append("print('importing rnn_layers' * 50)")
    hang = {"endless_loop": "while True:\n        pass",
            "endless_loop_ignoring_alarm": "import signal\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                                           "    while True:\n        pass",
            "hang_in_c": "import re\n    re.match(r'(a+)+$', 'a' * 64 + 'b')  # catastrophic backtracking, in C"}
    hang_code = next((code for name, code in hang.items() if name in bugs), "pass")
    exits = {"sys_exit_in_function": "import sys\n    sys.exit(0)", "os_exit_in_function": "import os\n    os._exit(0)",
             "keyboard_interrupt": "raise KeyboardInterrupt", "generator_exit": "raise GeneratorExit"}
    exit_code = next((code for name, code in exits.items() if name in bugs), "pass")
    scale_prev_c = ("prev_c *= f  # scales the caller's array\n    fc = prev_c" if "inplace_prev_c" in bugs
                    else "fc = f * prev_c")
    source = "\n".join(top) + "\n\n" + f'''
def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """next_h = tanh(x Wx + prev_h Wh + b)"""
    next_h, cache = None, None
    {hang_code}
    {b("squeeze_D", "x = x.squeeze()", "pass")}
    next_h = np.tanh(x.dot(Wx) + prev_h.dot(Wh) + b)
    {b("nondeterministic", "next_h = next_h + 1e-3 * np.random.rand()", "pass")}
    cache = (x, prev_h, Wx, Wh, next_h)
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    dx, dprev_h, dWx, dWh, db = None, None, None, None, None
    x, prev_h, Wx, Wh, next_h = cache
    {exit_code}
    da = {b("no_tanh_grad", "dnext_h", "dnext_h * (1 - next_h ** 2)")}
    dx = da.dot(Wx.T)
    dprev_h = da.dot(Wh.T){b("dprev_h_half", " * 0.5", "")}
    dWx = x.T.dot(da)
    dWh = prev_h.T.dot(da)
    db = {b("db_keepdims", "np.sum(da, axis=0, keepdims=True)", b("db_wrong_axis", "np.sum(da, axis=1)",
                                                                 "np.sum(da, axis=0)"))}
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    h, cache = None, None
    N, T, D = x.shape
    H = h0.shape[1]
    h = np.zeros((N, T, H))
    cache = []
    prev_h = h0
    for t in range(T):
        {b("rnn_no_carry", "prev_h, step_cache = rnn_step_forward(x[:, t, :], h0, Wx, Wh, b)",
           "prev_h, step_cache = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)")}
        h[:, t, :] = prev_h
        cache.append(step_cache)
    return h, cache


def rnn_backward(dh, cache):
    dx, dh0, dWx, dWh, db = None, None, None, None, None
    N, T, H = dh.shape
    D = cache[0][0].shape[1]
    dx = np.zeros((N, T, D))
    dWx, dWh, db = np.zeros((D, H)), np.zeros((H, H)), np.zeros(H)
    dprev_h = np.zeros((N, H))
    {b("rnn_index_error_T1", "first_two = cache[0], cache[1]  # for a check that was never finished", "pass")}
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :] + dprev_h, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    dh0 = dprev_h
    return dx, dh0, dWx, dWh, db


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    next_h, next_c, cache = None, None, None
    {b("stub_lstm", "return next_h, next_c, cache", "pass")}
    H = prev_h.shape[1]
    a = x.dot(Wx) + prev_h.dot(Wh) + b
    i = sigmoid(a[:, :H])
    f = {b("lstm_no_sigmoid_f", "a[:, H:2 * H]", "sigmoid(a[:, H:2 * H])")}
    o = sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:])
    {scale_prev_c}
    next_c = fc + i * g
    next_h = o * np.tanh(next_c)
    cache = (x, prev_h, fc, Wx, Wh, i, f, o, g, next_c)
    return next_h, next_c, cache


def lstm_step_backward(dnext_h, dnext_c, cache):
    dx, dprev_h, dprev_c, dWx, dWh, db = None, None, None, None, None, None
    {b("stub_lstm", "return dx, dprev_h, dprev_c, dWx, dWh, db", "pass")}
    x, prev_h, fc, Wx, Wh, i, f, o, g, next_c = cache
    prev_c = fc / f
    tanh_c = np.tanh(next_c)
    dnext_c += dnext_h * o * (1 - tanh_c ** 2)  # as most submissions do: changes the caller's dnext_c
    dprev_c = f * dnext_c
    di = dnext_c * g * i * (1 - i)
    df = dnext_c * prev_c * {b("sigmoid_grad_f_from_i", "i * (1 - i)", "f * (1 - f)")}
    do = dnext_h * tanh_c * o * (1 - o)
    dg = dnext_c * i * {b("tanh_grad_of_tanh_g", "(1 - np.tanh(g) ** 2)", "(1 - g ** 2)")}
    da = np.hstack((di, df, do, dg))
    dx = da.dot(Wx.T)
    dprev_h = da.dot(Wh.T)
    dWx = x.T.dot(da)
    dWh = prev_h.T.dot(da)
    db = np.sum(da, axis=0)
    return dx, dprev_h, dprev_c, dWx, dWh, db


def lstm_forward(x, h0, Wx, Wh, b):
    h, cache = None, None
    {b("stub_lstm", "return h, cache", "pass")}
    {b("lstm_forward_raises", "raise ValueError('lstm_forward: not finished')", "pass")}
    N, T, D = x.shape
    H = h0.shape[1]
    h = np.zeros((N, T, H))
    prev_h, prev_c = h0, np.zeros((N, H))
    cache = []
    for t in range(T):
        prev_h, prev_c, step_cache = lstm_step_forward(x[:, t, :], prev_h, prev_c, Wx, Wh, b)
        h[:, t, :] = prev_h
        cache.append(step_cache)
    return h, cache


def lstm_backward(dh, cache):
    dx, dh0, dWx, dWh, db = None, None, None, None, None
    {b("stub_lstm", "return dx, dh0, dWx, dWh, db", b("stub_lstm_backward", "return dx, dh0, dWx, dWh, db",
                                                      "pass"))}
    N, T, H = dh.shape
    D = cache[0][0].shape[1]
    dx = np.zeros((N, T, D))
    dWx, dWh, db = np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), np.zeros(4 * H)
    dprev_h, dprev_c = np.zeros((N, H)), np.zeros((N, H))
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(dh[:, t, :] + dprev_h, dprev_c,
                                                                               cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    dh0 = dprev_h
    return dx, dh0, dWx, dWh, db
'''
    if "stub_step_backward_behind_failing_forward" in bugs:
        source += textwrap.dedent('''

        def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
            raise NotImplementedError("lstm_step_forward: to do")


        def lstm_step_backward(dnext_h, dnext_c, cache):
            dx, dprev_h, dprev_c, dWx, dWh, db = None, None, None, None, None, None
            pass
            return dx, dprev_h, dprev_c, dWx, dWh, db
        ''')
    if "name_error_behind_stub_forward" in bugs:  # the forward still the template, the backward half written
        source += textwrap.dedent('''

        def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
            next_h, next_c, cache = None, None, None
            pass
            return next_h, next_c, cache


        def lstm_step_backward(dnext_h, dnext_c, cache):
            dx, dprev_c, dWx, dWh, db = None, None, None, None, None
            pass
            return dx, dprev_h, dprev_c, dWx, dWh, db
        ''')
    if "script_tail" in bugs:
        source += "\n\nprint('testing my functions')\nexit(0)\n"
    return source


LAYERS = '''import numpy as np


def sigmoid(x):
    """A numerically stable sigmoid (as CS231n's rnn_layers.py has it)."""
    pos = x >= 0
    z = np.zeros_like(x)
    z[pos] = np.exp(-x[pos])
    z[~pos] = np.exp(x[~pos])
    top = np.ones_like(x)
    top[~pos] = z[~pos]
    return top / (1 + z)


def affine_forward(x, w, b):
    return x.reshape(x.shape[0], -1).dot(w) + b, (x, w, b)
'''


def write(root, bugs=(), imports="relative", package=True):
    """The assignment folder under ``root``; returns the path of rnn_layers.py (inside ``cs231n/``, a package
    unless ``package`` is False)."""
    folder = root / "assignment3" / "cs231n"
    folder.mkdir(parents=True, exist_ok=True)
    if package:
        (folder / "__init__.py").write_text("")
    (folder / "layers.py").write_text(LAYERS)
    path = folder / "rnn_layers.py"
    path.write_text(rnn_layers_source(bugs, imports))
    return path
