"""Command line: ``python -m rnn_scratch <command>`` or ``rnn-scratch <command>``.

Every option a command lists acts; values are checked before any work starts, and an expected error
(a bad value, a missing GPU, an unwritable folder, a file that is not a checkpoint...) prints one line
on stderr and exits 1 (2 for a usage error); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import shlex
import sys
import tempfile

from .functional import cell_choices, cell_names, get_cell

COMMANDS = {}


def command(name, help_text):
    def register(fn):
        COMMANDS[name] = (fn, help_text)
        return fn
    return register


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (``prog: error: message``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- argument types: each refuses what would silently do nothing or crash later --------------------
def int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


positive_float.__name__ = "number > 0"


def _common(parser, *, backend=True, dtype=None, seed=True, out=True):
    """The options a command acts on: --backend, --dtype (default ``dtype``), --seed, --out; always --debug."""
    if backend:
        parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                            help="array backend (default: $RNN_SCRATCH_BACKEND, else cupy if a GPU is usable, "
                                 "else numpy)")
    if dtype:
        parser.add_argument("--dtype", choices=["float32", "float64"], default=dtype, help=f"default {dtype}")
    if seed:
        parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default 0)")
    if out:
        parser.add_argument("--out", default="out", help="folder for plots and results (default ./out)")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback")


def _writable_folder(path):
    """Make ``path`` if needed and check that a file can be written there, before any work. Returns the
    folders it made, deepest first (:func:`_remove_if_empty` takes them back when the command fails)."""
    made, folder = [], os.path.abspath(path)
    while not os.path.lexists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    os.makedirs(path, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".rnn_scratch-write-check-"):
            pass
    except OSError:
        _remove_if_empty(made)
        raise
    return made


def _remove_if_empty(folders):
    """Remove the folders this run made, deepest first, as long as they are still empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


def _layer_args(parser):
    parser.add_argument("--cell", choices=cell_choices(), type=str.lower, default="lstm")
    parser.add_argument("--input-size", type=int_at_least(1), default=3)
    parser.add_argument("--hidden", type=int_at_least(1), default=4)
    parser.add_argument("--layers", type=int_at_least(1), default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--batch-first", action="store_true")
    parser.add_argument("--no-bias", action="store_true")
    parser.add_argument("--seq-len", type=int_at_least(1), default=5)
    parser.add_argument("--batch", type=int_at_least(1), default=3)
    parser.add_argument("--lengths", type=int_at_least(1), nargs="+", default=None,
                        help="one length per batch element, each in 1..seq-len")


def _build_layer(args, dtype):
    from .layers import make_layer

    return make_layer(args.cell, args.input_size, args.hidden, num_layers=args.layers,
                      bidirectional=args.bidirectional, batch_first=args.batch_first, bias=not args.no_bias,
                      dtype=dtype, backend=args.backend, seed=args.seed)


# -- demo -------------------------------------------------------------------------------------------
@command("demo", "run each layer forward and backward and print the finite-difference check (default)")
def cmd_demo(args):
    import numpy as np

    from .backend import to_backend
    from .gradcheck import check_layer
    from .layers import make_layer

    rng = np.random.default_rng(args.seed)
    print("rnn_scratch demo: forward, hand-written BPTT, and central finite differences (float64)\n")
    ok = True
    for cell in (c for c in cell_names() if get_cell(c).nonsmooth_at is None):  # smooth: differences are exact
        layer = make_layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype="float64", backend=args.backend,
                           seed=args.seed)
        x = to_backend(rng.standard_normal((6, 2, 3)), layer.backend)
        out, _ = layer(x, lengths=np.array([6, 4]))
        dx, _ = layer.backward(layer.xp.ones_like(out))
        print(f"== {cell}: {layer!r}")
        print(f"   x {tuple(x.shape)} -> out {tuple(out.shape)}, dx {tuple(dx.shape)}, "
              f"{layer.num_parameters()} parameters, lengths [6, 4]")
        report = check_layer(layer, x, lengths=np.array([6, 4]), seed=args.seed)
        print("\n".join("   " + line for line in str(report).splitlines()) + "\n")
        ok &= report.passed
    return 0 if ok else 1


