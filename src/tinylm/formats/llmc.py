"""llm.c's GPT-2 files (little-endian throughout).

Model (`gpt2_124M.bin`): 256 x int32 header (magic 20240326, version 3 = fp32 or 5 = bf16, max_seq_len,
vocab_size, num_layers, num_heads, channels, padded_vocab_size), then the parameters: wte (padded_vocab x C,
rows past vocab_size zero), wpe, and per-kind stacks over layers: ln1 w/b, qkv w (3C x C)/b, attention
projection w/b, ln2 w/b, fc w (4C x C)/b, fc projection w/b; then the final LayerNorm w/b. Matrices are
(out, in) like torch's Linear. The classifier is wte (tied).

Tokenizer (`gpt2_tokenizer.bin`): see tinylm.formats.tokenizer_files.
"""

from __future__ import annotations

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
    is_gpt2,
    numpy_state,
    require,
    require_tanh_gelu,
    stream_to,
    write_with_tokenizer,
)
from tinylm.formats.tokenizer_files import (
    HEADER_BYTES,
    HEADER_INTS,
    read_tokenizer,
    tokenizer_file,
    tokenizer_for_import,
)
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer

MAGIC = 20240326
DTYPES = {3: "float32", 5: "bfloat16"}
VOCAB_MULTIPLE = 128
TOKENIZER_FILE = "gpt2_tokenizer.bin"
MAX_VOCAB = 1 << 16  # llm.c's token files hold uint16 ids


def check_model(cfg: ModelConfig) -> None:
    target = "llm.c"
    require(is_gpt2(cfg), target, "it is not a GPT-2-family model (LayerNorm, learned positions, GELU, biases)",
            "export Llama models with --to llama2c, gguf or hf")  # fmt: skip
    require_tanh_gelu(cfg, target)
    require(cfg.kv_heads == cfg.n_heads, target, "it uses grouped-query attention", "use --to hf or gguf")
    require(cfg.tie_embeddings, target, "its output head is not tied to the embedding", "use --to hf or gguf")
    require(
        cfg.ffn_dim == 4 * cfg.dim,
        target,
        f"its MLP width is {cfg.ffn_dim}, llm.c fixes 4 x dim",
        "use --to hf or gguf",
    )
    require(
        cfg.norm_eps == 1e-5,
        target,
        f"LayerNorm eps is {cfg.norm_eps}, llm.c fixes 1e-5",
        "use --to hf or gguf",
    )
    require(cfg.vocab_size <= MAX_VOCAB, target, f"its vocabulary of {cfg.vocab_size:,} does not fit llm.c's uint16 tokens",
            "use --to hf or gguf")  # fmt: skip


