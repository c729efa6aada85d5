"""`tinylm quantize`: a checkpoint with its Linear weights rounded to 8 or 4 bits, stored packed."""

from __future__ import annotations

import argparse

from tinylm.threads import add_threads_argument

NAME = "quantize"
ORDER = 65
HELP = "Quantize a checkpoint's weights (int8, q8_0, q4_0, int4, nf4, GPTQ, SmoothQuant W8A8): 4-7x smaller, run packed."
EXAMPLES = """
  tinylm quantize runs/stories --scheme q8_0 --out runs/stories-q8_0
  tinylm quantize runs/stories --scheme int4 --group-size 64 --out runs/stories-int4
  tinylm quantize runs/stories --scheme q4_0 --out runs/stories-q4_0 --eval-data data/val.txt
  tinylm quantize runs/big --scheme nf4 --quantize-embeddings --out runs/big-nf4   # the head too (untied)
  tinylm quantize runs/stories --scheme gptq-q4_0 --calibration data/train.txt --out runs/stories-gptq
  tinylm quantize runs/stories --scheme smoothquant --alpha auto --calibration data/train.txt --out runs/stories-sq

schemes: int8 (per-channel), q8_0 and q4_0 (GGUF's blocks of 32), int4 (asymmetric groups of 32/64/128,
default 128), nf4 (QLoRA NormalFloat, blocks of 64, double-quantized absmax). The token embedding and
the output head stay float unless --quantize-embeddings (the head only: embeddings are looked up, not
multiplied).
calibrated schemes (need --calibration text): gptq-int4 and gptq-q4_0 (GPTQ to the int4 / q4_0 grids,
stored as int4 / q4_0: same kernels, same GGUF export), smoothquant (SmoothQuant, then int8 weights x
int8 per-token activations); w8a8 is the same without smoothing and needs no calibration.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tinylm.quantize import SCHEMES

    p.add_argument("checkpoint", help="a float tinylm checkpoint directory")
    from tinylm.quantize.calibrate import SAMPLES
    from tinylm.quantize.calibrated import CALIBRATED
    from tinylm.quantize.gptq import DAMP
    from tinylm.quantize.smoothquant import ALPHA

    p.add_argument("--scheme", required=True, help=f"one of {', '.join([*SCHEMES, *CALIBRATED])}")
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
    p.add_argument("--calibration", default=None,
                   help="gptq-*/smoothquant: calibration text (file, folder, dataset, or a shard folder's train "
                        "split); keep it apart from --eval-data")  # fmt: skip
    p.add_argument("--samples", type=int, default=SAMPLES, help=f"calibration sequences (default {SAMPLES})")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per calibration sequence (default: the context)")
    p.add_argument("--damp", type=float, default=DAMP, help=f"GPTQ damping, share of the mean Hessian diagonal (default {DAMP})")
    p.add_argument("--act-order", action="store_true", help="GPTQ: columns in order of decreasing Hessian diagonal")
    p.add_argument("--alpha", default=str(ALPHA),
                   help=f"SmoothQuant migration strength in [0, 1] (default {ALPHA}), or auto: the best of a few on "
                        "the calibration text")  # fmt: skip
    add_threads_argument(p)


def _keep(args: argparse.Namespace) -> list[str]:
    from tinylm.quantize.schemes import DEFAULT_KEEP

    keep = list(DEFAULT_KEEP) if args.keep is None else [k for k in args.keep.split(",") if k]
    return [k for k in keep if k != "lm_head"] if args.quantize_embeddings else keep


def run(args: argparse.Namespace) -> int:
    import copy
    import time
    from pathlib import Path

    from tinylm.threads import use_threads

    use_threads(args.threads)  # before torch starts its thread pool

    from tinylm import transforms
    from tinylm.checkpoint import load_checkpoint, save_checkpoint
    from tinylm.errors import TinyLMError
    from tinylm.formats.common import check_replaceable
    from tinylm.quantize import SCHEMES, report
    from tinylm.quantize.calibrated import CALIBRATED
    from tinylm.quantize.linear import tensor_reports
    from tinylm.quantize.transform import make_spec

    if args.scheme not in (*SCHEMES, *CALIBRATED):
        raise TinyLMError(f"unknown quantization scheme {args.scheme!r}; choose one of {', '.join([*SCHEMES, *CALIBRATED])}")
    calibrated = args.scheme in CALIBRATED
    spec = None if calibrated else make_spec(args.scheme, args.group_size, _keep(args))
    check_replaceable(Path(args.out), "a tinylm checkpoint")  # --out is replaced as a whole
    ckpt = load_checkpoint(args.checkpoint)
    if "quantization" in transforms.applied(ckpt.model):
        raise TinyLMError(f"{args.checkpoint} is already quantized ({transforms.applied(ckpt.model)['quantization']['kind']}); "
                          "quantize the original float checkpoint")  # fmt: skip
    original = copy.deepcopy(ckpt.model)
    start = time.perf_counter()
    if calibrated:
        opt = _calibrated(args, ckpt)
        original_weights = opt.smoothed or original
    else:
        transforms.apply(ckpt.model, "quantization", spec)
        original_weights = original
    seconds = time.perf_counter() - start
    out = save_checkpoint(args.out, ckpt.model, ckpt.tokenizer)
    print(report.table(tensor_reports(original_weights, ckpt.model), Path(args.checkpoint), out))
    for note in opt.notes if calibrated else []:
        print(f"note: {note}")
    print(f"quantized ({args.scheme}) in {seconds:.1f} s; wrote {out}")
    if args.eval_data:
        print(report.quality(Path(args.checkpoint), out, args.eval_data, args.eval_tokens))
    return 0


def _calibrated(args: argparse.Namespace, ckpt):  # -> calibrated.Options
    """Quantize ckpt.model in place with a calibrated scheme (recorded in model.transforms)."""
    from tinylm.errors import TinyLMError
    from tinylm.quantize.calibrate import calibration_tokens
    from tinylm.quantize.calibrated import Options, quantize_calibrated
    from tinylm.quantize.smoothquant import check_alpha

    alpha = args.alpha if args.alpha == "auto" else _float(args.alpha, "--alpha")
    if alpha != "auto":
        check_alpha(alpha)
    opt = Options(args.scheme, _keep(args), args.group_size, args.damp, args.act_order, alpha)
    model = ckpt.model.eval()
    if args.scheme == "w8a8":
        tokens = None
    elif args.calibration is None:
        raise TinyLMError(f"--scheme {args.scheme} needs calibration text: add --calibration FILE (e.g. the training text)")
    else:
        seq_len = args.seq_len or model.config.context_length
        if seq_len > model.config.context_length:
            raise TinyLMError(f"--seq-len {seq_len} is longer than the model's context ({model.config.context_length})")
        if ckpt.tokenizer is None:
            raise TinyLMError(f"{args.checkpoint} has no tokenizer to read the calibration text with; attach one")
        tokens = calibration_tokens(args.calibration, ckpt.tokenizer, model.config.vocab_size, args.samples, seq_len)
    model.transforms = {**getattr(model, "transforms", {}), "quantization": quantize_calibrated(model, tokens, opt)}
    return opt


def _float(text: str, flag: str) -> float:
    from tinylm.errors import TinyLMError

    try:
        return float(text)
    except ValueError:
        raise TinyLMError(f"{flag} {text!r} is not a number; give e.g. 0.5 (or auto)") from None
