"""`tinylm quantize`: a checkpoint with its Linear weights rounded to 8 or 4 bits, stored packed."""

from __future__ import annotations

import argparse

NAME = "quantize"
ORDER = 65
HELP = "Quantize a checkpoint's weights (int8, q8_0, q4_0, int4, nf4): 4-7x smaller, faster on CPU."
EXAMPLES = """
  tinylm quantize runs/stories --scheme q8_0 --out runs/stories-q8_0
  tinylm quantize runs/stories --scheme int4 --group-size 64 --out runs/stories-int4
  tinylm quantize runs/stories --scheme q4_0 --out runs/stories-q4_0 --eval-data data/val.txt
  tinylm quantize runs/big --scheme nf4 --quantize-embeddings --out runs/big-nf4   # the head too (untied)

schemes: int8 (per-channel), q8_0 and q4_0 (GGUF's blocks of 32), int4 (asymmetric groups of 32/64/128,
default 128), nf4 (QLoRA NormalFloat, blocks of 64, double-quantized absmax). The token embedding and
the output head stay float unless --quantize-embeddings (the head only: embeddings are looked up, not
multiplied).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tinylm.quantize import SCHEMES

    p.add_argument("checkpoint", help="a float tinylm checkpoint directory")
    p.add_argument("--scheme", required=True, help=f"one of {', '.join(SCHEMES)}")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--group-size", type=int, default=None,
                   help="int4/nf4: values per scale (32, 64, 128; default 128 int4, 64 nf4); a row it does "
                        "not divide falls back to a smaller group")  # fmt: skip
    p.add_argument("--keep", default=None,
                   help="comma-separated layers to keep float (default tok_emb,pos_emb,lm_head), "
                        "e.g. lm_head,layers.0.attn.wqkv")  # fmt: skip
    p.add_argument("--quantize-embeddings", action="store_true", help="quantize the output head too")
    p.add_argument("--eval-data", default=None,
                   help="text (file, folder, dataset) to compare perplexity/KL/top-1 with the original")  # fmt: skip
    p.add_argument("--eval-tokens", type=int, default=20000, help="tokens scored by --eval-data (default 20000)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")


def _keep(args: argparse.Namespace) -> list[str]:
    from tinylm.quantize.schemes import DEFAULT_KEEP

    keep = list(DEFAULT_KEEP) if args.keep is None else [k for k in args.keep.split(",") if k]
    return [k for k in keep if k != "lm_head"] if args.quantize_embeddings else keep


def run(args: argparse.Namespace) -> int:
    import copy
    from pathlib import Path

    import torch

    from tinylm import transforms
    from tinylm.checkpoint import load_checkpoint, save_checkpoint
    from tinylm.errors import TinyLMError
    from tinylm.quantize import report
    from tinylm.quantize.linear import tensor_reports
    from tinylm.quantize.transform import make_spec

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    spec = make_spec(args.scheme, args.group_size, _keep(args))
    ckpt = load_checkpoint(args.checkpoint)
    if "quantization" in transforms.applied(ckpt.model):
        raise TinyLMError(f"{args.checkpoint} is already quantized ({transforms.applied(ckpt.model)['quantization']['kind']}); "
                          "quantize the original float checkpoint")  # fmt: skip
    original = copy.deepcopy(ckpt.model)
    transforms.apply(ckpt.model, "quantization", spec)
    out = save_checkpoint(args.out, ckpt.model, ckpt.tokenizer)
    print(report.table(tensor_reports(original, ckpt.model), Path(args.checkpoint), out))
    print(f"wrote {out}")
    if args.eval_data:
        print(report.quality(Path(args.checkpoint), out, args.eval_data, args.eval_tokens))
    return 0
