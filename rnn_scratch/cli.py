"""Command line: ``python -m rnn_scratch <command>`` or ``rnn-scratch <command>``.

Every command takes ``--backend``, ``--dtype``, ``--seed`` and ``--out DIR``.
"""

from __future__ import annotations

import argparse
import sys

from .functional.sequence import CELL_CHOICES

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
    parser.add_argument("--cell", choices=CELL_CHOICES, default="lstm")
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
    from .layers import make_layer

    return make_layer(args.cell, args.input_size, args.hidden, num_layers=args.layers,
                      bidirectional=args.bidirectional, batch_first=args.batch_first, bias=not args.no_bias,
                      dtype=dtype, backend=args.backend, seed=args.seed)


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
    sshape = (args.layers * layer.num_directions, args.batch, args.hidden)
    states = tuple(to_backend(0.5 * rng.standard_normal(sshape), layer.backend) for _ in layer.cell.state_names)
    print(repr(layer))
    report = check_layer(layer, x, layer.from_states(states), lengths, seed=args.seed)
    print(report)
    return 0 if report.passed else 1


SINE_PRESETS = {
    # the reference setup: vanilla tanh RNN, hidden 50, Adam lr 1e-3, 30 full-batch epochs, MSE
    "seed": dict(cell="rnn", hidden=50, lr=1e-3, epochs=30, batch_size=None),
    # trains to a 50-step forecast MSE well below 1e-3 in seconds
    "default": dict(cell="gru", hidden=32, lr=5e-3, epochs=40, batch_size=64),
}


