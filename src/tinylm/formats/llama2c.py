"""llama2.c model files, the three layouts its export.py writes (little-endian throughout):

v0 (legacy; what run.c reads): 7 x int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
   seq_len; a negative vocab_size means the classifier is not shared), then fp32: token embedding,
   per-kind stacks over layers (attention norm, wq, wk, wv, wo, ffn norm, w1, w2, w3), final norm,
   the RoPE cos/sin tables (seq_len x head_size/2 each; run.c skips them), and the classifier if unshared.
v1: uint32 magic "ak42", int32 version 1, the 7 ints, a shared-classifier byte, zeros up to 256 bytes;
   then fp32: all norms first (attention, ffn, final), embedding, wq, wk, wv, wo, w1, w2, w3, [classifier].
v2 (Q8_0; what runq.c reads): the v1 header plus an int32 group size; the norms in fp32, then each
   matrix (per layer) as int8 values followed by one fp32 scale per group: w ~= q * scale (the math of
   tinylm.quantize.q8_0, with float32 scales and groups of 64; a q8_0 checkpoint is written with its
   own groups of 32, so its layers keep their exact numbers).

llama2.c rotates interleaved pairs for RoPE, as tinylm does, so q/k rows are copied unpermuted; its
C code fixes RMSNorm eps at 1e-5 and RoPE theta at 10000.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.formats.common import (
    BinFile,
    Exported,
    Imported,
    build,
    check_positive,
    config_problem,
    is_llama,
    join_qkv,
    numpy_state,
    require,
    split_qkv,
    stream_to,
    write_with_tokenizer,
)
from tinylm.formats.tokenizer_files import tokenizer_for_import
from tinylm.model import Model, rope_tables
from tinylm.quantize import q8_0
from tinylm.quantize.blocks import Form
from tinylm.tokenizer import Tokenizer, load_tokenizer

MAGIC = 0x616B3432  # "ak42"
HEADER_BYTES = 256
LEGACY_HEADER_BYTES = 7 * 4
VERSIONS = (0, 1, 2)
TOKENIZER_FILE = "tokenizer.bin"
MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def check_model(cfg: ModelConfig) -> None:
    target = "llama2.c"
    require(is_llama(cfg), target, "it is not a Llama-family model (RoPE, RMSNorm, SwiGLU)",
            "export GPT-2 models with --to llmc, gguf or hf")  # fmt: skip
    require(not cfg.bias, target, "it has biases", "use --to gguf or hf")
    require(
        cfg.norm_eps == 1e-5,
        target,
        f"RMSNorm eps is {cfg.norm_eps} (run.c fixes 1e-5)",
        "use --to gguf or hf",
    )
    require(
        cfg.rope_theta == 10000.0,
        target,
        f"RoPE theta is {cfg.rope_theta} (run.c fixes 10000)",
        "use --to gguf or hf",
    )


def config_from_header(path: Path, dims: tuple[int, ...]) -> ModelConfig:
    """The model the 7 header ints describe (v0's sign convention: negative vocab = own classifier)."""
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = dims
    check_positive(path, {"dim": dim, "hidden_dim": hidden, "n_layers": layers, "n_heads": heads,
                          "n_kv_heads": kv_heads, "vocab_size": abs(vocab), "seq_len": seq_len})  # fmt: skip
    return config_problem(path, lambda: ModelConfig(
        vocab_size=abs(vocab), context_length=seq_len, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads,
        dim=dim, hidden_dim=hidden, norm="rmsnorm", norm_eps=1e-5, positions="rope", rope_theta=10000.0,
        mlp="swiglu", bias=False, tie_embeddings=vocab > 0, family="llama",
    ))  # fmt: skip


def _shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    C, F, hs = cfg.dim, cfg.ffn_dim, cfg.head_dim
    return {"wq": (cfg.n_heads * hs, C), "wk": (cfg.kv_heads * hs, C), "wv": (cfg.kv_heads * hs, C),
            "wo": (C, cfg.n_heads * hs), "w1": (F, C), "w2": (C, F), "w3": (F, C)}  # fmt: skip


def layout(
    cfg: ModelConfig, version: int
) -> tuple[list[tuple[str, tuple[int, ...]]], list[tuple[str, tuple[int, ...]]]]:
    """The file's tensors in order, as (name, shape): (fp32 part, Q8_0 part). Names are ours, with the
    fused q/k/v projection split into layers.{i}.attn.wq/wk/wv as llama2.c stores it (see split_qkv)."""
    L, C, V = cfg.n_layers, cfg.dim, cfg.vocab_size
    shapes = _shapes(cfg)

    def stack(kind: str, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"layers.{i}.{kind}", shape) for i in range(L)]

    mats = {m: stack(("attn." if m[1] in "qkvo" else "mlp.") + m + ".weight", shapes[m]) for m in MATRICES}
    norms = [*stack("attn_norm.weight", (C,)), *stack("mlp_norm.weight", (C,)), ("norm.weight", (C,))]
    head = [] if cfg.tie_embeddings else [("lm_head.weight", (V, C))]
    emb = [("tok_emb.weight", (V, C))]
    if version == 0:
        rope = [
            ("rope.cos", (cfg.context_length, cfg.head_dim // 2)),
            ("rope.sin", (cfg.context_length, cfg.head_dim // 2)),
        ]
        order = [*emb, *stack("attn_norm.weight", (C,)), *mats["wq"], *mats["wk"], *mats["wv"], *mats["wo"],
                 *stack("mlp_norm.weight", (C,)), *mats["w1"], *mats["w2"], *mats["w3"], ("norm.weight", (C,)), *rope, *head]  # fmt: skip
        return order, []
    matrices = [*emb, *(t for m in MATRICES for t in mats[m]), *head]
    return (norms + matrices, []) if version == 1 else (norms, matrices)


def _pieces(cfg: ModelConfig, model: Model) -> dict[str, np.ndarray]:
    """The model's weights under the names `layout` uses, plus v0's RoPE tables."""
    cos, sin = rope_tables(cfg, cfg.context_length)
    return {**split_qkv(cfg, numpy_state(model)), "rope.cos": cos.numpy(), "rope.sin": sin.numpy()}


def _stored_q8_0(model: Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name (q/k/v split) -> (int8 values, scales) of the layers a q8_0 checkpoint stores in groups of 32."""
    from tinylm.quantize.linear import stored_parts

    parts = stored_parts(model, "q8_0")
    q = split_qkv(model.config, {k: p["qweight"] for k, p in parts.items()})
    scales = split_qkv(model.config, {k: p["scales"] for k, p in parts.items()})
    return {k: (q[k], scales[k]) for k in q}


def group_size_for(cfg: ModelConfig, wanted: int = 64) -> int:
    """llama2.c's default group (64), halved until it divides dim and hidden_dim (runq.c quantizes
    activations of both sizes in these groups)."""
    gs = wanted
    while cfg.dim % gs or cfg.ffn_dim % gs:
        gs //= 2
    return gs


def header(cfg: ModelConfig, version: int, group_size: int = 0) -> bytes:
    vocab = cfg.vocab_size if (cfg.tie_embeddings or version > 0) else -cfg.vocab_size
    dims = struct.pack(
        "<7i", cfg.dim, cfg.ffn_dim, cfg.n_layers, cfg.n_heads, cfg.kv_heads, vocab, cfg.context_length
    )
    if version == 0:
        return dims
    head = struct.pack("<Ii", MAGIC, version) + dims + struct.pack("<B", int(cfg.tie_embeddings))
    if version == 2:
        head += struct.pack("<i", group_size)
    return head.ljust(HEADER_BYTES, b"\0")


def write_model(model: Model, path: Path, version: int = 0) -> None:
    cfg = model.config
    check_model(cfg)
    if version not in VERSIONS:
        raise TinyLMError(
            f"llama2.c has versions 0, 1 and 2, not {version}; use --version 0 (run.c), 1 or 2 (runq.c)"
        )
    pieces = _pieces(cfg, model)
    stored = _stored_q8_0(model) if version == 2 else {}
    gs = (32 if stored else group_size_for(cfg)) if version == 2 else 0
    fp32, q80 = layout(cfg, version)
    total = len(header(cfg, version, gs)) + sum(4 * int(np.prod(s)) for _, s in fp32)
    total += sum(int(np.prod(s)) * (1 + 4 / gs) for _, s in q80) if q80 else 0
    with stream_to(path, int(total), f"llama2.c v{version}") as write:
        write(header(cfg, version, gs))
        for name, _ in fp32:
            write(pieces[name].astype("<f4"))
        for name, _ in q80:
            if name in stored:  # a q8_0 checkpoint's own blocks, as they are
                q, scale = stored[name]
            else:
                q, scale = q8_0.symmetric_groups(pieces[name].reshape(-1, gs), gs)
            write(q)
            write(scale.astype("<f4"))


def read_model(path: Path, dtype: torch.dtype | None = None) -> Model:
    f = BinFile(path)
    magic = int(f.array(0, "<u4", 1)[0]) if f.size >= 4 else None
    if magic == MAGIC:
        version, *dims = (int(x) for x in f.array(4, "<i4", 8))
        if version not in (1, 2):
            raise TinyLMError(f"{path}: llama2.c version {version} is not supported (known: 0, 1, 2)")
        if dims[5] <= 0:
            raise TinyLMError(
                f"{path}: header field vocab_size = {dims[5]} is impossible; not a valid model file"
            )
        cfg = config_from_header(path, tuple(dims)).replace(tie_embeddings=bool(f.array(36, "u1", 1)[0]))
        gs = int(f.array(37, "<i4", 1)[0]) if version == 2 else 0
        if version == 2 and (gs <= 0 or cfg.dim % gs):  # every matrix has dim as a factor
            raise TinyLMError(
                f"{path}: group size {gs} does not divide dim {cfg.dim}; not a valid llama2.c v2 file"
            )
        offset = HEADER_BYTES
    else:
        version, gs, offset = 0, 0, LEGACY_HEADER_BYTES
        cfg = config_from_header(path, tuple(int(x) for x in f.array(0, "<i4", 7)))
    fp32, q80 = layout(cfg, version)
    sizes = [int(np.prod(s)) for _, s in fp32], [int(np.prod(s)) for _, s in q80]
    f.expect_size(
        offset + 4 * sum(sizes[0]) + sum(n + 4 * (n // gs) for n in sizes[1]),
        f"its llama2.c v{version} header",
    )
    pieces = {}
    for name, shape in fp32:
        n = int(np.prod(shape))
        pieces[name] = f.array(offset, "<f4", n).reshape(shape)
        offset += 4 * n
    for name, shape in q80:
        n = int(np.prod(shape))
        q = f.array(offset, "i1", n)
        scale = f.array(offset + n, "<f4", n // gs)
        pieces[name] = Form(8, gs, q.reshape(-1, gs), scale.reshape(-1, 1)).dequantize().reshape(shape)
        offset += n + 4 * (n // gs)
    return build(cfg, join_qkv({k: v for k, v in pieces.items() if not k.startswith("rope.")}), dtype)


def looks_like_legacy(path: Path) -> bool:
    """Whether `path` is a v0 file: its 7-int header must predict the file size exactly."""
    try:
        f = BinFile(path)
        cfg = config_from_header(path, tuple(int(x) for x in f.array(0, "<i4", 7)))
    except TinyLMError:
        return False
    fp32, _ = layout(cfg, 0)
    return f.size == LEGACY_HEADER_BYTES + 4 * sum(int(np.prod(s)) for _, s in fp32)


# ---- the tokenizer.bin beside the model --------------------------------------------------------


def tokenizer_bin(tok: Tokenizer) -> bytes:
    """llama2.c's tokenizer.bin for a SentencePiece-style tokenizer."""
    from tinylm.formats.vocab import is_sentencepiece_style, llama2c_tokenizer, sp_vocab

    if tok.kind == "llama2c":
        return tok.to_bin()  # type: ignore[attr-defined]
    if not is_sentencepiece_style(tok):
        raise TinyLMError(
            f"llama2.c's tokenizer.bin holds SentencePiece-style vocabularies, not a {tok.kind!r} tokenizer"
        )
    return llama2c_tokenizer(sp_vocab(tok)).to_bin()  # type: ignore[attr-defined]


def export(
    model: Model, tokenizer: Tokenizer | None, out: Path, version: int = 0, tokenizer_out: Path | None = None
) -> Exported:
    check_model(model.config)
    notes: list[str] = []
    tok_bytes = None
    if tokenizer is not None:
        if tokenizer.vocab_size != model.config.vocab_size:
            notes.append(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model {model.config.vocab_size}; "
                "run.c needs them equal, so no tokenizer.bin was written"
            )
        else:
            try:
                tok_bytes = tokenizer_bin(tokenizer)
            except TinyLMError as e:
                notes.append(f"{e}; wrote the model only")
    files = write_with_tokenizer(
        lambda: write_model(model, out, version), out, tok_bytes, TOKENIZER_FILE, tokenizer_out
    )
    return Exported(files, notes)


def load(path: Path, tokenizer: Path | None = None, dtype: torch.dtype | None = None) -> Imported:
    model = read_model(path, dtype)
    tok, notes = tokenizer_for_import(path, tokenizer, TOKENIZER_FILE, load_tokenizer, model.config.vocab_size)
    return Imported(model, tok, notes)
