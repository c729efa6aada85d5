"""GGUF (llama.cpp's format) through the `gguf` package: architectures "llama" and "gpt2".

Tensor names come from the package's own tables (gguf.TENSOR_NAMES), metadata keys from gguf.Keys.
GGUF lists a matrix's dimensions innermost first, so a torch (out, in) weight is stored as is.
llama.cpp's llama graph rotates interleaved pairs for RoPE, like tinylm, so q/k rows are not permuted
(its converter un-permutes Hugging Face's rotate-half rows; we never had them).

Quantization: 1-D tensors (norms, biases) stay f32 as llama.cpp expects; matrices become f16 or q8_0
(q8_0 needs rows that are a multiple of 32 long; others fall back to f16, as llama.cpp's converter does).
A checkpoint quantized by `tinylm quantize` as q8_0 or q4_0 has its layers written as the blocks it
stores (the same bytes, no re-rounding), and an imported GGUF whose layer matrices are all Q8_0 (or
all Q4_0) becomes such a checkpoint: re-quantizing GGUF's dequantized blocks gives back the same
bytes, so they stay quantized without a second rounding.
The tokenizer goes into the metadata: "llama" (pieces, scores, types) for SentencePiece-style
vocabularies, "gpt2" (tokens and merges) for byte-level BPE.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_path
from tinylm.formats.common import (
    PROGRESS_BYTES,
    Exported,
    Imported,
    build,
    check_positive,
    config_problem,
    is_gpt2,
    is_llama,
    join_qkv,
    numpy_state,
    require,
    require_tanh_gelu,
    split_qkv,
)
from tinylm.formats.tokenizer_files import load_given_tokenizer
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer

QUANTS = ("f32", "f16", "q8_0")
BLOCK_SCHEMES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def arch_of(cfg: ModelConfig) -> str:
    if is_llama(cfg):
        return "llama"
    require(is_gpt2(cfg), "GGUF", "it mixes GPT-2 and Llama parts, which no llama.cpp architecture runs",
            "train a plain Llama or GPT-2 model")  # fmt: skip
    require_tanh_gelu(cfg, "GGUF")
    require(cfg.kv_heads == cfg.n_heads, "GGUF", "llama.cpp's gpt2 architecture has no grouped-query attention",
            "use --to hf")  # fmt: skip
    return "gpt2"


def tensor_names(cfg: ModelConfig, arch: str) -> dict[str, str]:
    """Our name (q/k/v split, see split_qkv) -> GGUF name, for every tensor the model has."""
    T, names = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    per_layer = {
        "attn_norm": T.ATTN_NORM, "attn.wo": T.ATTN_OUT, "mlp_norm": T.FFN_NORM, "mlp.w2": T.FFN_DOWN,
        **({"attn.wq": T.ATTN_Q, "attn.wk": T.ATTN_K, "attn.wv": T.ATTN_V, "mlp.w1": T.FFN_GATE, "mlp.w3": T.FFN_UP}
           if arch == "llama" else {"attn.wqkv": T.ATTN_QKV, "mlp.w1": T.FFN_UP}),
    }  # fmt: skip
    allowed = set(gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.GPT2])
    assert all(t in allowed for t in per_layer.values())  # our table agrees with the package's
    out = {"tok_emb.weight": names[T.TOKEN_EMBD] + ".weight", "norm.weight": names[T.OUTPUT_NORM] + ".weight"}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = names[T.OUTPUT] + ".weight"
    if arch == "gpt2":
        out["pos_emb.weight"] = names[T.POS_EMBD] + ".weight"
    suffixes = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layers):
        for ours, t in per_layer.items():
            for s in suffixes:
                if arch == "llama" and ours.endswith("norm") and s == "bias":
                    continue  # RMSNorm has no bias
                out[f"layers.{i}.{ours}.{s}"] = names[t].format(bid=i) + f".{s}"
    if arch == "gpt2":
        out["norm.bias"] = names[T.OUTPUT_NORM] + ".bias"
    return out


def _tensor_type(a: np.ndarray, quant: str) -> Any:
    Q = gguf.GGMLQuantizationType
    if a.ndim == 1 or quant == "f32":
        return Q.F32
    if quant == "q8_0" and a.shape[-1] % 32 == 0:
        return Q.Q8_0
    return Q.F16


def _add_tokenizer(w: Any, tok: Tokenizer, n_vocab: int) -> str:
    """Write the tokenizer metadata; return the tokenizer model name."""
    from tinylm.formats import vocab as V

    if tok.vocab_size > n_vocab:
        raise TinyLMError(
            f"the tokenizer has {tok.vocab_size} tokens but the model only {n_vocab}; they do not belong together"
        )
    pad = n_vocab - tok.vocab_size  # llama.cpp wants one token per embedding row
    if V.is_sentencepiece_style(tok):
        sp = V.sp_vocab(tok)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(sp.pieces + [f"[PAD{i}]" for i in range(pad)])
        w.add_token_scores(sp.scores + [-1e9] * pad)
        w.add_token_types(sp.types + [V.UNUSED] * pad)
        if sp.unk_id is not None:
            w.add_unk_token_id(sp.unk_id)
        kind = "llama"
    elif tok.kind in ("bpe", "tiktoken"):
        bpe = V.byte_bpe(tok)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(bpe.tokens + [f"[PAD{i}]" for i in range(pad)])
        w.add_token_types(
            [V.CONTROL if i in bpe.specials else V.NORMAL for i in range(len(bpe.tokens))] + [V.UNUSED] * pad
        )
        w.add_token_merges(bpe.merges)
        kind = "gpt2"
    else:
        raise TinyLMError(
            f"GGUF stores SentencePiece or byte-level BPE vocabularies, not a {tok.kind!r} tokenizer; "
            "train with a bpe or sentencepiece tokenizer"
        )
    start = V.document_start(tok)  # what tinylm starts a prompt with: BOS, or GPT-2's <|endoftext|>
    if start is not None:
        w.add_bos_token_id(start)
    if tok.eos_id is not None:
        w.add_eos_token_id(tok.eos_id)
    w.add_add_bos_token(start is not None)
    return kind


def stored_blocks(model: Model) -> dict[str, tuple[np.ndarray, Any]]:
    """Our name (q/k/v split) -> (GGUF block bytes, type) for the layers a checkpoint stores as q8_0/q4_0."""
    from tinylm.quantize import schemes
    from tinylm.quantize.linear import stored_parts

    out = {}
    for scheme, qtype in BLOCK_SCHEMES.items():
        blocks = {k: schemes.get_scheme(scheme).to_gguf(p) for k, p in stored_parts(model, scheme).items()}
        out |= {k: (b, qtype) for k, b in (split_qkv(model.config, blocks) if is_llama(model.config) else blocks).items()}
    return out


def _file_type(quant: str, blocks: dict[str, tuple[np.ndarray, Any]]) -> Any:
    T, Q = gguf.LlamaFileType, gguf.GGMLQuantizationType
    types = {t for _, t in blocks.values()}
    if types:  # the stored blocks make up most of the file
        return T.MOSTLY_Q4_0 if Q.Q4_0 in types else T.MOSTLY_Q8_0
    return {"f32": T.ALL_F32, "f16": T.MOSTLY_F16, "q8_0": T.MOSTLY_Q8_0}[quant]


def write_model(model: Model, tokenizer: Tokenizer | None, path: Path, quant: str = "f32") -> list[str]:
    cfg = model.config
    arch = arch_of(cfg)
    if quant not in QUANTS:
        raise TinyLMError(f"unknown GGUF quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    notes = []
    sd = split_qkv(cfg, numpy_state(model)) if arch == "llama" else numpy_state(model)
    blocks = stored_blocks(model)
    names = tensor_names(cfg, arch)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(tmp, arch)
        w.add_name(f"tinylm-{cfg.family}")
        file_type = _file_type(quant, blocks)
        w.add_file_type(file_type)
        if file_type != gguf.LlamaFileType.ALL_F32 and file_type != gguf.LlamaFileType.MOSTLY_F16:
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_hparams(w, cfg, arch)
        if tokenizer is not None:
            _add_tokenizer(w, tokenizer, cfg.vocab_size)
        else:
            notes.append("no tokenizer in the checkpoint, so none in the GGUF; llama.cpp needs one to run it")
        fallback = []
        for ours, theirs in names.items():
            if ours in blocks:  # quantized by tinylm: the stored blocks as they are
                w.add_tensor(theirs, blocks[ours][0], raw_dtype=blocks[ours][1])
                continue
            a = sd[ours]
            qtype = _tensor_type(a, quant)
            if quant == "q8_0" and a.ndim == 2 and qtype != gguf.GGMLQuantizationType.Q8_0:
                fallback.append(theirs)
            w.add_tensor(theirs, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        if fallback:
            notes.append(
                f"{len(fallback)} matrices with rows not a multiple of 32 stored as f16 (e.g. {fallback[0]})"
            )
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=sum(a.nbytes for a in sd.values()) > PROGRESS_BYTES)
        w.close()
    return notes


def _add_hparams(w: Any, cfg: ModelConfig, arch: str) -> None:
    w.add_context_length(cfg.context_length)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.n_heads)
    w.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        w.add_head_count_kv(cfg.kv_heads)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
    else:
        w.add_layer_norm_eps(cfg.norm_eps)


def export(model: Model, tokenizer: Tokenizer | None, out: Path, quant: str = "f32") -> Exported:
    return Exported([out], write_model(model, tokenizer, out, quant))


# ---- import ------------------------------------------------------------------------------------


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.contents()
    if isinstance(value, float):  # stored as float32: 1e-5 reads back as 9.99999975e-06
        return float(str(np.float32(value)))
    return value


def config_from_gguf(path: Path, reader: Any, tensors: dict[str, Any]) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "gpt2"):
        raise TinyLMError(f"{path}: GGUF architecture {arch!r} is not supported; tinylm reads llama and gpt2")
    if "token_embd.weight" not in tensors:
        raise TinyLMError(f"{path}: no token_embd.weight tensor; the GGUF file is incomplete")

    def get(key: str, default: Any = None) -> Any:
        value = _field(reader, f"{arch}.{key}", default)
        if value is None:
            raise TinyLMError(f"{path}: GGUF metadata lacks {arch}.{key}")
        if isinstance(value, list):
            raise TinyLMError(
                f"{path}: {arch}.{key} varies per layer; tinylm models have one value for all layers"
            )
        return value

    vocab = int(tensors["token_embd.weight"].shape[1])  # GGUF shapes are innermost first: (dim, vocab)
    dims = {"context_length": int(get("context_length")), "embedding_length": int(get("embedding_length")),
            "block_count": int(get("block_count")), "feed_forward_length": int(get("feed_forward_length")),
            "attention.head_count": int(get("attention.head_count"))}  # fmt: skip
    check_positive(path, dims)
    common = dict(
        vocab_size=vocab, context_length=dims["context_length"], n_layers=dims["block_count"],
        n_heads=dims["attention.head_count"], dim=dims["embedding_length"], hidden_dim=dims["feed_forward_length"],
        tie_embeddings="output.weight" not in tensors, family=arch,
    )  # fmt: skip
    if arch == "gpt2":
        return config_problem(path, lambda: ModelConfig(
            **common, norm="layernorm", norm_eps=float(get("attention.layer_norm_epsilon", 1e-5)),
            positions="learned", mlp="gelu", bias=True,
        ))  # fmt: skip
    n_kv = int(get("attention.head_count_kv", dims["attention.head_count"]))
    rope_dims = int(get("rope.dimension_count", dims["embedding_length"] // dims["attention.head_count"]))
    if rope_dims != dims["embedding_length"] // dims["attention.head_count"]:
        raise TinyLMError(
            f"{path}: RoPE on {rope_dims} of each head's dimensions is not supported (tinylm rotates all)"
        )
    return config_problem(path, lambda: ModelConfig(
        **common, n_kv_heads=n_kv, norm="rmsnorm", norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        positions="rope", rope_theta=float(get("rope.freq_base", 10000.0)), mlp="swiglu",
        bias="blk.0.attn_q.bias" in tensors,
    ))  # fmt: skip


def block_spec(types: dict[str, Any]) -> dict[str, Any] | None:
    """The quantization transform that keeps an imported model's Q8_0/Q4_0 layer matrices as they are
    (the commonest of the two; layers of other types, and the embedding and head, stay float), or None."""
    by_layer: dict[str, set[Any]] = {}
    for name, t in types.items():
        if name.startswith("layers.") and name.endswith(".weight") and "norm" not in name:
            layer = re.sub(r"\.w[qkv]$", ".wqkv", name.removesuffix(".weight"))  # q, k, v join into one layer
            by_layer.setdefault(layer, set()).add(t)
    counts = {s: sum(ts == {q} for ts in by_layer.values()) for s, q in BLOCK_SCHEMES.items()}
    scheme = max(counts, key=lambda s: counts[s])
    if counts[scheme] == 0:
        return None
    keep = ["tok_emb", "pos_emb", "lm_head", *sorted(n for n, ts in by_layer.items() if ts != {BLOCK_SCHEMES[scheme]})]
    return {"kind": scheme, "group_size": 32, "keep": keep}


def read_tokenizer(reader: Any) -> tuple[Tokenizer | None, str | None]:
    """The GGUF's tokenizer, or None and why not."""
    from tinylm.formats import vocab as V

    kind = _field(reader, "tokenizer.ggml.model")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        return None, "the GGUF file has no tokenizer; imported without one (give one with --tokenizer)"
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type", [V.NORMAL] * len(tokens))]
    # padding rows exported for a larger embedding are not part of the vocabulary
    while types and types[-1] == V.UNUSED and tokens[-1].startswith("[PAD"):
        tokens, types = tokens[:-1], types[:-1]
    bos, eos = _field(reader, "tokenizer.ggml.bos_token_id"), _field(reader, "tokenizer.ggml.eos_token_id")
    bos, eos = (int(x) if x is not None else None for x in (bos, eos))
    bos = None if bos == eos else bos  # BOS = EOS: documents are separated by EOS alone (GPT-2)
    if kind == "llama":
        scores = [float(s) for s in _field(reader, "tokenizer.ggml.scores", [0.0] * len(tokens))][
            : len(tokens)
        ]
        return V.llama2c_tokenizer(V.SpVocab(list(tokens), scores, types, bos, eos)), None
    pre = _field(reader, "tokenizer.ggml.pre", "gpt-2")
    if kind == "gpt2" and pre in ("gpt-2", "default"):
        merges = list(_field(reader, "tokenizer.ggml.merges", []))
        specials = {i for i, t in enumerate(types) if t == V.CONTROL}
        return V.byte_bpe_tokenizer(V.ByteBPE(list(tokens), merges, specials, bos, eos)), None
    return None, (
        f"GGUF tokenizer {kind!r} (pre-tokenizer {pre!r}) is not one tinylm reads (llama, or gpt2 with GPT-2's "
        "pre-tokenizer); imported without it: attach the model's tokenizer.json with --tokenizer"
    )


