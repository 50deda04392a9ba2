"""The RNN types, each a :class:`~rnn_scratch.layers.Module` with ``forward`` and a hand-written ``backward``.

All models take batch-first inputs. ``cell`` is a registered cell name or alias (``functional.cell_choices()``,
e.g. ``"rnn_tanh"``, alias ``"rnn"``). States are tuples, ``(h,)`` or ``(h, c)``, as
everywhere inside the package (the layers' ``forward_states`` / ``backward_states``).

| model                      | shape of the mapping                       | backward path                          |
| -------------------------- | ------------------------------------------ | -------------------------------------- |
| ManyToOneRegressor         | sequence -> vector (last step's state)     | head -> dh_n of the top layer          |
| ManyToManyTagger           | sequence -> one output per step            | head at every step -> dout             |
| OneToManyGenerator         | vector -> sequence (vector sets h0)        | dout -> dh0 -> tanh -> init layer      |
| EncoderDecoder             | sequence -> sequence (state hand-over)     | decoder dh0/dc0 -> encoder dh_n/dc_n   |
| BidirectionalClassifier    | sequence -> class (both final states)      | head -> dh_n of both directions        |
| CharLM                     | tokens -> next-token logits (+ sampling)   | head -> dout -> embedding scatter      |
"""

from __future__ import annotations

import numpy as np

from .backend import default_rng
from .layers import Embedding, Linear, Module, layer_call, make_layer


def make_recurrent(cell, input_size, hidden_size, **kw):
    """The recurrent layer for a cell name (:func:`rnn_scratch.layers.make_layer`); models use batch_first=True."""
    kw.setdefault("batch_first", True)
    return make_layer(cell, input_size, hidden_size, **kw)


def _recurrent_spec(name, cell, input_size, hidden_size, **kw):
    """The ``children_spec`` entry of a :func:`make_recurrent` child (the seed does not shape anything)."""
    kw.setdefault("batch_first", True)
    return (name, *layer_call(cell, input_size, hidden_size, **kw))


def _directions(kw):
    return 2 if kw.get("bidirectional", False) else 1


def top_features(layer, h_n):
    """The top layer's final hidden state, both directions concatenated: (B, H * num_directions)."""
    D = layer.num_directions
    return h_n[-1] if D == 1 else layer.xp.concatenate(list(h_n[-D:]), axis=1)


def top_features_grad(layer, dfeat, h_shape):
    """Backward of :func:`top_features`: the state-gradient tuple for ``layer.backward_states``."""
    D, H = layer.num_directions, layer.hidden_size
    dh_n = layer.xp.zeros(h_shape, dtype=dfeat.dtype)
    dh_n[-D:] = dfeat.reshape(-1, D, H).transpose(1, 0, 2)
    return (dh_n,)


def _common(kw):
    return {k: kw[k] for k in ("dtype", "backend") if k in kw}


def _add_rnn_and_head(model, seed, cell, input_size, hidden_size, out_features, **kw):
    """``model.rnn`` (a :func:`make_recurrent` layer) and ``model.head`` (Linear from its top features to
    ``out_features``), seeded in that order from ``seed``."""
    rng = default_rng(seed)
    model.rnn = model.add_child("rnn", make_recurrent(cell, input_size, hidden_size, seed=int(rng.integers(2**31)),
                                                      **kw))
    model.head = model.add_child("head", Linear(hidden_size * model.rnn.num_directions, out_features,
                                                seed=int(rng.integers(2**31)), **_common(kw)))


def _rnn_and_head_spec(a, out_features, **rnn_kw):
    """``children_spec`` of :func:`_add_rnn_and_head` from a bound config ``a``."""
    kw = {**rnn_kw, **a["kw"]}
    return [_recurrent_spec("rnn", a["cell"], a["input_size"], a["hidden_size"], seed=None, **kw),
            ("head", Linear, (a["hidden_size"] * _directions(kw), out_features), _common(kw))]


