"""nanoGPT's CPU Shakespeare baseline, trained twice in one run: a plain eager fp32 PyTorch loop and
tinylm's trainer with its default settings (bf16 autocast where the CPU has it, fused AdamW; torch.compile
is off by default). The two alternate every --chunk steps so
both see the same machine load; tinylm's run is stopped and resumed for that, which is bit-exact.

Character level, 4 layers, 4 heads, dim 128, context 64, exact GELU (nanoGPT's nn.GELU()), batch 12,
lr 1e-3 (warmup 100, cosine to 1e-4), AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, clip 1.0,
no dropout, 90/10 split.
nanoGPT's README reports a validation loss of about 1.88 after 2000 iterations.

python benchmarks/bench_train_shakespeare.py                 # 2000 iterations
python benchmarks/bench_train_shakespeare.py --iters 500 --chunk 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tinylm.model import Model
from tinylm.train import TrainConfig, train
from tinylm.train.batches import eval_rows
from tinylm.train.device import pick_precision
from tinylm.train.schedule import lr_at
from tinylm.train.shapes import build_config
from tinylm.train.tasks.charlm import char_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"
# nanoGPT's model: GPT-2 with the exact (erf) GELU of nn.GELU()
SHAPE = {"family": "gpt2", "n_layers": 4, "n_heads": 4, "dim": 128, "context_length": 64, "gelu": "exact"}


@torch.no_grad()
def val_loss(model: Model, data, batches: int = 100, batch: int = 12) -> float:
    """Mean fp32 loss over fixed, evenly spread validation windows (the same for every run)."""
    model.eval()
    losses = [model(*data.val.get(rows))[1].item() for rows in eval_rows(len(data.val), batch, batches)]
    return sum(losses) / len(losses)


class PlainLoop:
    """The reference: eager fp32, torch.optim.AdamW as it comes, forward / backward / clip / step."""

    def __init__(self, data, cfg: TrainConfig):
        self.data, self.cfg, self.step, self.seconds = data, cfg, 0, 0.0
        torch.manual_seed(cfg.seed)
        self.model = Model(build_config(data.tokenizer.vocab_size, **SHAPE))
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))  # fmt: skip
        self.g = torch.Generator().manual_seed(cfg.seed)

    def run(self, steps: int) -> None:
        t0 = time.perf_counter()
        for _ in range(steps):
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, self.cfg)
            x, y = self.data.train.get(torch.randint(len(self.data.train), (self.cfg.batch_size,), generator=self.g))
            loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
        self.seconds += time.perf_counter() - t0


class Trainer:
    """tinylm's trainer, run in chunks (stop_at, then --resume: bit-exact, so the result is that of one run);
    `seconds` is its own count of time spent in training steps."""

    def __init__(self, data, cfg: TrainConfig, out: str):
        self.data, self.cfg, self.step, self.seconds, self.result = data, cfg.replace(out_dir=out), 0, 0.0, None

    def run(self, steps: int) -> None:
        self.result = train(self.cfg, self.data, build_config(self.data.tokenizer.vocab_size, **SHAPE),
                            resume=self.step > 0, stop_at=self.step + steps, quiet=True)  # fmt: skip
        self.step, self.seconds = self.result.progress.step, self.result.progress.seconds

    @property
    def model(self) -> Model:
        return self.result.model.float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help=f"tinyshakespeare.txt (default {DATA})")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=250, help="alternate the runs every this many steps (load drifts)")
    args = ap.parse_args()
    data = char_data(args.data, SHAPE["context_length"])
    cfg = TrainConfig(batch_size=12, max_steps=args.iters, lr=1e-3, min_lr=1e-4, warmup_steps=100, beta2=0.99,
                      weight_decay=0.1, grad_clip=1.0, eval_interval=args.iters, eval_batches=20,
                      log_interval=100, device="cpu")  # fmt: skip
    print(f"{args.data.name}: {data.train.num_tokens:,} train / {data.val.num_tokens:,} val characters, "
          f"{args.iters} iterations of 12 x 64, {torch.get_num_threads()} threads")
    ours = pick_precision("auto", torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {("plain PyTorch loop (eager fp32, AdamW)", "fp32"): PlainLoop(data, cfg),
                ("tinylm train (defaults)", ours): Trainer(data, cfg, f"{tmp}/a")}  # fmt: skip
        done = 0
        while done < args.iters:
            n = min(args.chunk, args.iters - done)
            order = list(runs.values())
            for r in order if (done // args.chunk) % 2 == 0 else order[::-1]:
                r.run(n)
            done += n
            print(f"  step {done}: " + ", ".join(f"{name} {done * 768 / r.seconds:,.0f}" for (name, _), r in runs.items())
                  + " tokens/s", flush=True)  # fmt: skip
        base = args.iters * 768 / runs[next(iter(runs))].seconds
        print("\n| run | precision | tokens/s | vs plain loop | val loss |\n|---|---|---:|---:|---:|")
        for (name, prec), r in runs.items():
            tps = args.iters * 768 / r.seconds
            print(f"| {name} | {prec} | {tps:,.0f} | {tps / base:.2f}x | {val_loss(r.model, data):.4f} |")
    print("(nanoGPT's README: val loss ~1.88 at 2000 iterations on this configuration)")


if __name__ == "__main__":
    main()
