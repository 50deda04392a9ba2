"""A tagging task that needs the future: tag step t with 1 when x[t+2] > 0.

A unidirectional RNN at step t has not seen x[t+2] and can only guess (~50%); a bidirectional one
reads the sequence from both ends and can be right almost always. Both are trained the same way.

Run:  python examples/bidirectional_tagging.py [--epochs 25] [--backend numpy|cupy] [--out out]
"""

import argparse
import os

import numpy as np

import rnn_scratch as rs
from rnn_scratch.losses import softmax_cross_entropy
from rnn_scratch.models import ManyToManyTagger
from rnn_scratch.optim import Adam
from rnn_scratch.plots import plot_curves
from rnn_scratch.progress import progress

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=25)
parser.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: CuPy if a GPU is usable")
parser.add_argument("--out", default="out")
args = parser.parse_args()

T, LOOKAHEAD = 20, 2


def batch(n, backend):
    """Inputs (n, T, 1) and tags (n, T) on ``backend``: tag t is [x(t+2) > 0] (0 where t+2 is past the end)."""
    x = rng.standard_normal((n, T, 1)).astype("float32")
    future = np.concatenate([x[:, LOOKAHEAD:, 0], np.zeros((n, LOOKAHEAD), "float32")], axis=1)
    return rs.to_backend(x, backend), rs.to_backend((future > 0).astype(np.int64), backend)


curves = {}
for bidirectional in (False, True):
    name = "bidirectional" if bidirectional else "unidirectional"
    model = ManyToManyTagger("gru", 1, 24, num_classes=2, bidirectional=bidirectional, seed=0, backend=args.backend)
    rng = np.random.default_rng(0)  # both models see the same data
    test_x, test_y = batch(500, model.backend)
    opt = Adam(model.parameters(), lr=1e-2)
    acc = []
    with progress(range(args.epochs), desc=name) as bar:
        for _ in bar:
            for _ in range(10):
                x, y = batch(64, model.backend)
                opt.zero_grad()
                loss, dlogits = softmax_cross_entropy(model(x), y)
                model.backward(dlogits)
                opt.step()
            pred = model(test_x).argmax(-1)
            acc.append(float((pred[:, :-LOOKAHEAD] == test_y[:, :-LOOKAHEAD]).mean()))
            bar.set(acc=acc[-1])
    curves[name] = acc
    print(f"{name:>15}: per-step accuracy {acc[-1]:.1%}")
path = os.path.join(args.out, "example_bidirectional.png")
plot_curves(curves, title="tag(t) = [x(t+2) > 0]", ylabel="test accuracy", path=path)
print("wrote", path)
