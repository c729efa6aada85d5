"""Fine-tuning benchmark, three tables from one run on this machine.

1. Story-words ("Write a story that uses the words X, Y and Z."): a Llama pretrained by tinylm on
   TinyStories text (--base with its --prepared data, whose validation stories are held out; or a small
   one pretrained here) is tuned on story-words examples by LoRA, QLoRA and full fine-tuning for the same
   number of steps. The requested words are common ones (tinylm.train.tasks.story_words: in 1% to 20% of
   the tuning stories). Rows: the base prompted with the same chat template, then each method. Columns:
   trainable parameters, size of the saved checkpoint, loss on held-out replies, words-satisfied rate
   (share of held-out prompts whose greedy story contains every requested word) and per-word rate (share
   of the requested words it contains), each ± its binomial standard error, time and peak RSS.
2. Peak memory (RSS) and step time of full / LoRA / QLoRA fine-tuning on the stories110M shape (random
   weights: the cost does not depend on them), each method in its own process so its peak is its own:
   the peak while training (Linux: counted from after setup) and the peak of setup, where QLoRA still
   builds the float model it quantizes.
3. LoRA vs QLoRA step time on the stories110M shape, alternating in one process (what QLoRA's NF4 base
   costs in time, under the same load).

python benchmarks/bench_finetune.py --threads 1           # all three (small base pretrained here)
python benchmarks/bench_finetune.py --only words --threads 1 --base /work/models/ts6l256/best \
    --prepared /work/models/ts_sp2k --tune-steps 800 --train 2000 --variants 4 --sentences 2 --new-tokens 64 \
    --lora-lr 5e-3 --full-lr 1e-3
python benchmarks/bench_finetune.py --only memory --steps-110m 3
python benchmarks/bench_finetune.py --only speed --steps-110m 4 --threads 1

Story-words settings (the command above; 2026-12-08, 190 held-out prompts, load 3.5-8): at finetune's
default learning rates (LoRA 2e-3, full 2e-4), 400 steps and 4-sentence stories no method beat the base by
more than a few points of the requested words. With 2-sentence stories (half the tokens per step, and most
of a story's content words requested), full fine-tuning at 1e-3 used 41-44% of the words (9.5-11% of prompts
every word; two runs) against the base's 8%, LoRA rank 8 on attn 19% at 5e-3 and 22% at 1e-2, QLoRA 20%.
LoRA rank 8 on every layer (--targets all, 4.4% of the base) reached 24%. Short runs on 64 prompts: full at
3e-3 learned less than at 1e-3, LoRA at 2e-2 diverged, LoRA on v,o at rank 16 did no better than on attn,
and --variants 4 made no measurable difference to full fine-tuning.
Teacher-forced (600-step runs), full fine-tuning lowered the loss on the requested words' first tokens
from 3.7 to 2.7 nats and LoRA to 3.2: this base (pretrained 375 steps) seems to lack a copying circuit that
a rank-8 update of its attention could reuse. The 4-row table took 36 minutes under that load.

On a busy machine give --threads 1: torch's threads wait for each other when another process holds a core
(a LoRA step of the 5M model took 1.5-1.9 s on 1 thread and 13-18 s on 2, alternating, under load).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

CONTEXT_110M = 256
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories_v2_head.txt"


def words_table(args: argparse.Namespace, work: Path) -> None:
    from tinylm.checkpoint import load_checkpoint
    from tinylm.train.instruct import encode, read_jsonl
    from tinylm.train.objectives import next_token
    from tinylm.train.tasks.story_words import words_rate, write_task

    base_dir, held, train = _base_and_stories(args, work)
    held, train = [_opening(s, args.sentences) for s in held[: args.test]], [_opening(s, args.sentences) for s in train]
    # write_task makes its first examples the test set: the held-out stories go first
    (work / "task.txt").write_text("\n<|endoftext|>\n".join(held + train[: args.train]), encoding="utf-8")
    n_train, _ = write_task(str(work / "task.txt"), work / "sw", args.train, len(held), variants=args.variants)
    base = load_checkpoint(base_dir)
    tok = base.tokenizer
    test = read_jsonl(work / "sw" / "test.jsonl")
    unseen = {s.strip() for s in held}
    if not all(r.messages[-1]["content"] in unseen for r in test):  # write_task splits by story: never
        sys.exit("a training story slipped into the test prompts")
    val = encode(test, tok, base.config.context_length, "truncate", quiet=True)
    total = base.model.num_params()
    sentences = f"first {args.sentences} sentences" if args.sentences else "whole stories"
    print(f"\nstory-words: {n_train} training examples ({args.variants} word set(s) per story, {sentences}), "
          f"{len(test)} held-out prompts (stories the base never saw), greedy, up to {args.new_tokens} new tokens; "
          f"base {total / 1e6:.2f}M params, {torch.get_num_threads()} threads; learning rate LoRA/QLoRA "
          f"{args.lora_lr or 'default'}, full {args.full_lr or 'default'}, batch {args.batch}")  # fmt: skip
    print(f"{'model':<22} {'trainable':>10} {'% base':>7} {'saved MB':>9} {'val loss':>9} {'all words':>13} "
          f"{'per word':>13} {'tune s':>7} {'s/step':>7} {'peak RSS MB':>12}", flush=True)  # fmt: skip
    for method in ["base", *args.methods.split(",")]:  # each row as soon as it is measured
        model, r = (base.model, {}) if method == "base" else _tune(args, method, base_dir, work)
        with torch.no_grad():
            loss = next_token(model.eval(), val.x, val.y).item()
        score = words_rate(model, tok, test, max_new_tokens=args.new_tokens)
        n = r.get("trainable", 0)
        cols = [f"{n:>10,}", f"{n / total:>7.2%}", f"{r['saved_mb']:>9.2f}"] if r else [f"{'-':>10}", f"{'-':>7}", f"{'-':>9}"]
        cols += [f"{loss:>9.3f}", f"{score.rate:>6.1%} ± {score.rate_se:<4.1%}",
                 f"{score.word_rate:>6.1%} ± {score.word_rate_se:<4.1%}"]  # fmt: skip
        cols += [f"{r['secs']:>7.0f}", f"{r['step_s']:>7.2f}", f"{r['peak_mb']:>12,.0f}"] if r else [f"{'-':>7}"] * 2 + [f"{'-':>12}"]
        name = "base (same template)" if method == "base" else f"{method} ({args.tune_steps} steps)"
        print(f"{name:<22} " + " ".join(cols), flush=True)
    print("saved MB: the checkpoint a run writes (LoRA/QLoRA: the adapter alone; QLoRA's NF4 base is written once "
          "beside it); peak RSS: the process's high-water mark while that method tuned; rates ± binomial standard "
          f"error (per word: over the {sum(len(r.extra['words']) for r in test)} requested words as independent "
          "trials, which understates it somewhat)")  # fmt: skip


def _opening(story: str, sentences: int | None) -> str:
    """The first `sentences` sentences of a story (all of it for None): shorter rows train faster on a CPU."""
    return story if sentences is None else " ".join(re.split(r"(?<=[.!?])\s+", story.strip())[:sentences])


def _base_and_stories(args: argparse.Namespace, work: Path) -> tuple[Path, list[str], list[str]]:
    """The base checkpoint, held-out stories and training stories. With --base, the held-out stories are the
    validation documents of the prepared data it was trained on (--prepared); else a small base is
    pretrained here on all but the last --test stories."""
    from tinylm.train.session import run_training
    from tinylm.train.tasks.story_words import read_stories

    if args.base:
        return args.base, *_prepared_split(args.prepared)
    stories = read_stories(str(args.stories))
    held, train = stories[-args.test :], stories[: -args.test]  # never pretrained on
    (work / "pretrain.txt").write_text("\n<|endoftext|>\n".join(train), encoding="utf-8")
    t0 = time.perf_counter()
    shape = {"family": "llama", "n_layers": args.layers, "dim": args.dim, "n_heads": 4, "context_length": args.context}
    run_training({"data": str(work / "pretrain.txt"), "out_dir": str(work / "base"), "vocab_size": 1024,
                  "max_steps": args.pretrain_steps, "batch_size": 16, "eval_interval": args.pretrain_steps,
                  "warmup_steps": min(50, args.pretrain_steps // 10)}, shape, quiet=True)  # fmt: skip
    print(f"pretrained the base: {args.pretrain_steps} steps in {time.perf_counter() - t0:.0f}s")
    return work / "base" / "best", held, train


def _prepared_split(prepared: Path | None) -> tuple[list[str], list[str]]:
    """(validation, training) stories of a `tinylm prepare` output, split as prepare split them (by a keyed
    hash of each document); checked against the document counts its manifest records."""
    from tinylm.data.prepare import _is_val
    from tinylm.train.tasks.story_words import read_stories

    if prepared is None:
        sys.exit("--base needs --prepared: the prepared data it was trained on, whose validation stories are held out")
    manifest = json.loads((prepared / "manifest.json").read_text())
    split = manifest["split"]
    key = int(split["seed"]).to_bytes(8, "little")
    stories = [s for src in manifest["sources"] for s in read_stories(src)]
    held = [s for s in stories if _is_val(s, split["val_fraction"], key)]
    train = [s for s in stories if not _is_val(s, split["val_fraction"], key)]
    want = manifest["splits"]["val"]["documents"], manifest["splits"]["train"]["documents"]
    if (len(held), len(train)) != want:
        sys.exit(f"{prepared}: re-splitting gave {len(held)} / {len(train)} stories, the manifest says {want}")
    return held, train


def _tune(args: argparse.Namespace, method: str, base: Path, work: Path) -> tuple[Any, dict[str, float]]:
    from tinylm.train.finetune import Options, run_finetune

    opts = Options(str(base), str(work / "sw" / "train.jsonl"), method=method, rank=args.rank, targets=args.targets,
                   too_long="truncate")  # a story cut at the context can still use its words
    peak = _reset_peak()
    t0 = time.perf_counter()
    lr = args.full_lr if method == "full" else args.lora_lr
    lr = {"lr": lr} if lr else {}  # else finetune's default per method
    result = run_finetune(opts, {"out_dir": str(work / method), "max_steps": args.tune_steps, "batch_size": args.batch,
                                 "eval_interval": args.tune_steps, "eval_batches": 2, **lr}, quiet=True)  # fmt: skip
    secs = time.perf_counter() - t0
    logged = [r for r in map(json.loads, (work / method / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    first, last = logged[0], logged[-1]  # training time between two logged steps: no setup, no evaluation
    trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    saved = (work / method / "last" / "model.safetensors").stat().st_size  # the weights, not the optimizer state
    return result.model, {"trainable": trainable, "saved_mb": saved / 1e6, "secs": secs,
                          "step_s": (last["time"] - first["time"]) / (last["step"] - first["step"])
                          if last is not first else secs / args.tune_steps,
                          "peak_mb": peak() if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def measure(method: str, steps: int, context: int) -> dict[str, float]:
    """In a fresh process: build the stories110M shape, set it up for `method`, time `steps` optimizer
    steps (after one warm-up step) and report the peak RSS."""
    model, opt, x = _setup(method, context)
    setup_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    training_peak = _reset_peak()  # QLoRA's float model before quantizing is setup, not training
    times = [_step(model, opt, x) for _ in range(steps + 1)][1:]
    peak_mb = training_peak() if training_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "setup_mb": setup_mb,
            "peak_mb": peak_mb, "min_s": min(times), "max_s": max(times)}  # fmt: skip


def _setup(method: str, context: int) -> tuple[Any, Any, torch.Tensor]:
    """(model, optimizer, a batch of 1 x context + 1 tokens) of the stories110M shape (random weights, seed 0)
    set up for `method`: LoRA rank 8 on every target, over a float base or (qlora) an NF4 one."""
    from tinylm import transforms
    from tinylm.adapters.spec import LoraSpec, parse_targets
    from tinylm.config import get_preset
    from tinylm.model import Model

    torch.manual_seed(0)
    cfg = get_preset("stories110M")
    model = Model(cfg)
    if method == "qlora":
        from tinylm.quantize.transform import make_spec

        transforms.apply(model, "quantization", make_spec("nf4"))
    if method != "full":
        transforms.apply(model, "adapters", LoraSpec(rank=8, alpha=16, targets=parse_targets("all", cfg)).to_dict())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, opt, torch.randint(0, cfg.vocab_size, (1, context + 1))


def _step(model: Any, opt: Any, x: torch.Tensor) -> float:
    """Seconds of one optimizer step on the batch `x`."""
    from tinylm.train.objectives import next_token

    t0 = time.perf_counter()
    next_token(model.train(), x[:, :-1], x[:, 1:]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def speed_table(args: argparse.Namespace) -> None:
    """LoRA and QLoRA step times on the stories110M shape in one process, alternating step by step so both
    see the same machine load; QLoRA's cost over LoRA is dequantizing its NF4 base in forward and backward."""
    runs = {m: _setup(m, CONTEXT_110M) for m in ("lora", "qlora")}
    times: dict[str, list[float]] = {m: [] for m in runs}
    for i in range(args.steps_110m + 1):
        for m, (model, opt, x) in runs.items():
            t = _step(model, opt, x)
            if i:  # the first round warms up
                times[m].append(t)
    ratio = [q / lo for lo, q in zip(times["lora"], times["qlora"], strict=True)]
    print(f"\nstories110M shape, batch 1 x {CONTEXT_110M}, {torch.get_num_threads()} threads, {args.steps_110m} "
          "alternating steps each: seconds per step (min-max)")  # fmt: skip
    for m, t in times.items():
        print(f"{m:<6} {min(t):>6.2f} - {max(t):<6.2f}")
    print(f"QLoRA / LoRA, step by step: {min(ratio):.2f} - {max(ratio):.2f}x")


