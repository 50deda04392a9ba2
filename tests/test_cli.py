"""The command line: every option --help offers acts; bad values fail fast in one line; no success without work."""

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from rnn_scratch import __version__, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "rnn_scratch", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def run_inline(*args):
    """cli.main in this process (fast): (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = cli.main(list(args))
        except SystemExit as exc:
            status = exc.code
    return status, out.getvalue(), err.getvalue()


BAD_VALUES = [
    # (argv, why) -- each must exit non-zero with one line on stderr, no traceback, before doing the work
    (["sine", "--batch-size", "-1"], "batch size"),
    (["sine", "--horizon", "0"], "horizon"),
    (["sine", "--horizon", "2000"], "horizon > windows"),
    (["sine", "--epochs", "0"], "epochs"),
    (["sine", "--epochs", "-1"], "epochs"),
    (["sine", "--hidden", "0"], "hidden"),
    (["sine", "--hidden", "two"], "non-numeric"),
    (["sine", "--lr", "0"], "lr"),
    (["sine", "--lr", "inf"], "lr inf"),
    (["sine", "--lr", "nan"], "lr nan"),
    (["sine", "--seed", "-1"], "seed"),
    (["sine", "--window", "0"], "window"),
    (["sine", "--cell", "elman"], "cell"),
    (["sine", "--forecast-state", "keep"], "forecast state"),
    (["sine", "--dtype", "float16"], "dtype"),
    (["sine", "--out", "/dev/null/x"], "unwritable out"),
    (["sine", "--epochs", "2", "--backend", "cupy"], "no GPU"),
    (["char", "--epochs", "0"], "epochs"),
    (["char", "--seq-len", "100000", "--epochs", "1"], "seq-len longer than the text"),
    (["char", "--text", "/no/such/file.txt"], "missing text"),
    (["char", "--temperature", "0"], "temperature"),
    (["char", "--batch-size", "x"], "non-numeric"),
    (["gradcheck", "--lengths", "9", "9", "9"], "lengths"),
    (["gradcheck", "--lengths", "2", "2"], "lengths count"),
    (["gradcheck", "--hidden", "0"], "hidden"),
    (["gradcheck", "--layers", "-2"], "layers"),
    (["bench", "--sizes", "nope"], "size"),
    (["bench", "--repeat", "0"], "repeat"),
    (["bench", "--sweep-max", "-5"], "sweep"),
    (["bench", "--backends", "tpu"], "backend name"),
    (["bench", "--name", "../x", "--quick"], "name"),
    (["gradflow", "--steps", "1"], "steps"),
    (["gradflow", "--radii", "-1"], "radius"),
    (["gradflow", "--epochs", "0"], "epochs"),
    (["demo", "--seed", "x"], "seed"),
    (["nosuchcommand"], "command"),
]


@pytest.mark.parametrize("argv, why", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_values_fail_fast_in_one_line(argv, why, tmp_path):
    if "--out" not in argv and argv[0] in ("sine", "char", "bench", "gradflow"):
        argv = [*argv, "--out", str(tmp_path / "out")]
    if argv[:2] == ["sine", "--epochs"] and "--backend" in argv:
        from rnn_scratch.backend import cupy_available

        if cupy_available():
            pytest.skip("a GPU is usable here")
    status, out, err = run_inline(*argv)
    assert status not in (0, None), (why, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, (why, err)
    assert "error" in lines[0], (why, err)
    assert "wrote" not in out and "forecast MSE" not in out, (why, out)  # no success reported
    produced = tmp_path / "out"
    assert not produced.exists() or not any(p.suffix == ".png" for p in produced.iterdir()), why


MISSING = [(["sine", "--epochs", "1"], "matplotlib"), (["char", "--epochs", "1"], "matplotlib"),
           (["gradflow", "--steps", "5"], "matplotlib"), (["bench", "--quick"], "matplotlib"),
           (["check", "tests/conformance/correct.py", "--convention", "cs231n", "--cell", "lstm"], "hypothesis")]


@pytest.mark.parametrize("argv, module", MISSING, ids=[a[0] for a, _ in MISSING])
def test_a_missing_optional_package_is_said_before_the_work(argv, module, tmp_path, monkeypatch):
    """Without matplotlib (or hypothesis for check) a command stops at once with one line naming the package
    and the extra that installs it, not with a traceback after the training."""
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import of it now fails, as when it is not installed
    if argv[0] != "check":
        argv = [*argv, "--out", str(tmp_path / "out")]
    status, out, err = run_inline(*argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == (2 if argv[0] == "check" else 1), status  # check's 1 means "does not conform"
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"needs {module}, which is not installed" in err and "pip install" in err, err
    assert out == "", out  # nothing trained, nothing written
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bench_without_a_sweep_needs_no_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = cli.build_parser().parse_args(["bench", "--sweep-max", "0"])
    assert args.func.needs(args) == []


def test_library_calls_name_the_missing_package(monkeypatch):
    from rnn_scratch import plots
    from rnn_scratch._optional import MissingDependencyError

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"plotting needs matplotlib.*\[plot\]"):
        plots.new_figure()
    assert issubclass(MissingDependencyError, ImportError)  # except ImportError still catches it


@pytest.mark.slow
def test_errors_are_one_line_from_a_real_process_and_debug_shows_the_traceback(tmp_path):
    r = run_cli("sine", "--epochs", "0")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_cli("sine", "--out", "/dev/null/x")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_cli("sine", "--out", "/dev/null/x", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"rnn-scratch {__version__}"


def _options(command):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {opt for action in sub._actions for opt in action.option_strings} - {"-h", "--help"}


# Every option each command's --help offers, and how this test sees it act (a changed output or file).
ACTS = {
    "gradcheck": {"--backend": None, "--seed": None, "--debug": None, "--cell": (["--cell", "gru"], "GRU("),
                  "--input-size": (["--input-size", "2"], "GRU(2,"), "--hidden": (["--hidden", "6"], ", 6,"),
                  "--layers": (["--layers", "2"], "num_layers=2"), "--bidirectional": (["--bidirectional"],
                                                                                       "bidirectional=True"),
                  "--batch-first": (["--batch-first"], "batch_first=True"), "--no-bias": (["--no-bias"], "bias=False"),
                  "--seq-len": None, "--batch": None, "--lengths": None},
}


def test_every_option_listed_is_known_to_this_test():
    """A new option must come with a way to see it act (here or in test_options_act)."""
    for command in cli.COMMANDS:
        assert _options(command), command
    assert _options("demo") == {"--backend", "--seed", "--debug"}  # --dtype and --out did nothing there: gone
    assert _options("gradcheck") >= {"--cell", "--lengths"} and "--dtype" not in _options("gradcheck")
    assert "--backend" not in _options("gradflow") and "--dtype" not in _options("gradflow")
    assert {"--seed", "--dtype", "--out"} <= _options("bench")


def _seeded_values(argv, tmp_path):
    status, out, err = run_inline(*argv)
    assert status == 0, err
    return out


@pytest.mark.slow
def test_options_act(tmp_path):
    """Each option changes what the command does (compared with the same command without it)."""
    base = _seeded_values(["gradcheck", "--cell", "gru"], tmp_path)
    for flag, (extra, expected) in ((f, v) for f, v in ACTS["gradcheck"].items() if v):
        out = _seeded_values(["gradcheck", "--cell", "gru", *extra], tmp_path)
        assert expected in out.splitlines()[0], (flag, out.splitlines()[0])
    assert _seeded_values(["gradcheck", "--cell", "gru", "--seed", "3"], tmp_path) != base  # --seed
    assert _seeded_values(["gradcheck", "--cell", "gru", "--seq-len", "3"], tmp_path) != base
    assert _seeded_values(["gradcheck", "--cell", "gru", "--batch", "2"], tmp_path) != base
    assert _seeded_values(["gradcheck", "--cell", "gru", "--lengths", "5", "2", "4"], tmp_path) != base
    assert _seeded_values(["demo", "--seed", "1"], tmp_path) != _seeded_values(["demo"], tmp_path)
    sine = ["sine", "--epochs", "2", "--windows", "60", "--horizon", "5", "--out", str(tmp_path)]
    ref = _seeded_values(sine, tmp_path)
    for extra in (["--seed", "1"], ["--cell", "lstm"], ["--hidden", "8"], ["--lr", "0.02"], ["--batch-size", "8"],
                  ["--window", "12"], ["--forecast-state", "carry"], ["--dtype", "float64"], ["--preset", "seed"]):
        assert _seeded_values([*sine, *extra], tmp_path) != ref, extra
    assert "Epoch 0" in ref and "Epoch 0" not in _seeded_values([*sine, "--no-progress"], tmp_path)
    out_dir = tmp_path / "elsewhere"
    _seeded_values([*sine, "--out", str(out_dir)], tmp_path)
    assert (out_dir / "sine_forecast.png").exists()
    bench = ["bench", "--quick", "--sizes", "tiny", "--cells", "gru", "--sweep-max", "0", "--backends", "numpy",
             "--repeat", "1", "--no-progress", "--out", str(tmp_path), "--name", "a"]
    _seeded_values(bench, tmp_path)
    _seeded_values([*bench[:-1], "b", "--seed", "5"], tmp_path)
    import json

    a, b = (json.loads((tmp_path / f"bench_{n}.json").read_text()) for n in "ab")
    assert (a["seed"], b["seed"]) == (0, 5)


def test_cell_names_on_the_command_line_are_any_case_and_one_cell_is_timed_once():
    """`--cell LN_LSTM` is accepted as the library accepts it (hostile probe of issue 25: argparse refused it), and
    `bench --cells` with a cell's aliases times that cell once, under its canonical name."""
    from rnn_scratch import benchmark
    from rnn_scratch.functional import CELLS

    parser = cli.build_parser()
    cell = next(c for c in CELLS.values() if c.aliases)  # a cell with names besides its own
    assert parser.parse_args(["gradcheck", "--cell", cell.aliases[0].upper()]).cell == cell.aliases[0]
    args = parser.parse_args(["bench", "--cells", *cell.aliases, cell.name.title(), cell.name])
    result = benchmark.run(sizes=["tiny"], cells=args.cells, backends=["numpy"], sweep_max=0, quick=True, repeat=1,
                           show_progress=False)
    assert [row["cell"] for row in result["rows"]] == [cell.name]
    with pytest.raises(SystemExit):
        parser.parse_args(["gradcheck", "--cell", "elman"])


