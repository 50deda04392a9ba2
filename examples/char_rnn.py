"""Character-level LSTM on Shakespeare's sonnets (shipped in rnn_scratch/data), then samples at two temperatures.

Run:  python examples/char_rnn.py [--epochs 40] [--out out]
"""

import argparse

from rnn_scratch.charlm import train_char_lm

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=40)
parser.add_argument("--out", default="out")
args = parser.parse_args()

# The same trainer as `python -m rnn_scratch char`: embedding -> LSTM -> linear -> softmax cross-entropy,
# random windows of 48 characters, Adam, gradient clipping at norm 5.
settings = argparse.Namespace(text=None, cell="lstm", hidden=128, seq_len=48, batch_size=32, epochs=args.epochs,
                              lr=5e-3, temperature=0.7, sample_len=200, no_progress=False, seed=0,
                              dtype="float32", backend=None, out=args.out)
result = train_char_lm(settings)
print(result["report"])

model, rng = result["model"], __import__("numpy").random.default_rng(1)
from rnn_scratch.charlm import build_vocab, default_text

chars, index = build_vocab(default_text())
for temperature in (0.3, 1.0):
    ids = model.sample([index[c] for c in "Love "], 120, temperature, rng)
    print(f"\n--- temperature {temperature} ---\nLove " + "".join(chars[i] for i in ids))
