"""The NumPy runtime's batch-1 decode step in one C call (decode.c): every layer, the final norm and
the head, with the weights the runtime holds (float32 and every quantized Form, multiplied as
kernels.matmul would) and its KV cache.

The addresses of every weight are gathered once, when the model loads, into C structs (Matrix,
LayerWeights, ModelWeights below mirror decode.c's), so a token costs one ctypes call instead of ~20
NumPy calls and ~7 kernel calls per layer. `DecodeStep.build` returns None where the C step does not
apply (no compiler, or a matrix the kernels do not multiply, such as W8A8's int8_gemm.Matrix): the
runtime's Python forward pass then runs, as it does for prefill; it is also the reference the
step's numbers are tested against.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.quantize import kernels
from tinylm.quantize.blocks import Form

_p, _i = ctypes.c_void_p, ctypes.c_int
KINDS = {"f32": 0, "q8": 1, "q4": 2, "int8": 3}  # decode.c's MAT_*
MLPS = {"swiglu": 0, "tanh": 1, "exact": 2}  # decode.c's MLP_*: SwiGLU, or GELU by its form


class Matrix(ctypes.Structure):
    _fields_ = [("kind", _i), ("bits", _i), ("group", _i), ("n", _i), ("m", _i), ("offset", ctypes.c_float),
                ("q", _p), ("scale", _p), ("mins", _p), ("lut", _p), ("bias", _p)]  # fmt: skip


class LayerWeights(ctypes.Structure):
    _fields_ = [("attn_norm", _p), ("attn_norm_bias", _p), ("mlp_norm", _p), ("mlp_norm_bias", _p),
                ("wqkv", Matrix), ("wo", Matrix), ("w1", Matrix), ("w2", Matrix)]  # fmt: skip


class ModelWeights(ctypes.Structure):
    _fields_ = [("dim", _i), ("n_layers", _i), ("n_heads", _i), ("kv_heads", _i), ("head_dim", _i),
                ("context", _i), ("rmsnorm", _i), ("mlp", _i), ("eps", ctypes.c_double),
                ("tok_emb", _p), ("pos_emb", _p), ("rotation", _p), ("norm", _p), ("norm_bias", _p),
                ("head", Matrix), ("layers", _p)]  # fmt: skip


class DecodeStep:
    """One token of one cache row through the whole model: `step(token, pos, row, k_cache, v_cache,
    threads)` -> logits (1, vocab), the token's keys and values written at `pos` of cache row `row`."""

    def __init__(self, lib: ctypes.CDLL, model: Any, kinds: list[str]):
        cfg = self.config = model.config
        self.lib, self.kinds = lib, kinds
        self.keep: list[np.ndarray] = []  # arrays made here, whose addresses the structs hold
        kinds_left = iter(kinds)
        self.layers = (LayerWeights * cfg.n_layers)()
        for layer, c in zip(model.layers, self.layers, strict=True):
            c.attn_norm, c.attn_norm_bias = map(self.address, layer.attn_norm)
            c.mlp_norm, c.mlp_norm_bias = map(self.address, layer.mlp_norm)
            c.wqkv = self.matrix(layer.wqkv, layer.bqkv, next(kinds_left))
            c.wo = self.matrix(layer.wo, layer.bo, next(kinds_left))
            c.w1 = self.matrix(layer.w1, layer.b1, next(kinds_left))
            c.w2 = self.matrix(layer.w2, layer.b2, next(kinds_left))
        rotation = getattr(model, "rotation", None) if cfg.positions == "rope" else None
        self.model = ModelWeights(
            dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim,
            context=cfg.context_length, rmsnorm=int(cfg.norm == "rmsnorm"),
            mlp=MLPS["swiglu" if cfg.mlp == "swiglu" else cfg.gelu], eps=cfg.norm_eps,
            tok_emb=self.address(model.tok_emb), pos_emb=self.address(model.pos_emb),
            rotation=self.address(None if rotation is None else rotation.view(np.float32)),
            norm=self.address(model.norm_w[0]), norm_bias=self.address(model.norm_w[1]),
            head=self.matrix(model.head, None, next(kinds_left)), layers=ctypes.addressof(self.layers),
        )  # fmt: skip
        self.where = ctypes.addressof(self.model)
        self.vocab = model.head.shape[0]
        self.room_for(kernels.default_threads())

    def room_for(self, threads: int) -> None:
        """Scratch for up to `threads` threads (each has its own share), 64-byte aligned at `scratch_at`."""
        self.threads = threads
        self.scratch = np.empty(self.lib.decode_scratch_bytes(self.where, threads) + 64, dtype=np.uint8)
        self.scratch_at = -self.scratch.ctypes.data % 64 + self.scratch.ctypes.data

    @classmethod
    def build(cls, model: Any) -> DecodeStep | None:
        """The C step for `model` (a tinylm.runtime.NumpyModel, which imports this module), or None where it does not apply (see the module's docstring)."""
        lib = kernels.library()
        matrices = [m for layer in model.layers for m in (layer.wqkv, layer.wo, layer.w1, layer.w2)] + [model.head]
        kinds = [kernels.product_kind(m, model.activations) for m in matrices]
        if lib is None or None in kinds:
            return None
        return cls(lib, model, kinds)  # type: ignore[arg-type]

    def address(self, a: np.ndarray | None) -> int | None:
        if a is None:
            return None
        a = np.ascontiguousarray(a, dtype=np.float32)
        self.keep.append(a)
        return a.ctypes.data

    def matrix(self, w: np.ndarray | Form, bias: np.ndarray | None, kind: str) -> Matrix:
        m, n = w.shape
        if isinstance(w, np.ndarray):
            return Matrix(KINDS[kind], 32, 0, n, m, 0.0, self.address(w), None, None, None, self.address(bias))
        q, scale, mins, lut = w.addresses
        return Matrix(KINDS[kind], w.bits, w.group, n, m, w.offset, q, scale, mins, lut, self.address(bias))

    def __call__(self, token: int, pos: int, row: int, k_cache: np.ndarray, v_cache: np.ndarray,
                 threads: int) -> np.ndarray:  # fmt: skip
        if not 0 <= token < self.config.vocab_size:
            raise TinyLMError(f"token {token} is not in the vocabulary of {self.config.vocab_size}")
        if threads > self.threads:
            self.room_for(threads)
        logits = np.empty((1, self.vocab), dtype=np.float32)
        self.lib.decode_step(self.where, logits.ctypes.data, k_cache.ctypes.data, v_cache.ctypes.data,
                             k_cache.shape[1], row, token, pos, self.scratch_at, threads)  # fmt: skip
        return logits
