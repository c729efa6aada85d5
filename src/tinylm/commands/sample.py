"""`tinylm sample`: a checkpoint and prompts in, text streamed out."""

from __future__ import annotations

import argparse

from tinylm.threads import add_threads_argument

NAME = "sample"
ORDER = 50
HELP = "Generate text from a checkpoint, streamed to the terminal (torch engine or the NumPy runtime)."
EXAMPLES = """
  tinylm sample runs/stories15M "Once upon a time"
  tinylm sample runs/stories15M "Once upon a time" -n 100 --temperature 0
  tinylm sample runs/stories15M "Lily" "Tom" --seed 1 --top-k 40 --stop "."
  tinylm sample runs/stories15M --engine numpy --temperature 0.8 --min-p 0.05
  tinylm sample runs/no-tokenizer --ids "1 403 411" -n 20
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint directory (config.json, model.safetensors, tokenizer/)")
    p.add_argument(
        "prompts", nargs="*", help="prompt text; several prompts run as one batch (none: start from BOS)"
    )
    p.add_argument(
        "--ids", action="append", metavar="IDS", help="a prompt as token ids, e.g. '1 403 411' (repeatable)"
    )
    p.add_argument("-n", "--max-new-tokens", type=int, default=None,
                   help="tokens to generate per prompt (default: up to the context's last position; "
                        "more slide the window: the last context/2 tokens are run again)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9; 1 is off)")
    p.add_argument(
        "--min-p", type=float, default=None, help="drop tokens below min-p times the top probability"
    )
    p.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1: off)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")
    p.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable)"
    )
    p.add_argument("--engine", default="auto",
                   help="auto (default): numpy on the CPU for models of at most 120M parameters (50M quantized), "
                        "which it decodes faster, else torch; or torch, or numpy (NumPy only, no torch)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="torch engine device: cpu or cuda (default cpu)")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the decode step (slow start, fast tokens)"
    )
    add_threads_argument(p)
    p.add_argument(
        "--truncate", action="store_true", help="keep the end of a prompt that is too long for the context"
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from tinylm.threads import use_threads

    use_threads(args.threads)  # before torch or NumPy start their thread pools
    from tinylm.errors import TinyLMError
    from tinylm.generate.generator import ENGINES, Generator, pick_engine

    if args.engine == "auto":
        args.engine = pick_engine(args.checkpoint, args.device, args.compile)
    if args.engine not in ENGINES:
        raise TinyLMError(f"unknown engine {args.engine!r}; choose one of: {', '.join(ENGINES)}")
    if args.engine == "torch":
        from tinylm.train.device import pick_device

        args.device = str(pick_device(args.device))  # an unknown or absent device is one line
    prompts: list = list(args.prompts) + [_parse_ids(s) for s in args.ids or []]
    gen = Generator.load(args.checkpoint, engine=args.engine, device=args.device, compile=args.compile)
    if not prompts:  # no prompt: start from the document-start token
        prompts = [[]]
    run = gen.start(
        prompts,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=args.stop,
        truncate=args.truncate,
    )
    out = sys.stdout
    if len(run.prompts) == 1:  # one prompt: stream it
        prompt = run.prompts[0]
        out.write(gen.tokenizer.decode(prompt) if gen.tokenizer is not None else " ".join(map(str, prompt)))
        for _, token, piece in run:
            out.write(piece if gen.tokenizer is not None else f" {token}" if token is not None else "")
            out.flush()
        out.write("\n")
    else:  # a batch: print each completion whole, in order
        for _ in run:
            pass
        for i, (ids, c) in enumerate(zip(run.prompts, run.completions, strict=True)):
            head = gen.tokenizer.decode(ids) if gen.tokenizer is not None else " ".join(map(str, ids))
            body = c.text if c.text is not None else " " + " ".join(map(str, c.ids))
            out.write(f"--- [{i}]\n{head}{body}\n")
    t = run.timing
    print(
        f"prompt: {t.prompt_tokens} tokens at {t.prefill_tokens_per_s:,.1f} tok/s | "
        f"decode: {t.new_tokens} tokens at {t.decode_tokens_per_s:,.1f} tok/s ({args.engine} engine)",
        file=sys.stderr,
    )
    return 0


def _parse_ids(text: str) -> list[int]:
    from tinylm.errors import TinyLMError

    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise TinyLMError(f"--ids {text!r}: expected token ids separated by spaces or commas") from None
