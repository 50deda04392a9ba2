"""Character-level language modelling: text -> vocabulary -> batches -> CharLM training -> samples."""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .backend import to_backend
from .losses import softmax_cross_entropy
from .models import CharLM
from .optim import Adam, clip_grad_norm
from .plots import plot_loss
from .progress import progress


def default_text():
    return resources.files("rnn_scratch.data").joinpath("sonnets.txt").read_text(encoding="utf-8")


def build_vocab(text):
    chars = sorted(set(text))
    return chars, {c: i for i, c in enumerate(chars)}


def char_batches(ids, seq_len, batch_size, rng):
    """Random windows: inputs ids[s:s+T], targets ids[s+1:s+T+1]."""
    starts = rng.integers(0, len(ids) - seq_len - 1, size=batch_size)
    idx = starts[:, None] + np.arange(seq_len)[None, :]
    return ids[idx], ids[idx + 1]


def train_char_lm(args):
    text = default_text() if args.text is None else open(args.text, encoding="utf-8").read()
    chars, index = build_vocab(text)
    ids = np.array([index[c] for c in text], dtype=np.int64)
    rng = np.random.default_rng(args.seed)
    model = CharLM(len(chars), cell=args.cell, hidden_size=args.hidden, seed=args.seed, dtype=args.dtype,
                   backend=args.backend)
    opt = Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = max(1, len(ids) // (args.seq_len * args.batch_size))
    losses = []
    bar = progress(range(args.epochs), desc="char", disable=args.no_progress)
    for _ in bar:
        total = 0.0
        for _ in range(steps_per_epoch):
            xb, yb = (to_backend(a, model.backend) for a in char_batches(ids, args.seq_len, args.batch_size, rng))
            opt.zero_grad()
            logits, _ = model(xb)
            loss, dlogits = softmax_cross_entropy(logits, yb)
            model.backward(dlogits)
            clip_grad_norm(opt.params, 5.0)
            opt.step()
            total += loss
        losses.append(total / steps_per_epoch)
        bar.set(loss=losses[-1])
    prefix = "Shall I "
    sample = model.sample([index.get(c, 0) for c in prefix], args.sample_len, args.temperature, rng)
    text_out = prefix + "".join(chars[i] for i in sample)
    path = plot_loss(os.path.join(args.out, "char_loss.png"), losses, title=f"char-level {args.cell}",
                     ylabel="cross-entropy (nats/char)")
    report = (f"{len(text)} characters, vocabulary {len(chars)}; {args.cell} hidden {args.hidden}, "
              f"{model.num_parameters()} parameters\n"
              f"loss: {losses[0]:.3f} -> {losses[-1]:.3f} nats/char (uniform would be {np.log(len(chars)):.3f})\n"
              f"sample (temperature {args.temperature}):\n{text_out}\n\nwrote {path}")
    return {"losses": losses, "sample": text_out, "report": report, "model": model}
