"""Character-level LSTM on Shakespeare's sonnets (shipped in rnn_scratch/data), then samples at two temperatures.

Run:  python examples/char_rnn.py [--epochs 40] [--backend numpy|cupy] [--out out]
"""

import argparse

import numpy as np

from rnn_scratch.charlm import train_char_lm

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=40)
parser.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: CuPy if a GPU is usable")
parser.add_argument("--out", default="out")
args = parser.parse_args()

# The same trainer as `python -m rnn_scratch char`: embedding -> LSTM -> linear -> softmax cross-entropy,
# random windows of 48 characters, Adam, gradient clipping at norm 5.
result = train_char_lm(cell="lstm", hidden=128, seq_len=48, batch_size=32, epochs=args.epochs, lr=5e-3,
                       temperature=0.7, sample_len=200, seed=0, backend=args.backend, out=args.out)
print(result["report"])

model, chars = result["model"], result["vocab"]
index = {c: i for i, c in enumerate(chars)}
rng = np.random.default_rng(1)
for temperature in (0.3, 1.0):
    ids = model.sample([index[c] for c in "Love "], 120, temperature, rng)
    print(f"\n--- temperature {temperature} ---\nLove " + "".join(chars[i] for i in ids))
