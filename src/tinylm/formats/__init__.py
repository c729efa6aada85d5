"""Conversions between tinylm checkpoints and other formats (Hugging Face, GGUF, llama2.c, llm.c).

`FORMATS` is the table of targets (what each holds, its options, what reads it); `export_model` and
`import_model` dispatch to one module per format, and `detect` tells a source's format from its bytes.
Modules load lazily, so listing the table imports nothing heavy.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError


@dataclass(frozen=True)
class Format:
    name: str
    module: str
    families: str
    gqa: str
    biases: str
    untied_head: str
    weights: str
    tokenizer: str
    read_by: str


_TABLE = (
    Format("hf", "hf_folder", "llama, gpt2", "llama", "yes", "yes", "f32 bf16 f16 (--dtype)",
           "tokenizer.json (+tokenizer.model)", "transformers (AutoModelForCausalLM), vLLM, llama.cpp's converter"),
    Format("gguf", "gguf_format", "llama, gpt2", "llama", "yes", "yes", "f32 f16 q8_0 (--quant); q4_0/q8_0 checkpoints as stored",
           "in the metadata", "llama.cpp, ollama, LM Studio"),
    Format("llama2c", "llama2c", "llama", "yes", "no", "yes", "v0/v1 f32, v2 q8_0 (--version)",
           "tokenizer.bin (SentencePiece kinds)", "llama2.c: run.c (v0), runq.c (v2); v1 is export.py's"),
    Format("llmc", "llmc", "gpt2 (MLP 4x, tied)", "no", "required", "no", "f32 (v3), bf16 (v5) (--dtype)",
           "gpt2_tokenizer.bin", "llm.c: train_gpt2.c, train_gpt2.cu"),
    Format("peft", "tinylm.adapters.peft", "llama, gpt2", "llama", "yes", "yes", "a LoRA adapter only (f32)",
           "none (the base's)", "peft (PeftModel.from_pretrained on the base's hf export)"),
)  # fmt: skip
FORMATS: dict[str, Format] = {f.name: f for f in _TABLE}
COLUMNS = ("format", "families", "GQA", "biases", "untied head", "weights", "tokenizer", "read by")


def format_table() -> str:
    rows = [COLUMNS] + [(f.name, f.families, f.gqa, f.biases, f.untied_head, f.weights, f.tokenizer, f.read_by)
                        for f in FORMATS.values()]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def module(name: str) -> Any:
    if name not in FORMATS:
        raise TinyLMError(
            f"unknown format {name!r}; choose one of: {', '.join(FORMATS)} (see `tinylm export --formats`)"
        )
    where = FORMATS[name].module
    return importlib.import_module(where if where.startswith("tinylm.") else f"tinylm.formats.{where}")


def detect(path: Path) -> str:
    """The format of an import source: an HF folder, a .gguf, a llama2.c or an llm.c .bin."""
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise TinyLMError(f"{path}: a folder without config.json is not a Hugging Face model folder")
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TinyLMError(f"{config}: not valid JSON ({e})") from None
        if isinstance(data, dict) and "model_type" not in data and "n_layers" in data:
            raise TinyLMError(f"{path}: already a tinylm checkpoint; use it directly (or `tinylm export` it)")
        return "hf"
    if not path.is_file():
        raise TinyLMError(f"{path}: no such file or folder")
    with open(path, "rb") as f:
        head = f.read(8)
    from tinylm.formats import llama2c, llmc
    from tinylm.formats.tokenizer_files import TOKENIZER_MAGIC

    magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else None
    if head[:4] == b"GGUF":
        return "gguf"
    if magic == llama2c.MAGIC:
        return "llama2c"
    if magic == llmc.MAGIC:
        return "llmc"
    if magic == TOKENIZER_MAGIC:
        raise TinyLMError(
            f"{path}: an llm.c tokenizer file, not a model; import the model and pass this as --tokenizer"
        )
    if llama2c.looks_like_legacy(path):
        return "llama2c"
    raise TinyLMError(
        f"{path}: not a format tinylm imports (an HF folder, .gguf, llama2.c or llm.c .bin); "
        "a llama2.c v0 file whose size disagrees with its header is truncated"
    )


def export_model(checkpoint: Path, target: str, out: Path, **options: Any) -> Any:
    """Export a tinylm checkpoint; returns the module's Exported (files written, notes)."""
    from tinylm.checkpoint import load_checkpoint

    mod = module(target)
    if checkpoint.resolve() in (out.resolve(), *out.resolve().parents):
        raise TinyLMError(f"--out {out} is inside the checkpoint being exported; choose a path outside {checkpoint}")
    ckpt = load_checkpoint(checkpoint)
    if target != "peft" and "adapters" in getattr(ckpt.model, "transforms", {}):
        from tinylm.adapters.lora import merge_lora

        merge_lora(ckpt.model)  # other formats hold plain weights: the adapter goes into them
        done = mod.export(ckpt.model, ckpt.tokenizer, out, **options)
        done.notes.append("merged the LoRA adapter into its base weights (export --to peft keeps it apart)")
        return done
    return mod.export(ckpt.model, ckpt.tokenizer, out, **options)


def import_model(source: Path, out: Path, fmt: str | None = None, **options: Any) -> Any:
    """Import `source` into a tinylm checkpoint at `out`; returns the module's Imported."""
    from tinylm.checkpoint import save_checkpoint
    from tinylm.formats.common import check_replaceable

    check_replaceable(out, "a tinylm checkpoint", hf=False)
    imported = module(fmt or detect(source)).load(source, **options)
    tok = imported.tokenizer
    if tok is not None and tok.vocab_size > imported.model.config.vocab_size:
        imported.notes.append(
            f"the tokenizer has {tok.vocab_size} tokens but the model {imported.model.config.vocab_size}; left out"
        )
        imported.tokenizer = None
    save_checkpoint(out, imported.model, imported.tokenizer)
    return imported