def padded(vocab_size: int) -> int:
    return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def layout(cfg: ModelConfig, padded_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """(our name, shape) in file order; "wte" is the padded embedding."""
    C, L = cfg.dim, cfg.n_layers
    per_layer = [("attn_norm.weight", (C,)), ("attn_norm.bias", (C,)), ("attn.wqkv.weight", (3 * C, C)),
                 ("attn.wqkv.bias", (3 * C,)), ("attn.wo.weight", (C, C)), ("attn.wo.bias", (C,)),
                 ("mlp_norm.weight", (C,)), ("mlp_norm.bias", (C,)), ("mlp.w1.weight", (4 * C, C)),
                 ("mlp.w1.bias", (4 * C,)), ("mlp.w2.weight", (C, 4 * C)), ("mlp.w2.bias", (C,))]  # fmt: skip
    stacks = [(f"layers.{i}.{name}", shape) for name, shape in per_layer for i in range(L)]
    return [("wte", (padded_vocab, C)), ("pos_emb.weight", (cfg.context_length, C)), *stacks,
            ("norm.weight", (C,)), ("norm.bias", (C,))]  # fmt: skip


def _encode(a: np.ndarray, version: int) -> np.ndarray:
    if version == 3:
        return a.astype("<f4")
    return torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2")


def _decode(raw: np.ndarray, version: int) -> torch.Tensor:
    if version == 3:
        return torch.from_numpy(np.array(raw, dtype=np.float32))
    return torch.from_numpy(np.array(raw, dtype=np.int16)).view(torch.bfloat16)


def write_model(model: Model, path: Path, dtype: str = "float32") -> None:
    cfg = model.config
    check_model(cfg)
    version = {v: k for k, v in DTYPES.items()}.get(dtype)
    if version is None:
        raise TinyLMError(f"llm.c stores float32 or bfloat16, not {dtype}; use --dtype float32 or bfloat16")
    sd = numpy_state(model)
    Vp = padded(cfg.vocab_size)
    sd["wte"] = np.zeros((Vp, cfg.dim), np.float32)
    sd["wte"][: cfg.vocab_size] = sd.pop("tok_emb.weight")
    head = np.zeros(HEADER_INTS, "<i4")
    head[:8] = (MAGIC, version, cfg.context_length, cfg.vocab_size, cfg.n_layers, cfg.n_heads, cfg.dim, Vp)
    order = layout(cfg, Vp)
    total = HEADER_BYTES + sum(sd[n].size for n, _ in order) * (4 if version == 3 else 2)
    with stream_to(path, total, f"llm.c {dtype}") as write:
        write(head)
        for name, _ in order:
            write(_encode(sd[name], version))


def read_model(path: Path, dtype: torch.dtype | None = None) -> Model:
    f = BinFile(path)
    head = [int(x) for x in f.array(0, "<i4", 8)]
    if head[0] != MAGIC:
        raise TinyLMError(f"{path}: bad magic {head[0]} (llm.c models have {MAGIC})")
    version, seq_len, vocab, layers, heads, channels, Vp = head[1:]
    if version not in DTYPES:
        raise TinyLMError(f"{path}: llm.c model version {version} is not supported (3 = fp32, 5 = bf16)")
    check_positive(path, {"max_seq_len": seq_len, "vocab_size": vocab, "num_layers": layers, "num_heads": heads,
                          "channels": channels, "padded_vocab_size": Vp})  # fmt: skip
    if Vp < vocab:
        raise TinyLMError(f"{path}: padded vocab {Vp} is smaller than vocab {vocab}; not a valid llm.c model")
    cfg = config_problem(path, lambda: ModelConfig(
        vocab_size=vocab, context_length=seq_len, n_layers=layers, n_heads=heads, dim=channels,
        hidden_dim=4 * channels, norm="layernorm", norm_eps=1e-5, positions="learned", mlp="gelu", bias=True,
        tie_embeddings=True, family="gpt2",
    ))  # fmt: skip
    order = layout(cfg, Vp)
    item = 4 if version == 3 else 2
    f.expect_size(HEADER_BYTES + item * sum(int(np.prod(s)) for _, s in order), "its llm.c header")
    tensors = {}
    offset = HEADER_BYTES
    for name, shape in order:
        n = int(np.prod(shape))
        tensors[name] = _decode(f.array(offset, "<f4" if version == 3 else "<i2", n), version).view(shape)
        offset += item * n
    tensors["tok_emb.weight"] = tensors.pop("wte")[:vocab].clone()
    return build(cfg, tensors, dtype)


def export(
    model: Model,
    tokenizer: Tokenizer | None,
    out: Path,
    dtype: str = "float32",
    tokenizer_out: Path | None = None,
) -> Exported:
    check_model(model.config)
    notes: list[str] = []
    tok_bytes = None
    if tokenizer is not None:
        if tokenizer.vocab_size != model.config.vocab_size:
            notes.append(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model {model.config.vocab_size}; "
                f"no {TOKENIZER_FILE} was written"
            )
        else:
            tok_bytes = tokenizer_file(tokenizer)
    files = write_with_tokenizer(
        lambda: write_model(model, out, dtype), out, tok_bytes, TOKENIZER_FILE, tokenizer_out
    )
    return Exported(files, notes)


def load(path: Path, tokenizer: Path | None = None, dtype: torch.dtype | None = None) -> Imported:
    model = read_model(path, dtype)
    tok, notes = tokenizer_for_import(path, tokenizer, TOKENIZER_FILE, read_tokenizer, model.config.vocab_size)
    return Imported(model, tok, notes)
