"""nanoGPT's CPU Shakespeare baseline, trained twice in one run: a plain eager fp32 PyTorch loop and
tinylm's trainer with its default settings (bf16 autocast where the CPU has it, fused AdamW).

Character level, 4 layers, 4 heads, dim 128, context 64, batch 12, lr 1e-3 (warmup 100, cosine to 1e-4),
AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, clip 1.0, no dropout, 90/10 split.
nanoGPT's README reports a validation loss of about 1.88 after 2000 iterations.

python benchmarks/bench_train_shakespeare.py                 # 2000 iterations
python benchmarks/bench_train_shakespeare.py --iters 500 --compile
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tinylm.model import Model
from tinylm.train import TrainConfig, train
from tinylm.train.batches import eval_rows
from tinylm.train.device import pick_precision
from tinylm.train.schedule import lr_at
from tinylm.train.shapes import build_config
from tinylm.train.tasks.charlm import char_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"
SHAPE = {"family": "gpt2", "n_layers": 4, "n_heads": 4, "dim": 128, "context_length": 64}


@torch.no_grad()
def val_loss(model: Model, data, batches: int = 100, batch: int = 12) -> float:
    """Mean fp32 loss over fixed, evenly spread validation windows (the same for every run)."""
    model.eval()
    losses = [model(*data.val.get(rows))[1].item() for rows in eval_rows(len(data.val), batch, batches)]
    return sum(losses) / len(losses)


def plain_loop(data, cfg: TrainConfig) -> tuple[Model, float]:
    """The reference: eager fp32, torch.optim.AdamW as it comes, forward / backward / clip / step."""
    torch.manual_seed(cfg.seed)
    model = Model(build_config(data.tokenizer.vocab_size, **SHAPE))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))  # fmt: skip
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    for step in range(cfg.max_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = data.train.get(torch.randint(len(data.train), (cfg.batch_size,), generator=g))
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, cfg.max_steps * cfg.batch_size * SHAPE["context_length"] / (time.perf_counter() - t0)


def tinylm_train(data, cfg: TrainConfig) -> tuple[Model, float]:
    with tempfile.TemporaryDirectory() as out:
        r = train(cfg.replace(out_dir=out), data, build_config(data.tokenizer.vocab_size, **SHAPE), quiet=True)
    return r.model.float(), r.progress.tokens / r.progress.seconds  # training time: the final eval excluded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help=f"tinyshakespeare.txt (default {DATA})")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, alternating order; best tokens/s counts")
    ap.add_argument("--compile", action="store_true", help="also time tinylm with --compile (compile time included)")
    args = ap.parse_args()
    data = char_data(args.data, SHAPE["context_length"])
    cfg = TrainConfig(batch_size=12, max_steps=args.iters, lr=1e-3, min_lr=1e-4, warmup_steps=100, beta2=0.99,
                      weight_decay=0.1, grad_clip=1.0, eval_interval=args.iters, eval_batches=20,
                      log_interval=100, device="cpu")  # fmt: skip
    print(f"{args.data.name}: {data.train.num_tokens:,} train / {data.val.num_tokens:,} val characters, "
          f"{args.iters} iterations of 12 x 64, {torch.get_num_threads()} threads")
    ours = pick_precision("auto", torch.device("cpu"))
    variants = {"plain PyTorch loop (eager fp32, AdamW)": ("fp32", lambda: plain_loop(data, cfg)),
                "tinylm train (defaults)": (ours, lambda: tinylm_train(data, cfg))}  # fmt: skip
    if args.compile:
        variants["tinylm train --compile"] = (ours, lambda: tinylm_train(data, cfg.replace(compile=True)))
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    for rep in range(args.repeats):
        for name in list(variants)[:: 1 if rep % 2 == 0 else -1]:  # alternate the order: load drifts
            model, tps = variants[name][1]()
            speeds[name].append(tps)
            losses.setdefault(name, val_loss(model, data))
            print(f"  {name}: {tps:,.0f} tokens/s", flush=True)
    base = max(speeds["plain PyTorch loop (eager fp32, AdamW)"])
    print("\n| run | precision | tokens/s (best of runs) | vs plain loop | val loss |\n|---|---|---:|---:|---:|")
    for name, (prec, _) in variants.items():
        tps = max(speeds[name])
        print(f"| {name} | {prec} | {tps:,.0f} | {tps / base:.2f}x | {losses[name]:.4f} |")
    print("(nanoGPT's README: val loss ~1.88 at 2000 iterations on this configuration)")


if __name__ == "__main__":
    main()