def load(path: Path, tokenizer: Path | None = None, dtype: torch.dtype | None = None) -> Imported:
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise TinyLMError(f"{path}: not a readable GGUF file ({e})") from None
    except (IndexError, KeyError, TypeError, OverflowError, UnicodeDecodeError, MemoryError) as e:
        # the reader walks the header's tensor and key-value counts: a damaged count runs it off the end
        raise TinyLMError(f"{path}: damaged GGUF header (its tensor or metadata counts do not match the file: "
                          f"{type(e).__name__}); re-download or re-export it") from None  # fmt: skip
    tensors = {t.name: t for t in reader.tensors}
    cfg = config_from_gguf(path, reader, tensors)
    arch = "llama" if is_llama(cfg) else "gpt2"
    arrays, types = {}, {}
    for ours, theirs in tensor_names(cfg, arch).items():
        t = tensors.get(theirs)
        if t is None:
            raise TinyLMError(
                f"{path}: GGUF file lacks tensor {theirs}; it is incomplete or not a plain {arch} model"
            )
        try:
            arrays[ours] = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            types[ours] = t.tensor_type
        except NotImplementedError:
            raise TinyLMError(f"{path}: tensor {theirs} is {t.tensor_type.name}, which tinylm cannot dequantize; "
                              "re-quantize the model as f32, f16 or q8_0") from None  # fmt: skip
    model = build(cfg, join_qkv(arrays) if arch == "llama" else arrays, dtype)
    notes = []
    spec = block_spec(types)
    if spec is not None:
        from tinylm import transforms

        transforms.apply(model, "quantization", spec)
        notes.append(f"kept the {spec['kind']} blocks quantized ({len(spec['keep'])} layers float: {', '.join(spec['keep'])})")
    if tokenizer is not None:
        tok = load_given_tokenizer(tokenizer)
    else:
        tok, why_not = read_tokenizer(reader)
        if why_not:
            notes.append(why_not)
    return Imported(model, tok, notes)