class ManyToOneRegressor(Module):
    """Recurrent layer + linear head on the top layer's final state: ``y = W h_T + b``.

    This is the forecasting model: a window of a series in, the next value(s) out.
    """

    def __init__(self, cell="rnn", input_size=1, hidden_size=50, output_size=1, num_layers=1, seed=None, **kw):
        super().__init__(**_common(kw))
        _add_rnn_and_head(self, seed, cell, input_size, hidden_size, output_size, num_layers=num_layers, **kw)

    @classmethod
    def children_spec(cls, a):
        return _rnn_and_head_spec(a, a["output_size"], num_layers=a["num_layers"])

    def forward(self, x, lengths=None):
        return self.forward_with_state(x, lengths=lengths)[0]

    def forward_with_state(self, x, state=None, lengths=None):
        """``y`` and the recurrent layer's final state tuple, starting from ``state`` (None: zeros).

        What a forecast that carries the hidden state from call to call needs; backward as after forward.
        """
        _, final = self.rnn.forward_states(x, state, lengths=lengths)
        h_n = final[0]
        self._save_for_backward(h_shape=h_n.shape)
        return self.head(top_features(self.rnn, h_n)), final

    def backward(self, dy):
        dx, _ = self.rnn.backward_states(None, top_features_grad(self.rnn, self.head.backward(dy),
                                                                        self._saved()["h_shape"]))
        return dx


class ManyToManyTagger(Module):
    """A label (or value) per step: ``y_t = W out_t + b``; bidirectional lets step t see the future."""

    def __init__(self, cell="lstm", input_size=1, hidden_size=32, num_classes=2, num_layers=1, bidirectional=False,
                 seed=None, **kw):
        super().__init__(**_common(kw))
        _add_rnn_and_head(self, seed, cell, input_size, hidden_size, num_classes, num_layers=num_layers,
                          bidirectional=bidirectional, **kw)

    @classmethod
    def children_spec(cls, a):
        return _rnn_and_head_spec(a, a["num_classes"], num_layers=a["num_layers"], bidirectional=a["bidirectional"])

    def forward(self, x, lengths=None):
        out, _ = self.rnn(x, lengths=lengths)
        return self.head(out)

    def backward(self, dlogits):
        dx, _ = self.rnn.backward(self.head.backward(dlogits))
        return dx


class OneToManyGenerator(Module):
    """A vector ``v`` sets the initial state, ``h0 = tanh(W_init v + b_init)``; the sequence unrolls from it.

    With ``feedback=False`` (default) every step's input is zero: the whole sequence unrolls from the
    state ``v`` set, and training and generation compute the same thing. With ``feedback=True`` step t's
    input is the previous output value (teacher forcing in training: the previous target; generation:
    the model's own previous prediction), zero at the first step.
    """

    def __init__(self, cell="gru", cond_size=2, hidden_size=32, output_size=1, feedback=False, seed=None, **kw):
        super().__init__(**_common(kw))
        rng = default_rng(seed)
        self.output_size = output_size
        self.feedback = bool(feedback)
        self.init = self.add_child("init", Linear(cond_size, hidden_size, seed=int(rng.integers(2**31)),
                                                  **_common(kw)))
        self.rnn = self.add_child("rnn", make_recurrent(cell, output_size, hidden_size,
                                                        seed=int(rng.integers(2**31)), **kw))
        self.head = self.add_child("head", Linear(hidden_size, output_size, seed=int(rng.integers(2**31)),
                                                  **_common(kw)))

    @classmethod
    def children_spec(cls, a):
        kw = a["kw"]
        return [("init", Linear, (a["cond_size"], a["hidden_size"]), _common(kw)),
                _recurrent_spec("rnn", a["cell"], a["output_size"], a["hidden_size"], seed=None, **kw),
                ("head", Linear, (a["hidden_size"], a["output_size"]), _common(kw))]

    def _state(self, v):
        """(h0,): the initial hidden state; an LSTM's c0 is zero."""
        h0 = self.xp.tanh(self.init(v))[None]
        self._save_for_backward(h0=h0)
        return (h0,)

    def forward(self, v, targets):
        """Teacher-forced: targets (B, T, output_size); returns predictions of the same shape."""
        x = self.xp.zeros_like(targets)
        if self.feedback:
            x[:, 1:] = targets[:, :-1]
        out, _ = self.rnn.forward_states(x, self._state(v))
        return self.head(out)

    def backward(self, dy):
        _, (dh0, *_) = self.rnn.backward_states(self.head.backward(dy))
        self.init.backward(dh0[0] * (1 - self._saved()["h0"][0] ** 2))

    def generate(self, v, steps):
        """Free-running: each step's prediction is the next step's input. Returns (B, steps, output_size)."""
        state = self._state(v)
        x = self.xp.zeros((v.shape[0], 1, self.output_size), dtype=self.dtype)
        outs = []
        for _ in range(steps):
            out, state = self.rnn.forward_states(x, state)
            y = self.head(out)
            outs.append(y)
            if self.feedback:
                x = y
        return self.xp.concatenate(outs, axis=1)


