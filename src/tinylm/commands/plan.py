"""`tinylm plan`: how big a model, and how many tokens, for the data or the time you have."""

from __future__ import annotations

import argparse

from tinylm.threads import add_threads_argument

NAME = "plan"
ORDER = 30
HELP = ("Compute-optimal sizing (Chinchilla): a shape and token count for your data (~20 tokens/parameter) or "
        "for your time (measured tokens/s here, lowest predicted loss).")
EXAMPLES = """
  tinylm plan --tokens 300M                   # the model size 300M tokens train compute-optimally
  tinylm plan --params 15M                    # the tokens (and compute) a 15M model wants
  tinylm plan --minutes 60                    # measures tokens/s of candidate shapes on this machine and
                                              # picks the lowest loss Chinchilla's law predicts for them
  tinylm plan --data data/tinystories --minutes 30 --vocab-size 32000
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", help="training tokens available, e.g. 300M, 1.5B")
    p.add_argument("--params", help="a model size to plan for, e.g. 15M")
    p.add_argument("--minutes", type=float, help="wall-clock budget: tokens/s is measured for each candidate, and the "
                   "one with the lowest predicted loss after that many minutes is suggested")
    p.add_argument("--data", help="a `tinylm prepare` directory: its training tokens (and vocabulary)")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary of the candidates (default 4096 or --data's)")
    p.add_argument("--context", type=int, default=256, help="context length of the candidates (default 256)")
    p.add_argument("--family", choices=("llama", "gpt2"), default="llama")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step, for measuring and step counts")
    p.add_argument("--device", default="auto", help="where to measure (auto, cpu, cuda, mps)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="of the measured steps, as `tinylm train` (default auto)")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> None:
    from tinylm.threads import use_threads

    threads = use_threads(args.threads)
    from tinylm.config import PRESETS
    from tinylm.errors import TinyLMError
    from tinylm.plan import TOKENS_PER_PARAM, candidates, closest, fit_budget, parse_count, table
    from tinylm.train.metrics import duration, human

    tokens = parse_count(args.tokens) if args.tokens else None
    vocab = args.vocab_size
    if args.data:
        from tinylm.data.shards import Manifest

        m = Manifest.load(args.data).raw
        tokens = tokens or m["splits"]["train"]["tokens"]
        vocab = vocab or m["vocab_size"]
    if args.minutes is not None and not args.minutes > 0:
        raise TinyLMError(f"--minutes {args.minutes:g}: give a positive wall-clock budget, e.g. --minutes 10")
    if not (tokens or args.params or args.minutes):
        raise TinyLMError("give --tokens, --params, --minutes or --data (what you have to spend)")
    cands = candidates(vocab or 4096, args.context, args.family)
    if args.params:
        chosen = closest(cands, parse_count(args.params))
        why = f"closest to {args.params} parameters"
    elif args.minutes:
        print(f"measuring training speed on this machine (batch {args.batch_size} x {args.context}, "
              f"{threads} thread{'s' if threads > 1 else ''}) ...")
        chosen = fit_budget(cands, args.minutes * 60, args.batch_size, args.device, args.precision, unique=tokens)
        reach = chosen.tokens_per_s * args.minutes * 60 / chosen.params  # type: ignore[operator]
        why = (f"the lowest loss Chinchilla's law predicts after {args.minutes:g} minutes at the speeds measured here"
               f"{' and your ' + human(tokens) + ' tokens' if tokens else ''}; it sees {reach:.0f} tokens/parameter")
    else:
        chosen = closest(cands, tokens / TOKENS_PER_PARAM)  # type: ignore[operator]
        why = f"{human(tokens)} tokens / {TOKENS_PER_PARAM:g} tokens per parameter = {human(tokens / TOKENS_PER_PARAM)}"  # type: ignore[operator]
    print(table(cands, chosen, args.minutes * 60 if args.minutes else None))
    c, tps = chosen.config, chosen.tokens_per_s
    if args.minutes and tps:
        D, what = int(tps * args.minutes * 60), f"what {args.minutes:g} minutes at {human(tps)} tokens/s reach"
    elif tokens:
        D, what = tokens, "your data, once"
    else:
        D, what = chosen.optimal_tokens, f"{TOKENS_PER_PARAM:g} per parameter"
    steps = max(1, D // (args.batch_size * args.context))
    took = f", about {duration(D / tps)} here" if tps else ""
    shape = (f"--preset {chosen.name}" if chosen.name in PRESETS else
             f"--family {c.family} --layers {c.n_layers} --dim {c.dim} --heads {c.n_heads}")  # fmt: skip
    print(f"\nsuggested: {chosen.name} ({human(chosen.params)} params; {why})\n"
          f"  train on {human(D)} tokens ({what}) = {steps:,} steps of {args.batch_size} x {args.context}; "
          f"compute 6ND = {chosen.flops(D):.2e} FLOPs{took}\n"
          f"  tinylm train --data {args.data or '<data>'} {shape} --context {args.context} "
          f"--batch-size {args.batch_size} --steps {steps}")  # fmt: skip
    if tokens and D > 4 * tokens:
        print(f"  note: that is {D / tokens:.0f} passes over your {human(tokens)} tokens; beyond ~4, more data helps more")
