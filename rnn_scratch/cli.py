"""Command line: ``python -m rnn_scratch <command>`` or ``rnn-scratch <command>``.

Every command takes ``--backend``, ``--dtype``, ``--seed`` and ``--out DIR``.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = {}


def command(name, help_text):
    def register(fn):
        COMMANDS[name] = (fn, help_text)
        return fn
    return register


def _common(parser, dtype="float32"):
    parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                        help="array backend (default: $RNN_SCRATCH_BACKEND, else cupy if a GPU is usable, else numpy)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=dtype, help=f"default {dtype}")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default="out", help="directory for plots and results (default ./out)")


def _layer_args(parser):
    parser.add_argument("--cell", choices=["rnn", "rnn_relu", "lstm", "gru"], default="lstm")
    parser.add_argument("--input-size", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=4)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--batch-first", action="store_true")
    parser.add_argument("--no-bias", action="store_true")
    parser.add_argument("--seq-len", type=int, default=5)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="one length per batch element")


def _build_layer(args, dtype):
    from . import layers

    kw = dict(num_layers=args.layers, bidirectional=args.bidirectional, batch_first=args.batch_first,
              bias=not args.no_bias, dtype=dtype, backend=args.backend, seed=args.seed)
    if args.cell == "lstm":
        return layers.LSTM(args.input_size, args.hidden, **kw)
    if args.cell == "gru":
        return layers.GRU(args.input_size, args.hidden, **kw)
    return layers.RNN(args.input_size, args.hidden, nonlinearity="relu" if args.cell == "rnn_relu" else "tanh", **kw)


@command("demo", "run each layer forward and backward and print the finite-difference check (default)")
def cmd_demo(args):
    import numpy as np

    from . import layers
    from .backend import to_backend
    from .gradcheck import check_layer

    rng = np.random.default_rng(args.seed)
    print("rnn_scratch demo: forward, hand-written BPTT, and central finite differences (float64)\n")
    ok = True
    for cls, name in ((layers.RNN, "RNN (tanh)"), (layers.LSTM, "LSTM"), (layers.GRU, "GRU")):
        layer = cls(3, 4, num_layers=2, bidirectional=True, dtype="float64", backend=args.backend, seed=args.seed)
        x = to_backend(rng.standard_normal((6, 2, 3)), layer.backend)
        out, state = layer(x, lengths=np.array([6, 4]))
        dx, _ = layer.backward(layer.xp.ones_like(out))
        print(f"== {name}: {layer!r}")
        print(f"   x {tuple(x.shape)} -> out {tuple(out.shape)}, dx {tuple(dx.shape)}, "
              f"{layer.num_parameters()} parameters, lengths [6, 4]")
        report = check_layer(layer, x, lengths=np.array([6, 4]), seed=args.seed)
        print("\n".join("   " + line for line in str(report).splitlines()) + "\n")
        ok &= report.passed
    return 0 if ok else 1


@command("gradcheck", "finite-difference table for any layer configuration")
def cmd_gradcheck(args):
    import numpy as np

    from .backend import to_backend
    from .gradcheck import check_layer

    layer = _build_layer(args, "float64")
    rng = np.random.default_rng(args.seed)
    shape = (args.batch, args.seq_len, args.input_size) if args.batch_first else (args.seq_len, args.batch,
                                                                                   args.input_size)
    x = to_backend(rng.standard_normal(shape), layer.backend)
    lengths = None if args.lengths is None else np.array(args.lengths)
    n = 2 if args.cell == "lstm" else 1
    sshape = (args.layers * (2 if args.bidirectional else 1), args.batch, args.hidden)
    states = tuple(to_backend(0.5 * rng.standard_normal(sshape), layer.backend) for _ in range(n))
    print(repr(layer))
    report = check_layer(layer, x, states if n == 2 else states[0], lengths, seed=args.seed)
    print(report)
    return 0 if report.passed else 1


def build_parser():
    parser = argparse.ArgumentParser(prog="rnn-scratch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "gradcheck":
            _layer_args(p)
        extra = getattr(fn, "add_arguments", None)
        if extra:
            extra(p)
        _common(p, dtype="float64" if name in ("demo", "gradcheck") else "float32")
        p.set_defaults(func=fn)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)