def test_results_record_the_command_as_run_through_the_benchmarks_script(tmp_path):
    """benchmarks/run.py passes its arguments to `bench`; the recorded command dropped the first of them
    (`--quick`), since it was read from sys.argv[2:] as if `bench` were there."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "run.py"), "--quick", "--sizes", "tiny",
                        "--cells", "rnn", "--backends", "numpy", "--sweep-max", "0", "--repeat", "1", "--no-progress",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr
    command = json.loads((tmp_path / "bench_cpu.json").read_text())["command"]
    assert command.startswith("python -m rnn_scratch bench --quick --sizes tiny --cells rnn")
    assert str(tmp_path) in command


def test_the_main_job_runs_without_the_test_extras(tmp_path):
    """The README's main-job line installs only the [plot] extra. Building the parser imported the property
    suite (for its choices), which needs hypothesis, so `python -m rnn_scratch sine` died with a traceback on a
    clean install. In a process where hypothesis cannot be imported: sine runs, and `properties` says in one
    line what it needs."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    block = "import sys; sys.modules['hypothesis'] = None; from rnn_scratch.cli import main; "
    run = [sys.executable, "-c", block + "sys.exit(main(sys.argv[1:]))"]
    r = subprocess.run([*run, "sine", "--epochs", "1", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=300, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
    r = subprocess.run([*run, "properties", "torch.nn:GRU", "--adapter", "torch"], capture_output=True, text=True,
                       timeout=300, cwd=root, env={**os.environ, "PYTHONPATH": root})
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode not in (0, 1) and len(lines) == 1 and "needs hypothesis, which is not installed" in lines[0]