def _sine_arguments(p):
    p.add_argument("--preset", choices=sorted(SINE_PRESETS), default="default",
                   help="seed: the reference setup exactly; default: trains to forecast MSE < 1e-3")
    p.add_argument("--cell", choices=CELL_CHOICES, help="override the preset's cell")
    p.add_argument("--hidden", type=int, help="override the preset's hidden size")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--lr", type=float, help="override the preset's Adam learning rate")
    p.add_argument("--batch-size", type=int, help="mini-batch size (0 = full batch)")
    p.add_argument("--samples", type=int, default=1000, help="length of the training series (default 1000)")
    p.add_argument("--window", type=int, default=20, help="input window length (default 20)")
    p.add_argument("--horizon", type=int, default=50, help="forecast steps (default 50)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("sine", "train a forecaster on a sine wave, forecast 50 steps, write the plots (the main job)")
def cmd_sine(args):
    import numpy as np

    from .backend import to_backend
    from .models import ManyToOneRegressor
    from .optim import Adam
    from .plots import plot_forecast, plot_loss
    from .training import fit, forecast, sine_series, sliding_windows

    cfg = dict(SINE_PRESETS[args.preset])
    for key in ("cell", "hidden", "epochs", "lr"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.batch_size is not None:
        cfg["batch_size"] = args.batch_size or None
    series = sine_series(args.samples, args.horizon)
    train, truth = series[: args.samples], series[args.samples:]
    x, y = sliding_windows(train, args.window)
    model = ManyToOneRegressor(cfg["cell"], 1, cfg["hidden"], 1, seed=args.seed, dtype=args.dtype,
                               backend=args.backend)
    print(f"sine: {args.samples} samples, windows of {args.window} -> {len(x)} examples; "
          f"{cfg['cell']} hidden {cfg['hidden']}, Adam lr {cfg['lr']}, {cfg['epochs']} epochs, "
          f"batch {cfg['batch_size'] or 'full'}, {model.num_parameters()} parameters, backend {model.backend}")
    xb, yb = (to_backend(a.astype(args.dtype), model.backend) for a in (x, y))
    losses = fit(model, xb, yb, Adam(model.parameters(), lr=cfg["lr"]), epochs=cfg["epochs"],
                 batch_size=cfg["batch_size"], seed=args.seed, show_progress=not args.no_progress)
    pred = forecast(model, train[-args.window:, None], args.horizon)
    mse = float(np.mean((pred - truth) ** 2))
    title = f"{cfg['cell']} (preset {args.preset}): {args.horizon}-step forecast, MSE {mse:.2e}"
    f1 = plot_forecast(f"{args.out}/sine_forecast.png", train[-100:], truth, pred, title)
    f2 = plot_loss(f"{args.out}/sine_loss.png", losses, title=f"training loss ({cfg['cell']}, preset {args.preset})")
    print(f"final training loss {losses[-1]:.3e}")
    print(f"wrote {f1} and {f2}")
    print(f"forecast MSE over {args.horizon} steps: {mse:.3e}")
    return 0


cmd_sine.add_arguments = _sine_arguments


def _char_arguments(p):
    p.add_argument("--text", default=None, help="text file (default: the Shakespeare sonnets shipped in the package)")
    p.add_argument("--cell", choices=CELL_CHOICES, default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--sample-len", type=int, default=300)
    p.add_argument("--no-progress", action="store_true")


@command("char", "train a character-level language model on a text file and print samples")
def cmd_char(args):
    from .charlm import train_char_lm

    result = train_char_lm(args)
    print(result["report"])
    return 0


cmd_char.add_arguments = _char_arguments


def _bench_arguments(p):
    p.add_argument("--quick", action="store_true", help="few sizes and repeats (CI)")
    p.add_argument("--sizes", nargs="+", help="grid rows: seed tiny mid large xl (default all; quick: seed tiny mid)")
    p.add_argument("--cells", nargs="+", default=["rnn_tanh", "lstm", "gru"])
    p.add_argument("--backends", nargs="+", help="numpy cupy torch_cpu torch_cuda (default: all present)")
    p.add_argument("--sweep-max", type=int, default=2048, help="largest H of the hidden-size sweep (0: no sweep)")
    p.add_argument("--name", help="results file name: benchmarks/results/bench_NAME.json (default cpu or gpu)")
    p.add_argument("--repeat", type=int, help="timed repeats per case (default 9; quick 3)")
    p.add_argument("--no-progress", action="store_true")


@command("bench", "time forward and forward+backward on NumPy, CuPy, PyTorch CPU and CUDA; JSON, table, plots")
def cmd_bench(args):
    from . import benchmark

    sweep = args.sweep_max > 0
    if sweep:
        benchmark.SWEEP_H = tuple(h for h in benchmark.SWEEP_H if h <= args.sweep_max)
    result = benchmark.run(sizes=args.sizes, cells=args.cells, backends=args.backends, sweep=sweep,
                           quick=args.quick, dtype=args.dtype, show_progress=not args.no_progress,
                           repeat=args.repeat)
    result["command"] = "python -m rnn_scratch bench " + " ".join(sys.argv[2:])
    path = benchmark.save(result, args.out, args.name)
    text = benchmark.table(result)
    with open(path.replace(".json", ".txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print("wrote", path, *benchmark.plot(result, args.out))
    return 0


cmd_bench.add_arguments = _bench_arguments


def _gradflow_arguments(p):
    p.add_argument("--steps", type=int, default=200, help="sequence length T (default 200)")
    p.add_argument("--radii", type=float, nargs="+", default=[0.5, 1.0, 1.5],
                   help="spectral radii of the recurrent weights (default 0.5 1.0 1.5)")
    p.add_argument("--epochs", type=int, default=20, help="epochs for the training heat map (default 20)")
    p.add_argument("--no-progress", action="store_true")


@command("gradflow", "vanishing and exploding gradients through time: RNN vs LSTM vs GRU, plots and horizons")
def cmd_gradflow(args):
    from .analysis import experiments as ex

    distance = ex.norms_vs_distance(radii=tuple(args.radii), steps=args.steps, seed=args.seed,
                                    show_progress=not args.no_progress)
    print(ex.horizon_table(distance))
    heat = {cell: ex.heatmap_over_training(cell, epochs=args.epochs, seed=args.seed) for cell in ("rnn", "lstm", "gru")}
    for cell, (rows, losses) in heat.items():
        k = min(49, rows.shape[1] - 1)
        print(f"{cell:>5}: gradient ratio {k} steps back, first epoch {rows[0, k]:.1e}, last epoch {rows[-1, k]:.1e}; "
              f"loss {losses[0]:.2e} -> {losses[-1]:.2e}")
    clipping = ex.clipping_on_exploding_run(seed=args.seed, epochs=max(5, args.epochs))
    for label, (losses, norms) in clipping.items():
        print(f"exploding start (radius 3), {label:>20}: largest gradient norm {max(norms):.2e}, "
              f"final loss {losses[-1]:.2e}")
    print("wrote", *ex.plot_all(args.out, distance, heat, clipping))
    return 0


cmd_gradflow.add_arguments = _gradflow_arguments


def build_parser():
    parser = argparse.ArgumentParser(
        prog="rnn-scratch",
        description="Recurrent networks from scratch (NumPy/CuPy) with hand-written BPTT. "
                    "With no command, runs the demo.")
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
