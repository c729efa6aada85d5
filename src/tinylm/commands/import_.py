"""`tinylm import`: a Hugging Face folder, GGUF, llama2.c or llm.c file into a tinylm checkpoint."""

from __future__ import annotations

import argparse
import sys

from tinylm.threads import add_threads_argument

NAME = "import"
ORDER = 75
HELP = "Import a Hugging Face folder, .gguf, llama2.c or llm.c model into a tinylm checkpoint."
EXAMPLES = """
  tinylm import ~/models/TinyLlama-1.1B --out runs/tinyllama
  tinylm import stories15M.bin --tokenizer tokenizer.bin --out runs/stories15M
  tinylm import model-q8_0.gguf --out runs/from-gguf
  tinylm import gpt2_124M.bin --out runs/gpt2 --dtype float32
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source", help="HF model folder, .gguf, llama2.c .bin or llm.c .bin (the kind is detected)"
    )
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument(
        "--tokenizer",
        help="tokenizer to attach instead of the one found with the model "
        "(tokenizer.model, tokenizer.bin, tokenizer.json, gpt2_tokenizer.bin or a tokenizer directory)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="weight dtype of the checkpoint (default: the source's; quantized sources become float32)",
    )
    p.add_argument("--from", dest="fmt", choices=("hf", "gguf", "llama2c", "llmc"), help="skip detection")
    add_threads_argument(p)  # converting and dequantizing tensors


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinylm.threads import use_threads

    use_threads(args.threads)  # before torch starts its thread pool
    import torch

    from tinylm.formats import detect, import_model

    source = Path(args.source)
    fmt = args.fmt or detect(source)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    result = import_model(source, Path(args.out), fmt, tokenizer=tokenizer, dtype=dtype)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    cfg, tok = result.model.config, result.tokenizer
    print(f"imported {fmt} {source} -> {args.out}: {cfg.family} model, {cfg.n_layers} layers, dim {cfg.dim}, "
          f"vocab {cfg.vocab_size}, {result.model.num_params():,} parameters, "
          f"tokenizer: {tok.kind if tok else 'none'}")  # fmt: skip
    return 0
