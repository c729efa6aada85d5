"""Hugging Face model folders on disk: what `save_pretrained` writes and `from_pretrained` reads.

Export writes config.json (LlamaForCausalLM or GPT2LMHeadModel), model.safetensors, generation_config.json
and the tokenizer as tokenizer.json + tokenizer_config.json (plus tokenizer.model for SentencePiece), which
AutoTokenizer loads offline. Import reads such folders, ours or downloaded ones: one model.safetensors,
shards listed by model.safetensors.index.json, or pytorch_model.bin (loaded with weights_only=True, so
no code in the file can run). Weight names, RoPE row order and Conv1D transposes are tinylm.formats.hf's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tinylm.checkpoint import model_state_dict
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_dir, write_bytes, write_json, write_text
from tinylm.formats.common import Exported, Imported, build, check_replaceable
from tinylm.formats.hf import (
    from_hf_config,
    from_hf_state_dict,
    hf_architecture,
    to_hf_config,
    to_hf_state_dict,
)
from tinylm.formats.tokenizer_files import load_given_tokenizer
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"


def write_tokenizer(tok: Tokenizer, folder: Path, context_length: int) -> None:
    from tinylm.formats.vocab import document_start, starting_with, to_hf

    start = document_start(tok)
    hf_tok = to_hf(tok) if start is None else starting_with(to_hf(tok), start)
    write_text(folder / "tokenizer.json", hf_tok.to_str(pretty=True))
    if tok.kind == "sentencepiece":
        write_bytes(folder / "tokenizer.model", tok.model_proto)  # type: ignore[attr-defined]  # for llama.cpp's converter
    # split_special_tokens: like tinylm (and SentencePiece), text such as "</s>" stays text; only
    # add_special_tokens inserts the real BOS
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context_length,
                              "clean_up_tokenization_spaces": False, "split_special_tokens": True}  # fmt: skip
    # bos_token: the document start, which is GPT-2's <|endoftext|> too (transformers then adds it as tinylm does)
    for name, i in (("bos_token", start), ("eos_token", tok.eos_id)):
        if i is not None:
            config[name] = hf_tok.id_to_token(i)
    config["add_bos_token"] = start is not None
    if tok.kind in ("sentencepiece", "llama2c"):
        config["unk_token"] = "<unk>" if hf_tok.token_to_id("<unk>") is not None else None
    write_json(folder / "tokenizer_config.json", config)


def export(model: Model, tokenizer: Tokenizer | None, out: Path, dtype: str | None = None) -> Exported:
    cfg = model.config
    hf_architecture(cfg)  # a clear error for a model no HF architecture holds
    torch_dtype = DTYPES.get(dtype or str(next(model.parameters()).dtype).removeprefix("torch."))
    if torch_dtype is None:
        raise TinyLMError(f"Hugging Face export takes --dtype float32, bfloat16 or float16, not {dtype}")
    from tinylm.formats.vocab import document_start

    bos = document_start(tokenizer) if tokenizer is not None else None  # what tinylm starts a prompt with
    eos = tokenizer.eos_id if tokenizer is not None else None
    config = to_hf_config(cfg, bos_id=bos, eos_id=eos)
    config["torch_dtype"] = str(torch_dtype).removeprefix("torch.")
    tensors = to_hf_state_dict(cfg, model_state_dict(model))
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight")  # transformers ties it back from tie_word_embeddings
    tensors = {k: v.to(torch_dtype).contiguous().cpu() for k, v in tensors.items()}
    notes = []
    check_replaceable(out, "a Hugging Face model folder", hf=True)
    with atomic_dir(out) as tmp:
        write_json(tmp / "config.json", config)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        write_json(tmp / "generation_config.json", {"bos_token_id": bos, "eos_token_id": eos})
        if tokenizer is not None:
            write_tokenizer(tokenizer, tmp, cfg.context_length)
        else:
            notes.append("no tokenizer in the checkpoint, so none in the folder")
    return Exported([out], notes)


# ---- import ------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TinyLMError(f"{path}: missing; a Hugging Face model folder needs it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise TinyLMError(f"{path}: expected a JSON object")
    return data


def _weight_files(folder: Path) -> list[Path]:
    for index in (SAFETENSORS_INDEX, TORCH_INDEX):
        if (folder / index).is_file():
            weight_map = _read_json(folder / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise TinyLMError(f"{folder / index}: no weight_map; the index is damaged")
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise TinyLMError(f"{folder}: shard {missing[0]} listed in {index} is missing "
                                  f"({len(missing)} of {len(files)} absent); download the whole folder")  # fmt: skip
            return files
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise TinyLMError(f"{folder}: no weights (model.safetensors, {SAFETENSORS_INDEX} or pytorch_model.bin)")


def read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            try:
                with safe_open(f, framework="pt") as st:
                    tensors.update({k: st.get_tensor(k) for k in st.keys()})  # noqa: SIM118 (not a dict)
            except (SafetensorError, OSError, ValueError) as e:
                raise TinyLMError(f"{f}: truncated or corrupt safetensors file ({e})") from None
        else:
            try:  # weights_only: tensors and plain containers only, never arbitrary pickled objects
                sd = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises several types for damaged or unsafe pickles
                raise TinyLMError(
                    f"{f}: not a plain PyTorch weights file ({type(e).__name__}); use the safetensors version"
                ) from None
            if not isinstance(sd, dict):
                raise TinyLMError(f"{f}: holds a {type(sd).__name__}, not a dictionary of tensors")
            tensors.update({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})
    return tensors


def _special_ids(folder: Path, config: dict[str, Any]) -> tuple[int | None, int | None]:
    gen = (
        _read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    )

    def first(key: str) -> int | None:
        value = gen.get(key, config.get(key))
        return value[0] if isinstance(value, list) and value else value if isinstance(value, int) else None

    bos, eos = first("bos_token_id"), first("eos_token_id")
    return (None if bos == eos else bos), eos  # BOS = EOS: documents are separated by EOS alone (GPT-2)


def read_tokenizer(folder: Path, bos: int | None, eos: int | None) -> Tokenizer | None:
    """A folder's tokenizer: tokenizer.model (SentencePiece) first, else tokenizer.json, else GPT-2's
    vocab.json + merges.txt. Special ids come from the model's config, which is what generation uses."""
    from tinylm.tokenizer.bpe import BPETokenizer
    from tinylm.tokenizer.sentencepiece import SentencePieceTokenizer

    if (folder / "tokenizer.model").is_file():
        return SentencePieceTokenizer.from_file(folder / "tokenizer.model")
    if (folder / "tokenizer.json").is_file():
        tok = BPETokenizer.from_file(folder / "tokenizer.json")
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from tokenizers import AddedToken, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        specials = {i for i in (bos, eos) if i is not None}
        hf.add_special_tokens([AddedToken(hf.id_to_token(i), special=True) for i in sorted(specials)])
        tok = BPETokenizer(hf)
    else:
        return None
    tok.bos_id = bos if bos is not None else tok.bos_id
    tok.eos_id = eos if eos is not None else tok.eos_id
    return tok


