"""Fine-tuning benchmark, two tables from one run on this machine.

1. Story-words ("Write a story that uses the words X, Y and Z."): a small Llama is pretrained by tinylm
   on TinyStories text, then tuned on story-words examples by LoRA and by full fine-tuning for the same
   number of steps. Rows: the base prompted with the same chat template, LoRA, full. Columns: trainable
   parameters, validation loss on held-out replies, and the words-satisfied rate (share of held-out
   prompts whose greedy story contains every requested word).
2. Peak memory (RSS) and step time of full / LoRA / QLoRA fine-tuning on the stories110M shape (random
   weights: the cost does not depend on them), each method in its own process so its peak is its own:
   the peak while training (Linux: counted from after setup) and the peak of setup, where QLoRA still
   builds the float model it quantizes.

python benchmarks/bench_finetune.py                      # both, on ../shared/data's TinyStories head
python benchmarks/bench_finetune.py --only memory --steps-110m 3
python benchmarks/bench_finetune.py --only words --pretrain-steps 1500 --tune-steps 400
python benchmarks/bench_finetune.py --only words --dim 64 --layers 2 --context 256 --pretrain-steps 100 --tune-steps 40
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CONTEXT_110M = 256
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories_v2_head.txt"


def words_table(args: argparse.Namespace, work: Path) -> None:
    from tinylm.checkpoint import load_checkpoint
    from tinylm.train.finetune import Options, run_finetune
    from tinylm.train.instruct import encode, read_jsonl
    from tinylm.train.objectives import next_token
    from tinylm.train.session import run_training
    from tinylm.train.tasks.story_words import read_stories, words_rate, write_task

    stories = read_stories(str(args.stories))
    held = stories[-args.test :]  # never pretrained or tuned on
    (work / "pretrain.txt").write_text("\n<|endoftext|>\n".join(stories[: -args.test]), encoding="utf-8")
    # write_task makes its first examples the test set: the held-out stories go first
    (work / "task.txt").write_text("\n<|endoftext|>\n".join(held + stories[: args.train]), encoding="utf-8")
    t0 = time.perf_counter()
    shape = {"family": "llama", "n_layers": args.layers, "dim": args.dim, "n_heads": 4, "context_length": args.context}
    run_training({"data": str(work / "pretrain.txt"), "out_dir": str(work / "base"), "vocab_size": 1024,
                  "max_steps": args.pretrain_steps, "batch_size": 16, "eval_interval": args.pretrain_steps,
                  "warmup_steps": min(50, args.pretrain_steps // 10)}, shape, quiet=True)  # fmt: skip
    print(f"pretrained the base: {args.pretrain_steps} steps in {time.perf_counter() - t0:.0f}s")
    write_task(str(work / "task.txt"), work / "sw", args.train, args.test)
    base = load_checkpoint(work / "base" / "best")
    tok = base.tokenizer
    test = read_jsonl(work / "sw" / "test.jsonl")
    val = encode(test, tok, base.config.context_length, "truncate", quiet=True)
    rows = [("base (same template)", base.model, 0, 0.0)]
    for method in ("lora", "full"):
        t0 = time.perf_counter()
        opts = Options(str(work / "base" / "best"), str(work / "sw" / "train.jsonl"), method=method, rank=args.rank,
                       too_long="truncate")  # a story cut at the context can still use its words
        result = run_finetune(opts, {"out_dir": str(work / method), "max_steps": args.tune_steps,
                                     "eval_interval": args.tune_steps}, quiet=True)  # fmt: skip
        n = sum(p.numel() for p in result.model.parameters() if p.requires_grad) if method == "lora" else \
            result.model.num_params()  # fmt: skip
        rows.append((f"{method} ({args.tune_steps} steps)", result.model, n, time.perf_counter() - t0))
    total = base.model.num_params()
    print(f"\nstory-words: {len(test)} held-out prompts, greedy, up to {args.new_tokens} new tokens; base "
          f"{total / 1e6:.2f}M params")  # fmt: skip
    print(f"{'model':<22} {'trainable':>10} {'% base':>7} {'val loss':>9} {'words':>7} {'tune s':>7}")
    for name, model, n, secs in rows:
        with torch.no_grad():
            loss = next_token(model.eval(), val.x, val.y).item()
        rate = words_rate(model, tok, test, max_new_tokens=args.new_tokens)
        print(f"{name:<22} {n:>10,} {n / total:>7.2%} {loss:>9.3f} {rate:>7.1%} {secs:>7.0f}")


def measure(method: str, steps: int, context: int) -> dict[str, float]:
    """In a fresh process: build the stories110M shape, set it up for `method`, time `steps` optimizer
    steps (after one warm-up step) and report the peak RSS."""
    from tinylm import transforms
    from tinylm.adapters.spec import LoraSpec, parse_targets
    from tinylm.config import get_preset
    from tinylm.model import Model
    from tinylm.train.objectives import next_token

    torch.manual_seed(0)
    cfg = get_preset("stories110M")
    model = Model(cfg)
    if method == "qlora":
        from tinylm.quantize.transform import make_spec

        transforms.apply(model, "quantization", make_spec("nf4"))
    if method != "full":
        transforms.apply(model, "adapters", LoraSpec(rank=8, alpha=16, targets=parse_targets("all", cfg)).to_dict())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (1, context + 1))
    setup_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    training_peak = _reset_peak()  # QLoRA's float model before quantizing is setup, not training
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        next_token(model.train(), x[:, :-1], x[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    peak_mb = training_peak() if training_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"trainable": sum(p.numel() for p in params), "setup_mb": setup_mb, "peak_mb": peak_mb,
            "min_s": min(times), "max_s": max(times)}  # fmt: skip


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
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"{method:<7} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{method:<7} {r['trainable']:>12,} {r['setup_mb']:>9,.0f} {r['peak_mb']:>21,.0f} "
              f"{r['min_s']:>8.2f} - {r['max_s']:<7.2f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("words", "memory"))
    p.add_argument("--stories", type=Path, default=SHARED, help="TinyStories text (default: ../shared's head)")
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--tune-steps", type=int, default=200)
    p.add_argument("--train", type=int, default=1000, help="story-words training examples")
    p.add_argument("--test", type=int, default=50, help="held-out prompts")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--dim", type=int, default=128, help="base model width (4 heads)")
    p.add_argument("--layers", type=int, default=4, help="base model layers")
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--steps-110m", type=int, default=3)
    p.add_argument("--context", type=int, default=384, help="base context; the 110M runs use 256")
    p.add_argument("--child", choices=("full", "lora", "qlora"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps_110m, CONTEXT_110M)))
        return
    if args.only != "memory":
        with tempfile.TemporaryDirectory() as work:
            words_table(args, Path(work))
    if args.only != "words":
        memory_table(args)


if __name__ == "__main__":
    main()
