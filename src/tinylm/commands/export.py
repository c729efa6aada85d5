"""`tinylm export`: a checkpoint into a format other tools run (Hugging Face, GGUF, llama2.c, llm.c, PEFT)."""

from __future__ import annotations

import argparse
import sys

from tinylm.threads import add_threads_argument

NAME = "export"
ORDER = 70
HELP = "Export a checkpoint for Hugging Face, llama.cpp (GGUF), llama2.c or llm.c."
EXAMPLES = """
  tinylm export --formats
  tinylm export runs/stories --to hf --out stories-hf
  tinylm export runs/stories --to gguf --quant q8_0 --out stories-q8_0.gguf
  tinylm export runs/stories --to llama2c --version 2 --out stories_q80.bin
  tinylm export runs/gpt --to llmc --dtype bfloat16 --out gpt2_bf16.bin
  tinylm export runs/chat/best --to peft --out chat-peft   # a LoRA adapter for peft (base: --to hf)
"""
TARGETS = ("hf", "gguf", "llama2c", "llmc", "peft")
# which option each target takes (anything else given is a mistake worth reporting)
OPTIONS = {
    "hf": ("dtype",),
    "gguf": ("quant",),
    "llama2c": ("version", "tokenizer_out"),
    "llmc": ("dtype", "tokenizer_out"),
    "peft": (),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a tinylm checkpoint directory")
    p.add_argument("--to", choices=TARGETS, help="target format")
    p.add_argument("--out", help="output folder (hf, peft) or file (gguf, llama2c, llmc)")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="hf: weight dtype (default: the checkpoint's); llmc: float32 (version 3) or bfloat16 (5)",
    )
    p.add_argument(
        "--version",
        type=int,
        choices=(0, 1, 2),
        help="llama2c: 0 = run.c (default), 1 = fp32, 2 = Q8_0 for runq.c",
    )
    p.add_argument(
        "--quant", choices=("f32", "f16", "q8_0"), help="gguf: weight type of the matrices (default f32)"
    )
    p.add_argument(
        "--tokenizer-out",
        help="llama2c/llmc: tokenizer file path (default: tokenizer.bin / gpt2_tokenizer.bin beside --out)",
    )
    p.add_argument("--formats", action="store_true", help="print what each format holds and exit")
    add_threads_argument(p)  # quantizing blocks and converting tensors


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinylm.threads import use_threads

    use_threads(args.threads)  # before torch or NumPy start their thread pools
    from tinylm.errors import TinyLMError
    from tinylm.formats import export_model, format_table

    if args.formats:
        print(format_table())
        return 0
    missing = [
        flag
        for flag, value in (("CHECKPOINT", args.checkpoint), ("--to", args.to), ("--out", args.out))
        if not value
    ]
    if missing:
        raise TinyLMError(
            f"missing {', '.join(missing)}; e.g. tinylm export runs/model --to gguf --out model.gguf"
        )
    given = {k for k in ("dtype", "version", "quant", "tokenizer_out") if getattr(args, k) is not None}
    wrong = sorted(given - set(OPTIONS[args.to]))
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise TinyLMError(f"{flags} does not apply to --to {args.to} (it takes: "
                          f"{', '.join('--' + o.replace('_', '-') for o in OPTIONS[args.to])})")  # fmt: skip
    options = {k: getattr(args, k) for k in given}
    if "tokenizer_out" in options:
        options["tokenizer_out"] = Path(options["tokenizer_out"])
    result = export_model(Path(args.checkpoint), args.to, Path(args.out), **options)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for f in result.files:
        print(f"wrote {f}")
    return 0