def load(folder: Path, tokenizer: Path | None = None, dtype: torch.dtype | None = None) -> Imported:
    if not folder.is_dir():
        raise TinyLMError(f"{folder}: not a folder; --from hf takes a Hugging Face model folder (config.json and "
                          "weights), drop --from to detect the file's format")  # fmt: skip
    config = _read_json(folder / "config.json")
    try:
        cfg = from_hf_config(config)
    except TinyLMError as e:
        raise TinyLMError(f"{folder / 'config.json'}: {e}") from None
    hf_tensors = read_tensors(_weight_files(folder))
    try:
        ours = from_hf_state_dict(cfg, hf_tensors)
    except TinyLMError as e:
        raise TinyLMError(f"{folder}: {e}") from None
    model = build(cfg, ours, dtype)
    notes = []
    if tokenizer is not None:
        tok = load_given_tokenizer(tokenizer)
    else:
        tok = read_tokenizer(folder, *_special_ids(folder, config))
        if tok is None:
            notes.append(
                "no tokenizer.model, tokenizer.json or vocab.json in the folder; imported without a tokenizer"
            )
        elif tok.vocab_size > cfg.vocab_size:
            notes.append(
                f"the folder's tokenizer has {tok.vocab_size} tokens but the model {cfg.vocab_size}; left out"
            )
            tok = None
    return Imported(model, tok, notes)
