"""Benchmark the recurrent kernel on every backend present; results go to benchmarks/results/.

    python benchmarks/run.py                 # the full grid and the hidden-size sweep
    python benchmarks/run.py --quick         # CI-sized
    python -m rnn_scratch bench --help       # the same harness, all options
"""

import os
import sys

from rnn_scratch.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", os.path.join(HERE, "results")]
    sys.exit(main(["bench", *args]))