class EncoderDecoder(Module):
    """Sequence to sequence: the encoder's final state (h, and c for the LSTM) starts the decoder.

    Training uses teacher forcing (the decoder reads ``bos`` + target[:-1]); :meth:`greedy_decode`
    feeds back the arg-max token.
    """

    def __init__(self, cell="gru", src_vocab=12, tgt_vocab=12, embed_size=16, hidden_size=64, num_layers=1,
                 seed=None, **kw):
        super().__init__(**_common(kw))
        rng = default_rng(seed)

        def s():
            return int(rng.integers(2**31))

        self.src_embed = self.add_child("src_embed", Embedding(src_vocab, embed_size, seed=s(), **_common(kw)))
        self.tgt_embed = self.add_child("tgt_embed", Embedding(tgt_vocab, embed_size, seed=s(), **_common(kw)))
        self.encoder = self.add_child("encoder", make_recurrent(cell, embed_size, hidden_size, num_layers=num_layers,
                                                                seed=s(), **kw))
        self.decoder = self.add_child("decoder", make_recurrent(cell, embed_size, hidden_size, num_layers=num_layers,
                                                                seed=s(), **kw))
        self.head = self.add_child("head", Linear(hidden_size, tgt_vocab, seed=s(), **_common(kw)))

    @classmethod
    def children_spec(cls, a):
        kw, E, H = a["kw"], a["embed_size"], a["hidden_size"]
        return [("src_embed", Embedding, (a["src_vocab"], E), _common(kw)),
                ("tgt_embed", Embedding, (a["tgt_vocab"], E), _common(kw)),
                _recurrent_spec("encoder", a["cell"], E, H, num_layers=a["num_layers"], seed=None, **kw),
                _recurrent_spec("decoder", a["cell"], E, H, num_layers=a["num_layers"], seed=None, **kw),
                ("head", Linear, (H, a["tgt_vocab"]), _common(kw))]

    def encode(self, src, src_lengths=None):
        """The encoder's final state tuple."""
        _, state = self.encoder.forward_states(self.src_embed(src), lengths=src_lengths)
        return state

    def forward(self, src, tgt_in, src_lengths=None):
        """src (B, S) ints, tgt_in (B, T) ints (bos + target[:-1]) -> logits (B, T, tgt_vocab)."""
        state = self.encode(src, src_lengths)
        out, _ = self.decoder.forward_states(self.tgt_embed(tgt_in), state)
        return self.head(out)

    def backward(self, dlogits):
        dx_dec, dstate0 = self.decoder.backward_states(self.head.backward(dlogits))
        self.tgt_embed.backward(dx_dec)
        dx_enc, _ = self.encoder.backward_states(None, dstate0)  # the decoder's initial state was the encoder's final
        self.src_embed.backward(dx_enc)

    def greedy_decode(self, src, bos, steps, src_lengths=None):
        state = self.encode(src, src_lengths)
        token = self.xp.full((src.shape[0], 1), bos, dtype=src.dtype)
        outs = []
        for _ in range(steps):
            out, state = self.decoder.forward_states(self.tgt_embed(token), state)
            token = self.head(out).argmax(axis=-1).astype(src.dtype)
            outs.append(token)
        return self.xp.concatenate(outs, axis=1)