cmd_demo.options = dict(dtype=None, out=False)


# -- gradcheck --------------------------------------------------------------------------------------
@command("gradcheck", "finite-difference table for any layer configuration (float64)")
def cmd_gradcheck(args):
    import numpy as np

    from .backend import to_backend
    from .gradcheck import check_layer
    from .memory import check_available
    from .validation import check_lengths

    lengths = None
    if args.lengths is not None:
        lengths = check_lengths(np.array(args.lengths), batch=args.batch, seq_len=args.seq_len)
    layer = _build_layer(args, "float64")  # its parameters pass the memory guard
    check_available(8 * args.seq_len * args.batch * (args.input_size + layer.num_directions * args.hidden)
                    + layer.bptt_bytes(args.seq_len, args.batch, masked=lengths is not None),
                    f"gradcheck: seq_len={args.seq_len}, batch={args.batch}: the input and one forward + backward")
    rng = np.random.default_rng(args.seed)
    shape = (args.batch, args.seq_len, args.input_size) if args.batch_first else (args.seq_len, args.batch,
                                                                                   args.input_size)
    x = to_backend(rng.standard_normal(shape), layer.backend)
    sshape = (args.layers * layer.num_directions, args.batch, args.hidden)
    states = tuple(to_backend(0.5 * rng.standard_normal(sshape), layer.backend) for _ in layer.cell.state_names)
    print(repr(layer))
    report = check_layer(layer, x, layer.from_states(states), lengths, seed=args.seed)
    print(report)
    return 0 if report.passed else 1


cmd_gradcheck.add_arguments = _layer_args
cmd_gradcheck.options = dict(dtype=None, out=False)


# -- sine: the main job -----------------------------------------------------------------------------
def _sine_arguments(p):
    from .training import SINE_PRESETS

    p.add_argument("--preset", choices=sorted(SINE_PRESETS), default="default",
                   help="seed: the reference tutorial exactly; default: trains to forecast MSE < 1e-3")
    p.add_argument("--cell", choices=cell_choices(), type=str.lower, help="override the preset's cell")
    p.add_argument("--hidden", type=int_at_least(1), help="override the preset's hidden size")
    p.add_argument("--epochs", type=int_at_least(1), help="override the preset's epochs")
    p.add_argument("--lr", type=positive_float, help="override the preset's Adam learning rate")
    p.add_argument("--batch-size", type=int_at_least(0), help="mini-batch size (0 = full batch)")
    p.add_argument("--windows", type=int_at_least(1), default=1000,
                   help="training windows N (default 1000): t = linspace(0, N+L, N+L), data = sin(t)")
    p.add_argument("--window", type=int_at_least(1), default=20, help="window length L (default 20)")
    p.add_argument("--horizon", type=int_at_least(1), default=50,
                   help="forecast steps, from window 0, scored against the targets of windows 0.. (default 50)")
    p.add_argument("--forecast-state", choices=["carry", "reset"],
                   help="carry: each forecast call starts from the previous call's final hidden state (the "
                        "tutorial's loop, the seed preset's default); reset: from zeros (the default preset's)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch lines")


