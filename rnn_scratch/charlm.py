"""Character-level language modelling: text -> vocabulary -> batches -> CharLM training -> samples."""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .backend import to_backend
from .losses import softmax_cross_entropy
from .memory import check_available
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


DEFAULT_PREFIX = "Shall I "


def train_char_lm(*, text=None, cell="lstm", hidden=128, seq_len=48, batch_size=32, epochs=40, lr=5e-3,
                  temperature=0.7, sample_len=300, prefix=None, seed=0, dtype="float32", backend=None,
                  out="out", show_progress=True):
    """Train a :class:`~rnn_scratch.models.CharLM` on ``text`` (default: the sonnets shipped in the package).

    Random windows of ``seq_len`` characters, softmax cross-entropy on the next character, Adam, gradient
    clipping at norm 5; then a sample of ``sample_len`` characters after ``prefix``: its characters must
    occur in the text (ValueError naming those that do not); None means "Shall I " when the text has
    all its characters, else the text's first 8 characters. Writes the loss plot under ``out`` (None:
    no plot). Returns {"losses", "sample", "report", "model", "vocab"}.
    """
    text = default_text() if text is None else text
    if len(text) < seq_len + 2:
        raise ValueError(f"seq_len={seq_len} needs a text of at least {seq_len + 2} characters, got {len(text)}")
    for name, value in (("hidden", hidden), ("seq_len", seq_len), ("batch_size", batch_size), ("epochs", epochs),
                        ("sample_len", sample_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    chars, index = build_vocab(text)
    if prefix is None:
        prefix = DEFAULT_PREFIX if set(DEFAULT_PREFIX) <= set(index) else text[:len(DEFAULT_PREFIX)]
    unknown = sorted(set(prefix) - set(index))
    if unknown or not prefix:
        raise ValueError(f"prefix must be a non-empty string of characters that occur in the text; {unknown} do not"
                         if unknown else "prefix must be a non-empty string")
    ids = np.array([index[c] for c in text], dtype=np.int64)
    rng = np.random.default_rng(seed)
    model = CharLM(len(chars), cell=cell, hidden_size=hidden, seed=seed, dtype=dtype, backend=backend)
    # one training step, priced before the first batch is drawn: indices and tokens, the recurrent layer's
    # forward + backward, and the embeddings, logits, probabilities and their gradients
    rows, V, E = batch_size * seq_len, len(chars), model.embed.embedding_dim
    check_available(32 * rows + model.rnn.bptt_bytes(seq_len, batch_size)
                    + model.dtype.itemsize * rows * (2 * E + 2 * hidden + 4 * V),
                    f"char: batch_size={batch_size} x seq_len={seq_len} (one training step)", model.backend)
    opt = Adam(model.parameters(), lr=lr)
    steps_per_epoch = max(1, len(ids) // (seq_len * batch_size))
    losses = []
    with progress(range(epochs), desc="char", disable=not show_progress) as bar:
        for _ in bar:
            total = 0.0
            for _ in range(steps_per_epoch):
                xb, yb = (to_backend(a, model.backend) for a in char_batches(ids, seq_len, batch_size, rng))
                opt.zero_grad()
                logits, _ = model(xb)
                loss, dlogits = softmax_cross_entropy(logits, yb)
                model.backward(dlogits)
                clip_grad_norm(opt.params, 5.0)
                opt.step()
                total += loss
            losses.append(total / steps_per_epoch)
            bar.set(loss=losses[-1])
    sample = model.sample([index[c] for c in prefix], sample_len, temperature, rng)
    text_out = prefix + "".join(chars[i] for i in sample)
    report = (f"{len(text)} characters, vocabulary {len(chars)}; {cell} hidden {hidden}, "
              f"{model.num_parameters()} parameters\n"
              f"loss: {losses[0]:.3f} -> {losses[-1]:.3f} nats/char (uniform would be {np.log(len(chars)):.3f})\n"
              f"sample (temperature {temperature}):\n{text_out}")
    if out is not None:
        path = os.path.join(out, "char_loss.png")
        plot_loss(losses, title=f"char-level {cell}", ylabel="cross-entropy (nats/char)", path=path)
        report += f"\n\nwrote {path}"
    return {"losses": losses, "sample": text_out, "report": report, "model": model, "vocab": chars}
