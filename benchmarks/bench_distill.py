"""Distillation on real text: does a bigger teacher's whole next-token distribution teach a small student
more than the text alone, for the same steps on the same tokens?

1. TinyStories (../shared/data/tinystories_v2_head.txt): the last --held-out stories are kept for
   evaluation only; the rest is prepared (BPE, --vocab tokens) and trains the teacher.
2. Three students of one smaller shape, the same initial weights, the same examples in the same order
   (the non-overlapping context-long windows of the training tokens, which a teacher cache stores):
   plain cross-entropy, distilled from the live teacher, distilled from a top-k cache of it.
3. tinylm.eval on the held-out stories: perplexity with its standard error, and KL(teacher || model) with
   top-1 agreement; decode tokens/s (greedy, batch 1, best of 3) of the teacher and a student.

python benchmarks/bench_distill.py --threads 1                          # ~15 min on a busy 2-core laptop
python benchmarks/bench_distill.py --teacher-steps 1500 --student-steps 1000 --alpha 0.9 --temperature 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tinylm.config import load_config
from tinylm.data.prepare import prepare
from tinylm.distill import (
    Distill,
    DistillConfig,
    LiveTeacher,
    TeacherInfo,
    WithTeacher,
    common_vocab,
    write_cache,
)
from tinylm.distill.cache import identity
from tinylm.eval import Protocol, evaluate_models
from tinylm.generate import Generator
from tinylm.train import TrainConfig, train
from tinylm.train.batches import Strided
from tinylm.train.data import shard_data
from tinylm.train.shapes import build_config
from tinylm.train.trainer import TrainData

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories_v2_head.txt"
TEACHER = {"family": "llama", "n_layers": 4, "n_heads": 4, "dim": 128}
STUDENT = {"family": "llama", "n_layers": 2, "n_heads": 4, "dim": 64}


def split_stories(source: Path, held_out: int, work: Path) -> tuple[Path, list[str]]:
    """The training text (a file) and the held-out stories (never seen by the tokenizer or any model)."""
    stories = [s.strip() for s in source.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()]
    path = work / "train.txt"
    path.write_text("\n<|endoftext|>\n".join(stories[:-held_out]), encoding="utf-8")
    return path, stories[-held_out:]


def settings(args: argparse.Namespace, out: Path, steps: int, warmup: int) -> TrainConfig:
    return TrainConfig(out_dir=str(out), batch_size=args.batch_size, max_steps=steps, lr=args.lr, warmup_steps=warmup,
                       eval_interval=steps, eval_batches=10, log_interval=50, device="cpu", precision="fp32",
                       seed=args.seed)  # fmt: skip


def train_students(args: argparse.Namespace, data: TrainData, teacher: Path, work: Path) -> dict[str, Path]:
    """Plain, live-distilled and cache-distilled students: their checkpoints, by name."""
    tiled = TrainData(Strided(data.train, args.context), data.val, data.tokenizer, data.name)
    shape = build_config(data.tokenizer.vocab_size, context_length=args.context, **STUDENT)
    info = TeacherInfo.read(teacher)
    vocab = common_vocab(info, shape, data.tokenizer)
    dcfg = DistillConfig(alpha=args.alpha, temperature=args.temperature, divergence=args.divergence)
    cfg = settings(args, work, args.student_steps, args.student_steps // 10)
    out = {}
    t0 = time.perf_counter()
    cache = write_cache(work / "cache", LiveTeacher.load(info, vocab), identity(info, tiled.train, vocab), tiled.train,
                        args.top_k, batch_size=32, device=torch.device("cpu"), autocast=torch.no_grad)  # fmt: skip
    cache_s = time.perf_counter() - t0
    runs = {
        "student, plain CE": (tiled, None),
        "student, distilled (live)": (tiled, Distill(dcfg, vocab, LiveTeacher.load(info, vocab))),
        f"student, distilled (top-{args.top_k} cache)": (TrainData(WithTeacher(tiled.train, cache), data.val,
                                                                   data.tokenizer, data.name), Distill(dcfg, vocab)),
    }  # fmt: skip
    for i, (name, (d, objective)) in enumerate(runs.items()):
        kw = {"objective": objective} if objective else {}
        t0 = time.perf_counter()
        train(cfg.replace(out_dir=str(work / f"student{i}")), d, shape, quiet=True, **kw)
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s" + (f" (+{cache_s:.0f} s writing the cache, "
              f"kept mass {cache.manifest['kept_mass_mean']:.1%})" if "cache" in name else ""))  # fmt: skip
        out[name] = work / f"student{i}" / "last"
    return out


def decode_speed(ckpt: Path, new_tokens: int = 100, repeats: int = 3) -> float:
    """Greedy decode tokens/s at batch 1 after a one-token prompt, best of `repeats`."""
    gen = Generator.load(ckpt)
    best = 0.0
    for _ in range(repeats):
        run = gen.start([1], new_tokens, temperature=0.0)
        for _ in run:
            pass
        best = max(best, run.timing.decode_tokens_per_s)
    return best


def table(results, params: dict[str, int], speed: dict[str, float], teacher: str) -> str:
    head = (f"{'model':<34}{'params':>9}{'ratio':>7}{'held-out ppl':>17}{'KL(teacher||.)':>17}{'top-1 agree':>13}"
            f"{'decode tok/s':>14}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        kl = f"{r.kl:.4f} ± {r.kl_se:.4f}" if r.kl is not None and r.model != teacher else "-"
        agree = f"{r.top1:.1%}" if r.top1 is not None and r.model != teacher else "-"
        lines.append(f"{r.model:<34}{params[r.model]:>9,}{params[r.model] / params[teacher]:>7.2f}"
                     f"{f'{r.perplexity:.3f} ± {r.perplexity_se:.3f}':>17}{kl:>17}{agree:>13}"
                     f"{f'{speed[r.model]:.0f}' if r.model in speed else '-':>14}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text, held_out = split_stories(args.data, args.held_out, work)
        prepare([text], out=work / "data", tokenizer="bpe", vocab_size=args.vocab, val_fraction=0.02, progress=False)
        data = shard_data(work / "data", args.context, name="tinystories-head")
        t0 = time.perf_counter()
        shape = build_config(data.tokenizer.vocab_size, context_length=args.context, **TEACHER)
        train(settings(args, work / "teacher", args.teacher_steps, args.teacher_steps // 10), data, shape, quiet=True)
        print(f"teacher: trained in {time.perf_counter() - t0:.0f} s")
        models = {"teacher": work / "teacher" / "last", **train_students(args, data, work / "teacher" / "last", work)}
        results = evaluate_models(list(models.values()), held_out, protocol=Protocol("windows", context=args.context),
                                  reference=models["teacher"], max_tokens=args.eval_tokens, progress=False)  # fmt: skip
        for r, name in zip(results, models, strict=True):
            r.model = name
        params = {n: load_config(p).num_params() for n, p in models.items()}
        speed = {n: decode_speed(models[n]) for n in ("teacher", "student, plain CE")}
        print(table(results, params, speed, "teacher"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA, help="TinyStories text, stories separated by <|endoftext|>")
    p.add_argument("--teacher-steps", type=int, default=400)
    p.add_argument("--student-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--divergence", default="forward")
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--held-out", type=int, default=200, help="stories kept for evaluation")
    p.add_argument("--eval-tokens", type=int, default=40_000, help="held-out tokens scored per model")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=1337)
    return p.parse_args()


if __name__ == "__main__":
    main()