@command("sine", "train a forecaster on the tutorial's sine windows, forecast 50 steps, write the plots (main job)")
def cmd_sine(args):
    from .plots import plot_forecast, plot_loss
    from .training import SINE_PRESETS, sine_experiment

    cfg = dict(SINE_PRESETS[args.preset])
    for key in ("cell", "hidden", "epochs", "lr", "batch_size", "forecast_state"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["batch_size"] = cfg["batch_size"] or None  # 0: full batch
    if args.horizon > args.windows:
        raise ValueError(f"--horizon {args.horizon} is scored against the targets of the first windows: it must "
                         f"be at most --windows {args.windows}")
    n_points = args.windows + args.window
    print(f"sine: {args.windows} windows of {args.window} (t = linspace(0, {n_points}, {n_points}), sin(t)); "
          f"{cfg['cell']} hidden {cfg['hidden']}, Adam lr {cfg['lr']}, {cfg['epochs']} epochs, "
          f"batch {cfg['batch_size'] or 'full'}, forecast with {cfg['forecast_state']} state, {args.dtype}, "
          f"seed {args.seed}")

    def report(epoch, loss):
        if not args.no_progress:
            print(f"Epoch {epoch}, Loss: {loss:.4f}", flush=True)

    result = sine_experiment(**cfg, windows=args.windows, window=args.window, horizon=args.horizon, seed=args.seed,
                             dtype=args.dtype, backend=args.backend, on_epoch=report)
    mse, losses = result["mse"], result["losses"]
    title = ("RNN Time-Series Forecasting vs Original Sine Wave" if args.preset == "seed"
             else f"{cfg['cell']}: {args.horizon}-step forecast from window 0, MSE {mse:.2e}")
    f1 = os.path.join(args.out, "sine_forecast.png")
    f2 = os.path.join(args.out, "sine_loss.png")
    plot_forecast(result["truth"], result["forecast"], title=title, path=f1,
                  truth_label="original (targets of windows 0..)",
                  prediction_label=f"forecast ({cfg['forecast_state']} state)")
    plot_loss(losses, title=f"training loss ({cfg['cell']}, preset {args.preset})", path=f2, start=0)
    print(f"{result['model'].num_parameters()} parameters, backend {result['model'].backend}; "
          f"final training loss {losses[-1]:.3e}")
    print(f"wrote {f1} and {f2}")
    print(f"forecast MSE over {args.horizon} steps ({cfg['forecast_state']} state): {mse:.3e}")
    return 0


cmd_sine.needs = lambda args: [("matplotlib", "plots")]
cmd_sine.add_arguments = _sine_arguments
cmd_sine.options = dict(dtype="float32")


# -- char -------------------------------------------------------------------------------------------
def _char_arguments(p):
    p.add_argument("--text", default=None, help="text file (default: the Shakespeare sonnets shipped in the package)")
    p.add_argument("--cell", choices=cell_choices(), type=str.lower, default="lstm")
    p.add_argument("--hidden", type=int_at_least(1), default=128)
    p.add_argument("--seq-len", type=int_at_least(1), default=48)
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--epochs", type=int_at_least(1), default=40)
    p.add_argument("--lr", type=positive_float, default=5e-3)
    p.add_argument("--temperature", type=positive_float, default=0.7)
    p.add_argument("--sample-len", type=int_at_least(1), default=300)
    p.add_argument("--no-progress", action="store_true")


@command("char", "train a character-level language model on a text file and print samples")
def cmd_char(args):
    from .charlm import train_char_lm

    text = None
    if args.text is not None:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    result = train_char_lm(text=text, cell=args.cell, hidden=args.hidden, seq_len=args.seq_len,
                           batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, temperature=args.temperature,
                           sample_len=args.sample_len, seed=args.seed, dtype=args.dtype, backend=args.backend,
                           out=args.out, show_progress=not args.no_progress)
    print(result["report"])
    return 0


cmd_char.needs = lambda args: [("matplotlib", "loss plot")]
cmd_char.add_arguments = _char_arguments
cmd_char.options = dict(dtype="float32")


# -- bench ------------------------------------------------------------------------------------------
def _bench_arguments(p):
    from .benchmark import BACKENDS, GRID

    p.add_argument("--quick", action="store_true", help="few sizes and repeats (CI)")
    p.add_argument("--sizes", nargs="+", choices=list(GRID),
                   help="grid rows (default all; quick: seed tiny mid)")
    p.add_argument("--cells", nargs="+", choices=cell_choices(), type=str.lower, default=None,
                   help="default: every registered cell but the variants of one torch class (rnn_relu)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, help="default: all present")
    p.add_argument("--sweep-max", type=int_at_least(0), default=None,
                   help="largest H of the hidden-size sweep (0: no sweep; default 2048, quick 256)")
    p.add_argument("--name", help="results file name: OUT/bench_NAME.json (default cpu or gpu)")
    p.add_argument("--repeat", type=int_at_least(1), help="timed repeats per case (default 9; quick 3)")
    p.add_argument("--no-progress", action="store_true")


@command("bench", "time forward and forward+backward on NumPy, CuPy, PyTorch CPU and CUDA; JSON, table, plots")
def cmd_bench(args):
    from . import benchmark
    from .plots import write_text

    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", args.name):
        raise ValueError(f"--name must be 1 to 100 of the characters A-Z a-z 0-9 . _ - (not starting with '.'), "
                         f"got {args.name!r}")
    available = benchmark.available_backends()
    missing = sorted(set(args.backends or ()) - set(available))
    if missing:
        raise ValueError(f"backends {missing} are not available here (available: {available})")
    result = benchmark.run(sizes=args.sizes, cells=args.cells, backends=args.backends,
                           sweep_max=args.sweep_max, quick=args.quick, dtype=args.dtype,
                           show_progress=not args.no_progress, repeat=args.repeat, seed=args.seed)
    result["command"] = args.command_line
    path = benchmark.save(result, args.out, args.name)
    text = benchmark.table(result)
    write_text(path.replace(".json", ".txt"), text + "\n")
    print(text)
    print("wrote", path, *benchmark.plot(result, args.out))
    return 0


cmd_bench.needs = lambda args: [("matplotlib", "plots")] if args.sweep_max != 0 else []
cmd_bench.add_arguments = _bench_arguments
cmd_bench.options = dict(dtype="float32")


# -- gradflow ---------------------------------------------------------------------------------------
def _gradflow_arguments(p):
    p.add_argument("--steps", type=int_at_least(2), default=200, help="sequence length T (default 200)")
    p.add_argument("--radii", type=positive_float, nargs="+", default=[0.5, 1.0, 1.5],
                   help="spectral radii of the recurrent weights (default 0.5 1.0 1.5)")
    p.add_argument("--epochs", type=int_at_least(1), default=20, help="epochs for the training heat map (default 20)")
    p.add_argument("--no-progress", action="store_true")


@command("gradflow", "vanishing and exploding gradients through time, every registered cell side by side: plots "
                     "and horizons (float64, NumPy)")
def cmd_gradflow(args):
    from .analysis import experiments as ex

    distance = ex.norms_vs_distance(radii=tuple(args.radii), steps=args.steps, seed=args.seed,
                                    show_progress=not args.no_progress)
    print(ex.horizon_table(distance))
    from .benchmark import default_cells

    heat = {cell: ex.heatmap_over_training(cell, epochs=args.epochs, seed=args.seed) for cell in default_cells()}
    for cell, (rows, losses) in heat.items():
        k = min(49, rows.shape[1] - 1)
        print(f"{cell:>14}: gradient ratio {k} steps back, first epoch {rows[0, k]:.1e}, last epoch {rows[-1, k]:.1e}; "
              f"loss {losses[0]:.2e} -> {losses[-1]:.2e}")
    clipping = ex.clipping_on_exploding_run(seed=args.seed, epochs=max(5, args.epochs))
    for label, (losses, norms) in clipping.items():
        print(f"exploding start (radius 3), {label:>20}: largest gradient norm {max(norms):.2e}, "
              f"final loss {losses[-1]:.2e}")
    print("wrote", *ex.plot_all(args.out, distance, heat, clipping))
    return 0


cmd_gradflow.needs = lambda args: [("matplotlib", "plots")]
cmd_gradflow.add_arguments = _gradflow_arguments
cmd_gradflow.options = dict(backend=False, dtype=None)


# -- check: the conformance kit ---------------------------------------------------------------------
def _check_arguments(p):
    p.add_argument("target", metavar="PATH_OR_MODULE",
                   help="a .py file (cs231n/rnn_layers.py: a file inside a package folder is imported as the "
                        "package's module) or an importable module; MODULE:ATTR or PATH:ATTR names a layer class, "
                        "factory or object (layer convention)")
    p.add_argument("--convention", choices=["cs231n", "layer"], required=True,
                   help="cs231n: CS231n's function names and signatures; layer: a torch-shaped layer")
    p.add_argument("--cell", choices=cell_choices(), type=str.lower, required=True,
                   help="cs231n: rnn or lstm (CS231n's assignment has no others); layer: any registered cell")
    p.add_argument("--max-examples", type=int_at_least(1), default=None,
                   help="cases searched per function (default 60)")
    p.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                   help="wall-clock limit for the whole check (default 120); when it runs out the report says "
                        "what was not checked and the exit status is 3")
    p.add_argument("--call-limit", type=positive_float, default=None, metavar="SECONDS",
                   help="wall-clock limit for one call of your code (default 10); a call that overruns is stopped "
                        "and reported, not retried")
    p.add_argument("--strict", action="store_true",
                   help="an argument changed in place fails the check (by default it is a warning, exit 0)")


@command("check", "check your own RNN/LSTM: search for a failing case, shrink it, say which gradient is wrong "
                  "and why (exit 0 conforming, 1 not, 2 usage or import error, 3 time limit reached)")
def cmd_check(args):
    from .testing.conformance import ImplementationError, check_implementation
    from .testing.kit import hypothesis_storage

    try:
        with hypothesis_storage():  # hypothesis writes its cache in a temporary folder, not in ./.hypothesis
            report = check_implementation(args.target, convention=args.convention, cell=args.cell,
                                          max_examples=args.max_examples, seed=args.seed, strict=args.strict,
                                          time_limit=args.time_limit, call_limit=args.call_limit)
    except ImplementationError as exc:
        print(f"rnn-scratch check: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(report)
    return report.exit_status


cmd_check.error_status = 2  # 1 means "does not conform"
cmd_check.needs = lambda args: [("hypothesis", "case search")]
cmd_check.add_arguments = _check_arguments
cmd_check.options = dict(backend=False, dtype=None, out=False)


# -- online: gradient algorithms side by side --------------------------------------------------------
def _online_arguments(p):
    from .online import METHODS, TASKS

    p.add_argument("--task", choices=TASKS, default="add",
                   help="add: Marschall et al.'s add task; copy: recall n bits; sine: the seed's forecaster as a "
                        "stream (default add)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="gradient methods to train with (default: all)")
    p.add_argument("--cell", choices=cell_choices(), type=str.lower, default="rnn_tanh")
    p.add_argument("--hidden", type=int_at_least(1), default=16, help="hidden units (default 16)")
    p.add_argument("--steps", type=int_at_least(1), default=10000, help="steps of the stream per run (default 10000)")
    p.add_argument("--seeds", type=int_at_least(1), default=5,
                   help="runs per method, seeds --seed, --seed+1, ... (default 5)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: adam 3e-3, sgd 0.05)")
    p.add_argument("--truncation", type=int_at_least(1),
                   help="k of bptt (window of each update) and tbptt (steps back); default 6, only with those methods")
    p.add_argument("--batch", type=int_at_least(1), default=1, help="independent streams per step (default 1)")
    p.add_argument("--clip", type=positive_float, help="clip each update's global norm")
    p.add_argument("--lags", type=int_at_least(1), nargs=2, metavar=("T1", "T2"),
                   help="add task: the lags of its two dependencies (default 5 8)")
    p.add_argument("--length", type=int_at_least(1), help="copy task: bits per episode (default 3)")
    p.add_argument("--every", type=int_at_least(1), help="steps per point of the curves (default steps/50)")
    p.add_argument("--no-exact", action="store_true",
                   help="skip the exact RTRL run alongside each method (no alignment or variance curves)")
    p.add_argument("--no-progress", action="store_true")


@command("online", "train online with BPTT, truncated BPTT, RTRL, UORO, KF-RTRL, SnAp and RFLO side by side: "
                   "learning curves, alignment with the exact gradient, variance, cost table; JSON and plots")
def cmd_online(args):
    import json

    from .online import study, tasks

    options = {}
    if args.lags is not None:
        if args.task != "add":
            raise ValueError(f"--lags belongs to the add task, not --task {args.task}")
        options["lags"] = tuple(args.lags)
    if args.length is not None:
        if args.task != "copy":
            raise ValueError(f"--length belongs to the copy task, not --task {args.task}")
        options["length"] = args.length
    if args.task == "add":
        options.setdefault("lags", (5, 8))
    task = tasks.make_task(args.task, **options)
    windowed = [m for m in args.methods if m in ("bptt", "tbptt")]
    if args.truncation is not None and not windowed:
        raise ValueError("--truncation is the k of bptt and tbptt, and neither is among --methods")
    truncation = (args.truncation or 6) if windowed else None
    if args.every is not None and args.every > args.steps:
        raise ValueError(f"--every {args.every} is more than --steps {args.steps}")
    # the exact RTRL run beside each method needs the cell's step derivatives; without them it is left out
    exact = not args.no_exact and get_cell(args.cell).step_derivatives is not None
    if not args.no_exact and not exact:
        print(f"online: no exact RTRL run beside the methods (cell {get_cell(args.cell).name} has no step "
              f"derivatives): no alignment or variance curves")
    print(f"online: {task.describe()}, {args.cell} hidden {args.hidden}, {args.steps} steps x {args.seeds} seeds, "
          f"batch {args.batch}, {args.optimizer} lr {args.lr or ('3e-3' if args.optimizer == 'adam' else '0.05')}"
          f"{f', truncation {truncation}' if truncation else ''}, {args.dtype}; methods {' '.join(args.methods)}")
    result = study.run_study(task, args.methods, seeds=args.seeds, seed=args.seed, cell=args.cell, hidden=args.hidden,
                             steps=args.steps, batch=args.batch, optimizer=args.optimizer, lr=args.lr,
                             truncation=truncation, clip=args.clip, exact=exact, every=args.every,
                             dtype=args.dtype, backend=args.backend, show_progress=not args.no_progress)
    result["command"] = args.command_line
    table = study.cost_table(result)
    base = os.path.join(args.out, f"online_{task.name}")
    with open(base + ".json", "w") as f:
        json.dump(study.json_ready(result), f, indent=1, allow_nan=False)
    variance = result["estimator_variance"]
    notes = []
    if "ratio_kf_rtrl_to_uoro" in variance:
        notes.append(f"estimator variance at the initial weights ({variance['samples']} draws, {variance['steps']} "
                     f"steps): uoro {variance['uoro']:.3g}, kf-rtrl {variance['kf-rtrl']:.3g}, ratio kf-rtrl / uoro "
                     f"{variance['ratio_kf_rtrl_to_uoro']:.3g} (squared norm of the exact gradient "
                     f"{variance['exact_squared_norm']:.3g})")
    with open(base + ".txt", "w") as f:
        f.write("\n".join([table, *notes]) + "\n")
    print(table)
    for line in notes:
        print(line)
    plots = [study.plot_learning_curves] + ([study.plot_alignment, study.plot_variance] if exact else [])
    paths = []
    for plot, suffix in zip(plots, ("loss", "alignment", "variance")):
        paths.append(f"{base}_{suffix}.png")
        plot(result, paths[-1])
    print("wrote", base + ".json", base + ".txt", *paths)
    return 0


cmd_online.needs = lambda args: [("matplotlib", "plots")]
cmd_online.add_arguments = _online_arguments
cmd_online.options = dict(dtype="float64")


# -- properties: the reference-free suite -----------------------------------------------------------
def _properties_arguments(p):
    from ._optional import MissingDependencyError

    try:
        from .testing.properties import ADAPTERS, DEFAULT_MAX_EXAMPLES, PROPERTY_NAMES
    except MissingDependencyError:  # without hypothesis: every other command still runs, this one says why not
        ADAPTERS, DEFAULT_MAX_EXAMPLES, PROPERTY_NAMES = None, None, ()
    p.add_argument("target", metavar="MODULE:FACTORY",
                   help="a factory (input_size, hidden_size) -> layer: MODULE is a .py file or an importable module, "
                        "e.g. torch.nn:GRU or my_layers.py:make_lstm (importing a file runs it)")
    p.add_argument("--adapter", choices=sorted(ADAPTERS) if ADAPTERS else None, required=True,
                   help="how to call the layer: torch (torch.nn.RNN/LSTM/GRU), rnn_scratch, or custom (the protocol "
                        "in rnn_scratch.testing.properties.adapters.CustomAdapter)")
    p.add_argument("--only", nargs="+", choices=PROPERTY_NAMES or None, metavar="PROPERTY",
                   help=f"check only these properties (default all: {', '.join(PROPERTY_NAMES)})")
    p.add_argument("--dtypes", nargs="+", choices=["float64", "float32"], default=["float64", "float32"],
                   help="float64 always; float32 too unless left out (default both)")
    p.add_argument("--max-examples", type=int_at_least(1), default=DEFAULT_MAX_EXAMPLES,
                   help=f"cases searched per property (default {DEFAULT_MAX_EXAMPLES})")
    p.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                   help="stop searching after this long; the properties not reached are reported as not run "
                        "(exit 1: incomplete)")
    p.add_argument("--no-progress", action="store_true", help="no line per property on stderr")


@command("properties", "check a recurrent layer against relations every correct RNN satisfies (batch, split, padding, "
                       "bidirectional, relabelling, linearity, directional derivative, zero weights, dtype); exit 0 "
                       "all hold, 1 a property broke, 2 usage or import error")
def cmd_properties(args):
    from .testing.properties import UsageError, check_properties, load_factory

    def progress(line):
        print(line, file=sys.stderr, flush=True)

    if "float64" not in args.dtypes:
        print("rnn-scratch properties: error: --dtypes must include float64 (the truth float32 is judged against)",
              file=sys.stderr)
        return 2
    try:
        factory = load_factory(args.target)
        report = check_properties(factory, adapter=args.adapter, properties=args.only, dtypes=args.dtypes,
                                  max_examples=args.max_examples, seed=args.seed, time_limit=args.time_limit,
                                  progress=None if args.no_progress else progress, label=args.target)
    except UsageError as exc:
        print(f"rnn-scratch properties: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok else 1


cmd_properties.error_status = 2  # 1 means "a property broke"
cmd_properties.needs = lambda args: [("hypothesis", "case search")] + (
    [("torch", "the torch adapter")] if args.adapter == "torch" else [])
cmd_properties.add_arguments = _properties_arguments
cmd_properties.options = dict(backend=False, dtype=None, out=False)


# -- the parser and the error handler ---------------------------------------------------------------
def build_parser():
    from . import __version__

    parser = _Parser(
        prog="rnn-scratch",
        description="Recurrent networks from scratch (NumPy/CuPy) with hand-written BPTT. "
                    "With no command, runs the demo.")
    parser.add_argument("--version", action="version", version=f"rnn-scratch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    for name, (fn, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        extra = getattr(fn, "add_arguments", None)
        if extra:
            extra(p)
        _common(p, **getattr(fn, "options", {}))
        p.set_defaults(func=fn)
    return parser


def expected_errors():
    """The errors that mean "this cannot be done as asked", reported in one line, not as a crash."""
    from ._optional import MissingDependencyError
    from .backend import BackendUnavailableError

    return (ValueError, TypeError, OSError, MemoryError, BackendUnavailableError, MissingDependencyError)


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        parser.error(f"unknown command {argv[0]!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                     + f" (commands: {', '.join(COMMANDS)})")
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help", "--version"):
        argv = ["demo", *argv]  # options alone: the demo's
    args = parser.parse_args(argv)
    args.command_line = "python -m rnn_scratch " + " ".join(shlex.quote(a) for a in argv)  # as run, for results
    made = []
    try:
        if getattr(args, "backend", None) is not None:
            from .backend import resolve_backend

            resolve_backend(args.backend)  # a missing GPU is said now, not after the work
        if getattr(args, "out", None) is not None:
            made = _writable_folder(args.out)
        from ._optional import require

        for module, purpose in getattr(args.func, "needs", lambda a: ())(args):
            require(module, f"rnn-scratch {args.command} ({purpose})")  # said now, not after the training
        return args.func(args)
    except KeyboardInterrupt:
        _remove_if_empty(made)
        print(f"rnn-scratch {args.command}: interrupted", file=sys.stderr)
        return 130
    except expected_errors() as exc:
        _remove_if_empty(made)  # a refused command leaves no empty --out folder behind
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"rnn-scratch {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return getattr(args.func, "error_status", 1)