def _reset_peak():
    """Return freed memory to the OS and restart the kernel's peak-RSS count (Linux); a function that
    reads the peak since then, or None where that is not possible."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None

    def peak_mb() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024

    return peak_mb


def memory_table(args: argparse.Namespace) -> None:
    print(f"\nstories110M shape, batch 1 x {CONTEXT_110M} tokens, AdamW, fp32, {args.steps_110m} timed steps "
          "per method (each in its own process)")  # fmt: skip
    print(f"{'method':<7} {'trainable':>12} {'setup MB':>9} {'training peak RSS MB':>21} {'step s (min-max)':>18}")
    for method in ("full", "lora", "qlora"):
        cmd = [sys.executable, __file__, "--child", method, "--steps-110m", str(args.steps_110m)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"{method:<7} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{method:<7} {r['trainable']:>12,} {r['setup_mb']:>9,.0f} {r['peak_mb']:>21,.0f} "
              f"{r['min_s']:>8.2f} - {r['max_s']:<7.2f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("words", "memory", "speed"))
    p.add_argument("--stories", type=Path, default=SHARED, help="TinyStories text (default: ../shared's head)")
    p.add_argument("--base", type=Path, help="reuse this pretrained checkpoint (with --prepared) instead of pretraining")
    p.add_argument("--prepared", type=Path, help="the prepared data --base was trained on: its validation stories are held out")
    p.add_argument("--methods", default="lora,qlora,full", help="fine-tuning methods to compare (comma-separated)")
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--tune-steps", type=int, default=200)
    p.add_argument("--train", type=int, default=1000, help="story-words training stories")
    p.add_argument("--variants", type=int, default=1, help="examples per training story, each asking for other words")
    p.add_argument("--test", type=int, default=256, help="held-out prompts (at most)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="attn", help="LoRA targets (attn: q,k,v,o; see tinylm finetune --help)")
    p.add_argument("--batch", type=int, default=8, help="fine-tuning batch size")
    p.add_argument("--lora-lr", type=float, help="LoRA and QLoRA learning rate (default: tinylm finetune's)")
    p.add_argument("--full-lr", type=float, help="full fine-tuning learning rate (default: tinylm finetune's)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--dim", type=int, default=128, help="base model width (4 heads)")
    p.add_argument("--layers", type=int, default=4, help="base model layers")
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--sentences", type=int, help="tune and test on the first N sentences of each story (default: all)")
    p.add_argument("--steps-110m", type=int, default=3)
    p.add_argument("--context", type=int, default=384, help="base context; the 110M runs use 256")
    p.add_argument("--child", choices=("full", "lora", "qlora"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args.child, args.steps_110m, CONTEXT_110M)))
        return
    if args.only in (None, "words"):
        with tempfile.TemporaryDirectory() as work:
            words_table(args, Path(work))
    if args.only in (None, "memory"):
        memory_table(args)
    if args.only in (None, "speed"):
        speed_table(args)


if __name__ == "__main__":
    main()
