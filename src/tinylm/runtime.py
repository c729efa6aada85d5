"""Run a tinylm checkpoint with NumPy alone (no torch): llama2.c's run.c, as one NumPy module.

Reads a checkpoint directory (config.json, model.safetensors, tokenizer/) and generates text with
either model family:
  GPT-2:   learned positions, LayerNorm, GELU (tanh approximation), biases;
  Llama 2: RoPE on interleaved pairs (x[2i], x[2i+1]), RMSNorm, SwiGLU, grouped-query attention.
Everything is float32. The KV cache holds rows that generations own (the engine protocol of
`tinylm.generate.loop`); every row has its own position, so prompts of different lengths are
right-padded and a mask hides the cache positions a row has not written yet. Decoding one token is a few matrix products per layer, vectorised over
heads; a batch-1 decode step runs in one C call where the kernels compile (tinylm.quantize.decode, about
a quarter of a token's time saved on stories110M), and `forward` below, the general path, is its reference.
Sampling, stop handling and streaming are the torch-free pieces in `tinylm.generate`.

    from tinylm.generate import Generator            # the sampling loop runs on this engine
    gen = Generator.load("runs/stories15M", engine="numpy")
    print(gen.generate("Once upon a time", 50, temperature=0).text)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.config import CONFIG_FILE, ModelConfig, read_config
from tinylm.errors import TinyLMError
from tinylm.layout import check_tensors
from tinylm.quantize.blocks import Form
from tinylm.quantize.decode import DecodeStep
from tinylm.quantize.kernels import activations_from_env, attend_one, default_threads, in_large_pages, matmul
from tinylm.quantize.transform import numpy_forms

# ----------------------------------------------------------------------------------------------
# reading a checkpoint


def load_weights(path: Path, as_stored: bool = False) -> dict[str, np.ndarray]:
    """All tensors of model.safetensors, float ones as float32 arrays; with `as_stored`, every dtype as
    the file has it (a quantized checkpoint's float16 scales), except bfloat16, which NumPy lacks."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    wpath = path / "model.safetensors"
    if not wpath.is_file():
        raise TinyLMError(f"{wpath}: missing; the checkpoint has no weights")
    try:
        tensors = load_file(wpath)
    except TypeError:  # NumPy has no bfloat16: read the raw bits
        tensors = _load_bfloat16(wpath)
    except (SafetensorError, OSError, ValueError) as e:
        raise TinyLMError(
            f"{wpath}: truncated or corrupt safetensors file ({e}); restore it or re-save"
        ) from None
    if not as_stored:
        tensors = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    bad = next((k for k, v in tensors.items() if v.dtype.kind == "f" and not np.isfinite(v).all()), None)
    if bad is not None:
        raise TinyLMError(f"{wpath}: tensor {bad} holds NaN/inf values; the weights are damaged (use an earlier checkpoint)")
    return tensors


def _load_bfloat16(wpath: Path) -> dict[str, np.ndarray]:
    """safetensors layout: u64 header size, JSON header {name: {dtype, shape, data_offsets}}, data."""
    data = wpath.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    dtypes = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "BF16": np.dtype(np.uint16),
              "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8)}  # fmt: skip
    out = {}
    for name, info in header.items():
        dtype = dtypes[info["dtype"]]
        begin, end = info["data_offsets"]
        a = np.frombuffer(data, dtype, (end - begin) // dtype.itemsize, 8 + n + begin).reshape(info["shape"])
        if info["dtype"] == "BF16":  # a bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a
    return out


# ----------------------------------------------------------------------------------------------
# the transformer


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    x = x - x.mean(-1, keepdims=True)
    x *= 1.0 / np.sqrt(np.einsum("ij,ij->i", x, x)[:, None] / x.shape[-1] + eps)
    x *= w
    if b is not None:
        x += b
    return x


def rms_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    if x.shape[0] == 1:  # a decode step's one row: its scale as a number (3 us; the NumPy form below, 9 us)
        return x * (w * np.float32(1.0 / math.sqrt(float(np.dot(x[0], x[0])) / x.shape[-1] + eps)))
    scale = 1.0 / np.sqrt(np.einsum("ij,ij->i", x, x)[:, None] / x.shape[-1] + eps)
    return x * scale * w


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (NumPy has no erf): absolute error below 1.5e-7, fine for float32."""
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-a * a))


def gelu_exact(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x * np.float32(1.0 / math.sqrt(2.0))))


def swiglu(h: np.ndarray) -> np.ndarray:
    """silu(gate) * up, for h = [gate | up] from the fused w1/w3 projection."""
    half = h.shape[-1] // 2
    gate, up = h[..., :half], h[..., half:]  # (np.split costs more than the rest of this)
    return gate / (1.0 + np.exp(-gate)) * up


class Layer:
    """One block's weights. Each matrix is stored as the checkpoint has it, (out, in): our C kernel
    (tinylm.quantize.kernels) reads it row by row, one dot product per output; SwiGLU's gate and up
    projections are stacked into one matrix so they cost one product. A quantized matrix stays
    packed (a tinylm.quantize Form, (out, in)), its gate and up rows stacked the same way."""

    def __init__(self, w: dict[str, np.ndarray], i: int, cfg: ModelConfig, forms: dict[str, Form]):
        def get(name: str) -> np.ndarray | None:
            return w.get(f"layers.{i}.{name}")

        def matrix(*names: str) -> np.ndarray | Form:
            packed = [forms.get(f"layers.{i}.{n}") for n in names]
            if packed[0] is not None:
                return packed[0].rows(*packed[1:])  # type: ignore[arg-type]
            return np.ascontiguousarray(np.concatenate([get(n) for n in names]))

        def bias(*names: str) -> np.ndarray | None:
            return np.concatenate([get(n) for n in names]) if cfg.bias else None

        up = ("mlp.w1", "mlp.w3") if cfg.mlp == "swiglu" else ("mlp.w1",)
        self.attn_norm = (get("attn_norm.weight"), get("attn_norm.bias"))
        self.mlp_norm = (get("mlp_norm.weight"), get("mlp_norm.bias"))
        self.wqkv, self.bqkv = matrix("attn.wqkv.weight"), bias("attn.wqkv.bias")
        self.wo, self.bo = matrix("attn.wo.weight"), bias("attn.wo.bias")
        self.w1, self.b1 = matrix(*(f"{n}.weight" for n in up)), bias(*(f"{n}.bias" for n in up))
        self.w2, self.b2 = matrix("mlp.w2.weight"), bias("mlp.w2.bias")


def linear(x: np.ndarray, w: np.ndarray | Form | Any, b: np.ndarray | None, how: tuple[str, int]) -> np.ndarray:
    """x @ w.T (+ b); how: (activations, threads) for our kernels."""
    # float and weight-only quantized matrices go through our kernels; others (W8A8's int8_gemm.Matrix,
    # which rounds the activations its own way) multiply themselves
    y = matmul(x, w, how[1], activations=how[0]) if isinstance(w, (np.ndarray, Form)) else x @ w
    if b is not None:
        y += b
    return y


class NumpyModel:
    """A tinylm model in NumPy with a KV cache: `prefill` a batch of prompts, then `decode` a token per row."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, np.ndarray], tokenizer: Any = None,
                 quantization: dict[str, Any] | None = None, activations: str | None = None):  # fmt: skip
        """`quantization`: the checkpoint's spec (tinylm.quantize.transform) when its weights are quantized.
        `activations`: "int8" (the default, unless TINYLM_ACTIVATIONS says otherwise) rounds the inputs of
        8-bit, q4_0 and int4 matrices to int8 blocks of 32 in decode steps, as llama.cpp does: faster, not
        exact; "float32" gives the numbers of a float model holding the dequantized weights."""
        self.config = cfg
        self.activations = activations or activations_from_env("int8")
        self.tokenizer = tokenizer
        forms: dict[str, Form] = {}
        if quantization is not None:
            forms, weights = numpy_forms(quantization, weights)
        w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        # the output head as (vocab, dim), a tied one the embedding table itself
        self.tok_emb = w["tok_emb.weight"]
        self.head: np.ndarray | Form = forms.get("lm_head.weight") or (
            self.tok_emb if cfg.tie_embeddings else w["lm_head.weight"]
        )
        self.pos_emb = w.get("pos_emb.weight")
        self.norm_w = (w["norm.weight"], w.get("norm.bias"))
        self.layers = [Layer(w, i, cfg, forms) for i in range(cfg.n_layers)]
        self.into_large_pages()
        self.norm = rms_norm if cfg.norm == "rmsnorm" else layer_norm
        if cfg.positions == "rope":  # angle of frequency i at position p: p * theta^(-2i / head_dim)
            freqs = cfg.rope_theta ** (-np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)
            angles = np.outer(np.arange(cfg.context_length, dtype=np.float64), freqs)
            self.rotation = np.exp(1j * angles).astype(np.complex64)  # (context, head_dim / 2)
        shape = (cfg.n_layers, 0, cfg.kv_heads, cfg.context_length, cfg.head_dim)  # rows come with reserve
        self.k_cache = self.v_cache = np.zeros(shape, dtype=np.float32)
        self.pos = np.zeros(0, dtype=np.int64)  # each cache row's next position
        # a batch-1 decode step in one C call (tinylm.quantize.decode), where the kernels cover every
        # matrix; None: forward's Python path, which is also its reference
        self.step = DecodeStep.build(self)

    def into_large_pages(self) -> None:
        """Move the matrices every decode token reads (each layer's, and the head) into memory with large
        pages (kernels.in_large_pages: ~1.2x faster to stream here, more where they outgrow the caches).
        A quantized matrix moves its values, scales and mins; W8A8's keep their own memory; a tied head
        stays the embedding table."""
        holders = [(layer, name) for layer in self.layers for name in ("wqkv", "wo", "w1", "w2")] + [(self, "head")]

        def parts(w: Any) -> list[np.ndarray]:
            if isinstance(w, Form):
                return [a for a in (w.q, w.scale, w.mins) if a is not None]
            return [w] if isinstance(w, np.ndarray) else []

        tied = self.head is self.tok_emb
        moved = iter(in_large_pages([a for holder in holders for a in parts(getattr(*holder))]))
        for holder, name in holders:
            w = getattr(holder, name)
            if isinstance(w, Form):
                q, scale = next(moved), next(moved)
                w = dataclasses.replace(w, q=q, scale=scale, mins=None if w.mins is None else next(moved))
            elif isinstance(w, np.ndarray):
                w = next(moved)
            setattr(holder, name, w)
        if tied:
            self.tok_emb = self.head  # type: ignore[assignment]

    @classmethod
    def from_checkpoint(cls, path: str | Path, activations: str | None = None) -> NumpyModel:
        path = Path(path)
        cfg, transforms = read_config(path)  # (finishes a save a crash interrupted, or says the folder is missing)
        weights = load_weights(path, as_stored=True)
        _check_layout(path, cfg, transforms, weights)
        tokenizer = None
        if (path / "tokenizer").is_dir():
            from tinylm.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(path / "tokenizer")
            if tokenizer.vocab_size > cfg.vocab_size:
                raise TinyLMError(f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                                  f"{cfg.vocab_size}; they do not belong together")  # fmt: skip
        return cls(cfg, weights, tokenizer, transforms.get("quantization"), activations)

    # ---- the engine interface used by tinylm.generate (loop and scheduler)

    def reserve(self, rows: int) -> None:
        """Make room for at least `rows` cache rows, keeping what the existing rows hold. The caches span
        the context (attention reads only the filled prefix) and grow only when more rows are asked for."""
        cfg, have = self.config, self.k_cache.shape[1]
        if rows <= have:
            return
        shape = (cfg.n_layers, rows, cfg.kv_heads, cfg.context_length, cfg.head_dim)
        k, v = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
        k[:, :have], v[:, :have] = self.k_cache, self.v_cache
        self.k_cache, self.v_cache = k, v
        self.pos = np.concatenate([self.pos, np.zeros(rows - have, dtype=np.int64)])

    def prefill(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """Run each prompt from position 0 into its cache row (right-padded to the longest); logits
        (len(rows), vocab) after each prompt's last token."""
        cfg = self.config
        if not prompts or min(map(len, prompts)) == 0:
            raise TinyLMError("every prompt needs at least one token")
        longest = max(map(len, prompts))
        if longest > cfg.context_length:
            raise TinyLMError(f"a prompt of {longest} tokens does not fit the context of {cfg.context_length}")
        self.reserve(max(rows) + 1)
        rows = np.asarray(rows, dtype=np.int64)
        idx = np.array([list(p) + [0] * (longest - len(p)) for p in prompts], dtype=np.int64)
        pos = np.broadcast_to(np.arange(longest), idx.shape)
        lens = np.array([len(p) for p in prompts])
        logits = self.forward(idx, pos, lens - 1, rows)
        self.pos[rows] = lens
        return logits

    def decode(self, rows: Sequence[int], tokens: np.ndarray) -> np.ndarray:
        """Append one token per row at the row's next position; logits (len(rows), vocab)."""
        rows = np.asarray(rows, dtype=np.int64)
        if (self.pos[rows] >= self.config.context_length).any():
            raise TinyLMError(f"a row has used all {self.config.context_length} positions of the context")
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1, 1)
        logits = self.forward(tokens, self.pos[rows][:, None], None, rows)
        self.pos[rows] += 1
        return logits

    def logits(self, idx: np.ndarray) -> np.ndarray:
        """Logits at every position (B, T, vocab) of sequences idx (B, T) that start at position 0:
        scoring, not generation (it overwrites cache rows 0..B-1)."""
        B, T = idx.shape
        self.reserve(B)
        pos = np.broadcast_to(np.arange(T), (B, T))
        return self.forward(np.ascontiguousarray(idx, dtype=np.int64), pos, None, np.arange(B)).reshape(B, T, -1)

    # ---- the forward pass

    def forward(self, idx: np.ndarray, pos: np.ndarray, last: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
        """Tokens idx at positions pos (both (B, T)) of cache rows `rows` (B,): write their keys and
        values into the cache and return the logits at column `last` of each row, or of the only
        column when T == 1."""
        cfg = self.config
        B, T = idx.shape
        H, KV, hs, eps = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.norm_eps
        how = (self.activations, default_threads())  # the thread count once per pass, not per product
        if B * T == 1 and self.step is not None:
            return self.step(int(idx[0, 0]), int(pos[0, 0]), int(rows[0]), self.k_cache, self.v_cache, how[1])
        n = int(pos.max()) + 1  # attend over the cache prefix that any row has filled
        # rows 0..B-1 are a slice of the cache (a view); other rows are gathered (a copy of their prefix)
        read = slice(0, B) if np.array_equal(rows, np.arange(B)) else rows
        x = self.tok_emb[idx.ravel()]  # the residual stream, (B*T, dim)
        if self.pos_emb is not None:
            x = x + self.pos_emb[pos.ravel()]
        if cfg.positions == "rope":  # rotating a pair (a, b) by angle t is the complex product (a+ib)e^(it)
            rotation = self.rotation[pos][:, :, None, :]  # (B, T, 1, hs/2)
        # keys a query may not see yet (positions after its own), as -inf added to the scores
        hidden = np.arange(n) > pos[:, None, None, :, None]  # (B, 1, 1, T, n)
        bias = np.where(hidden, np.float32(-np.inf), np.float32(0)) if hidden.any() else None
        for i, layer in enumerate(self.layers):
            # attention: project, rotate, store in the cache, attend over the filled prefix
            qkv = linear(self.norm(x, *layer.attn_norm, eps), layer.wqkv, layer.bqkv, how)
            qkv = qkv.reshape(B, T, H + 2 * KV, hs)
            q, k, v = qkv[:, :, :H], qkv[:, :, H : H + KV], qkv[:, :, H + KV :]
            if cfg.positions == "rope":
                qk = qkv[:, :, : H + KV].view(np.complex64) * rotation  # q and k in one product
                q, k = qk[:, :, :H].view(np.float32), qk[:, :, H:].view(np.float32)
            k_cache, v_cache = self.k_cache[i], self.v_cache[i]  # (rows, KV, context, hs)
            k_cache[rows[:, None], :, pos] = k  # element (b, t) lands at [rows[b], :, pos[b, t]]
            v_cache[rows[:, None], :, pos] = v
            # one token (a batch-1 decode step) goes to the C kernel, when there is one (else None)
            y = attend_one(np.ascontiguousarray(q).reshape(H, hs), k_cache[rows[0]], v_cache[rows[0]], n,
                           1 / math.sqrt(hs), how[1]) if B * T == 1 else None  # fmt: skip
            if y is None:
                y = self.attend(q, k_cache[read, :, :n], v_cache[read, :, :n], bias)
            x = x + linear(y.reshape(B * T, H * hs), layer.wo, layer.bo, how)
            # MLP
            h = linear(self.norm(x, *layer.mlp_norm, eps), layer.w1, layer.b1, how)
            h = swiglu(h) if cfg.mlp == "swiglu" else gelu_tanh(h) if cfg.gelu == "tanh" else gelu_exact(h)
            x = x + linear(h, layer.w2, layer.b2, how)
        if last is not None:  # prefill: each row's last prompt token
            x = x[np.arange(B) * T + last]
        return linear(self.norm(x, *self.norm_w, eps), self.head, None, how)

    def attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """Queries q (B, T, H, hs) against the cache prefixes k, v (B, KV, n, hs), with `bias` hiding
        the positions after each query's own -> (B * T, H * hs)."""
        B, T, H, hs = q.shape
        KV, n = k.shape[1], k.shape[2]
        G = H // KV  # query heads per kv head
        q = q.reshape(B, T, KV, G, hs).transpose(0, 2, 3, 1, 4).reshape(B, KV, G * T, hs)
        att = q @ k.transpose(0, 1, 3, 2)  # (B, KV, G*T, n)
        att = att.reshape(B, KV, G, T, n)
        att *= np.float32(1.0 / math.sqrt(hs))
        if bias is not None:
            att += bias
        att -= att.max(-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(-1, keepdims=True)
        y = att.reshape(B, KV, G * T, n) @ v  # (B, KV, G*T, hs)
        return y.reshape(B, KV, G, T, hs).transpose(0, 3, 1, 2, 4).reshape(B * T, H * hs)


def _check_layout(path: Path, cfg: ModelConfig, transforms: dict[str, Any], w: dict[str, np.ndarray]) -> None:
    """The weights against the layout config.json implies (tinylm.layout and the declared transforms,
    shared with the torch loader). Quantized weights run here; adapters do not."""
    from tinylm.transforms import transformed_layout

    if set(transforms) - {"quantization"}:
        other = sorted(set(transforms) - {"quantization"})
        raise TinyLMError(f"{path}: declares {', '.join(other)}; the NumPy runtime runs plain and quantized "
                          "checkpoints (use the torch engine)")  # fmt: skip
    found = {k: (v.shape, v.dtype.name) for k, v in w.items()}
    layout = transformed_layout(cfg, transforms, str(path / CONFIG_FILE))
    check_tensors(layout, found, str(path / "model.safetensors"), CONFIG_FILE)
