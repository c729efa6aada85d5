"""`tinylm merge`: an adapter checkpoint merged into its base, written as a plain checkpoint."""

from __future__ import annotations

import argparse

NAME = "merge"
ORDER = 43
HELP = "Merge a LoRA adapter into its base weights and write a plain checkpoint."
EXAMPLES = """
  tinylm merge runs/sw-lora/best --out runs/sw-merged
  tinylm merge runs/sw-qlora/best --out runs/sw-merged-nf4    # QLoRA: re-quantized, error reported
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", help="an adapter checkpoint (from `tinylm finetune --method lora|qlora`)")
    p.add_argument("--out", required=True, help="where to write the merged checkpoint")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tinylm.adapters import model_spec
    from tinylm.adapters.lora import merge_lora
    from tinylm.checkpoint import load_checkpoint, save_checkpoint
    from tinylm.errors import TinyLMError

    ckpt = load_checkpoint(args.adapter)
    model_spec(ckpt.model)  # one line if there is no adapter to merge
    if Path(args.out).resolve() == Path(args.adapter).resolve():
        raise TinyLMError("--out is the adapter itself; write the merged checkpoint somewhere else")
    error = merge_lora(ckpt.model)
    save_checkpoint(args.out, ckpt.model, ckpt.tokenizer)
    quantized = "quantization" in getattr(ckpt.model, "transforms", {})
    print(f"wrote {args.out}" + (f" (re-quantized after merging: largest weight error {error:.3g})" if quantized else ""))
