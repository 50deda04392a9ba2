"""The simple layers: ``Linear`` and ``Embedding``, torch-shaped, with hand-written backward passes."""

from __future__ import annotations

import math

from .. import backend as be
from .. import memory as mem
from ..validation import check_array, check_positive_int
from .module import _GRAD_LOCK, Module


class _OwnParams(Module):
    """A module whose parameters are its own (no children): their shapes come from its constructor's arguments
    (:meth:`_shapes` of the bound config), priced and refused before anything is allocated."""

    @classmethod
    def _shapes(cls, config):
        raise NotImplementedError

    @classmethod
    def param_shapes(cls, *args, **kwargs):
        return cls._shapes(cls.bind_config(*args, **kwargs))

    @classmethod
    def param_count(cls, *args, **kwargs):
        return mem.shapes_count(cls.param_shapes(*args, **kwargs))

    def _check_fits(self, shapes, what):
        """MemoryError (naming the bytes) when ``shapes`` cannot be allocated: before any of them is."""
        mem.check_available(mem.param_bytes(*mem.shapes_count(shapes), self.dtype), f"{what}: the parameters",
                            self.backend)


class Linear(_OwnParams):
    """``y = x W^T + b`` over the last axis (any leading axes), ``torch.nn.Linear``-shaped.

    Backward: dx = dy W,  dW += dy^T x,  db += sum dy (over all leading axes).
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", backend=None, seed=None):
        super().__init__(dtype=dtype, backend=backend)
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self._check_fits(mem.linear_shapes(in_features, out_features, bias),
                         f"Linear({self.in_features}, {self.out_features})")
        rng = be.default_rng(seed)
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight", rng.uniform(-bound, bound, (out_features, in_features)))
        if bias:
            self.add_param("bias", rng.uniform(-bound, bound, (out_features,)))

    @classmethod
    def _shapes(cls, a):
        return mem.linear_shapes(a["in_features"], a["out_features"], bool(a["bias"]))

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={'bias' in self.params})"

    def forward(self, x):
        self._check_input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), got shape {tuple(x.shape)}")
        weight = self.params["weight"].copy()  # copies: the caller may change x or the weights before backward
        self._save_for_backward(x=x.copy(), weight=weight)
        y = x @ weight.T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dy):
        saved = self._saved()
        x = saved["x"]
        check_array(dy, "dy", backend=self.backend, dtype=self.dtype, shape=(*x.shape[:-1], self.out_features))
        dy2 = dy.reshape(-1, self.out_features)
        self._accumulate("weight", dy2.T @ x.reshape(-1, self.in_features))
        if "bias" in self.params:
            self._accumulate("bias", dy2.sum(axis=0))
        return dy @ saved["weight"]


class Embedding(_OwnParams):
    """Lookup table ``y = W[idx]``, ``torch.nn.Embedding``-shaped; W ~ N(0, 1).

    Backward scatters: dW[idx] += dy (repeated indices add up).
    """

    def __init__(self, num_embeddings, embedding_dim, dtype="float32", backend=None, seed=None):
        super().__init__(dtype=dtype, backend=backend)
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
        self._check_fits(mem.embedding_shapes(num_embeddings, embedding_dim), repr(self))
        self.add_param("weight", be.default_rng(seed).standard_normal((num_embeddings, embedding_dim)))

    @classmethod
    def _shapes(cls, a):
        return mem.embedding_shapes(a["num_embeddings"], a["embedding_dim"])

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def forward(self, idx):
        check_array(idx, "idx", backend=self.backend)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"idx must be an integer array, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            raise ValueError(f"idx values must lie in 0..{self.num_embeddings - 1}, "
                             f"got {int(idx.min())}..{int(idx.max())}")
        self._save_for_backward(idx=idx.copy())
        return self.params["weight"][idx]

    def backward(self, dy):
        idx = self._saved()["idx"]
        check_array(dy, "dy", backend=self.backend, dtype=self.dtype, shape=(*idx.shape, self.embedding_dim))
        with _GRAD_LOCK:
            self.xp.add.at(self.grads["weight"], idx.reshape(-1), dy.reshape(-1, self.embedding_dim))
        return None
