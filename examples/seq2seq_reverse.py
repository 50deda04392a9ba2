"""Encoder-decoder learns to reverse digit strings: "30417" -> "71403".

The encoder's final state is all the decoder gets: the whole string must pass through it.
Training uses teacher forcing; evaluation decodes greedily, feeding back its own tokens.

Run:  python examples/seq2seq_reverse.py [--epochs 30] [--backend numpy|cupy] [--out out]
"""

import argparse
import os

import numpy as np

import rnn_scratch as rs
from rnn_scratch.losses import softmax_cross_entropy
from rnn_scratch.models import EncoderDecoder
from rnn_scratch.optim import Adam, clip_grad_norm
from rnn_scratch.plots import plot_curves
from rnn_scratch.progress import progress

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--length", type=int, default=5)
parser.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: CuPy if a GPU is usable")
parser.add_argument("--out", default="out")
args = parser.parse_args()

BOS, VOCAB = 10, 11  # digits 0-9 and a begin-of-sequence token
rng = np.random.default_rng(0)


model = EncoderDecoder("gru", src_vocab=VOCAB, tgt_vocab=VOCAB, embed_size=16, hidden_size=96, seed=0,
                       backend=args.backend)


def batch(n):
    """(source, decoder input with BOS, target), integer arrays on the model's backend."""
    src = rng.integers(0, 10, size=(n, args.length))
    tgt = src[:, ::-1].copy()
    tgt_in = np.concatenate([np.full((n, 1), BOS), tgt[:, :-1]], axis=1)  # teacher forcing input
    return tuple(rs.to_backend(a, model.backend) for a in (src, tgt_in, tgt))


opt = Adam(model.parameters(), lr=1e-2)
test_src, _, test_tgt = batch(500)
losses, accuracies = [], []
with progress(range(args.epochs), desc="seq2seq") as bar:
    for _ in bar:
        for _ in range(20):
            src, tgt_in, tgt = batch(64)
            opt.zero_grad()
            loss, dlogits = softmax_cross_entropy(model(src, tgt_in), tgt)
            model.backward(dlogits)
            clip_grad_norm(opt.params, 5.0)
            opt.step()
        losses.append(loss)
        pred = model.greedy_decode(test_src, BOS, args.length)
        accuracies.append(float((pred == test_tgt).all(axis=1).mean()))
        bar.set(loss=loss, acc=accuracies[-1])
test_src, test_tgt, pred = (rs.to_numpy(a) for a in (test_src, test_tgt, pred))

print(f"greedy decoding, whole-string accuracy on 500 unseen strings: {accuracies[-1]:.1%}; "
      f"per-digit: {float((pred == test_tgt).mean()):.1%}")
for s, p in zip(test_src[:3], pred[:3]):
    print("".join(map(str, s)), "->", "".join(map(str, p)))
path = os.path.join(args.out, "example_seq2seq.png")
plot_curves({"loss": losses, "accuracy": accuracies}, title="reversing digit strings", path=path)
print("wrote", path)