class BidirectionalClassifier(ManyToOneRegressor):
    """One class per sequence from both directions' final states: ``y = W [h_fwd_T ; h_bwd_1] + b``.

    The regressor's forward and backward with ``bidirectional=True`` and logits for a head.
    """

    def __init__(self, cell="gru", input_size=1, hidden_size=32, num_classes=2, num_layers=1, seed=None, **kw):
        super().__init__(cell, input_size, hidden_size, num_classes, num_layers=num_layers, seed=seed,
                         bidirectional=True, **kw)

    @classmethod
    def children_spec(cls, a):
        return ManyToOneRegressor.children_spec({**a, "output_size": a["num_classes"],
                                                 "kw": dict(bidirectional=True, **a["kw"])})


class CharLM(Module):
    """Character-level language model: embedding -> recurrent layers -> logits over the vocabulary."""

    def __init__(self, vocab_size, cell="lstm", embed_size=32, hidden_size=128, num_layers=1, dropout=0.0,
                 seed=None, **kw):
        super().__init__(**_common(kw))
        rng = default_rng(seed)
        self.vocab_size = vocab_size
        self.embed = self.add_child("embed", Embedding(vocab_size, embed_size, seed=int(rng.integers(2**31)),
                                                       **_common(kw)))
        self.rnn = self.add_child("rnn", make_recurrent(cell, embed_size, hidden_size, num_layers=num_layers,
                                                        dropout=dropout, seed=int(rng.integers(2**31)), **kw))
        self.head = self.add_child("head", Linear(hidden_size, vocab_size, seed=int(rng.integers(2**31)),
                                                  **_common(kw)))

    @classmethod
    def children_spec(cls, a):
        kw = a["kw"]
        return [("embed", Embedding, (a["vocab_size"], a["embed_size"]), _common(kw)),
                _recurrent_spec("rnn", a["cell"], a["embed_size"], a["hidden_size"], num_layers=a["num_layers"],
                                dropout=a["dropout"], seed=None, **kw),
                ("head", Linear, (a["hidden_size"], a["vocab_size"]), _common(kw))]

    def forward(self, idx, state=None):
        """idx (B, T) ints, state None or a tuple -> (logits (B, T, vocab), final state tuple)."""
        out, state = self.rnn.forward_states(self.embed(idx), state)
        return self.head(out), state

    def backward(self, dlogits):
        dx, _ = self.rnn.backward_states(self.head.backward(dlogits))
        self.embed.backward(dx)

    def sample(self, prefix, length, temperature=1.0, rng=None):
        """Continue ``prefix`` (list of ints) by ``length`` tokens drawn from softmax(logits / temperature)."""
        from .losses import softmax

        rng = rng or np.random.default_rng()
        was_training = self.training
        self.eval()
        idx = self.xp.asarray(np.asarray(prefix, dtype=np.int64)[None])
        logits, state = self(idx)
        out = []
        for _ in range(length):
            p = np.asarray(softmax(logits[0, -1].astype(np.float64) / max(temperature, 1e-6)).tolist())
            token = int(rng.choice(len(p), p=p / p.sum()))
            out.append(token)
            logits, state = self(self.xp.asarray(np.array([[token]])), state)
        self.train(was_training)
        return out
