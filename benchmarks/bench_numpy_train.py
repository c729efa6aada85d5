"""Training speed of the NumPy trainer (tinylm.nptrain) against the loop a PyTorch user would write
(eager fp32: forward, cross-entropy, backward, clip, torch.optim.AdamW), measured in one run on the
same machine with the same thread count, model, weights and batches.

1. tokens/s on the stories260K and gpt-micro shapes, for each --threads count: the two engines
   alternate in chunks of --steps steps, --repeats times, so both see the same machine load; the
   table gives the range over repeats and the median.
2. loss curves: --curve-steps steps of each on the same character-level text and the same batches
   (warmup + cosine, weight decay, clipping, as the trainers run them): a table every 50 steps, the
   largest gap, and both curves drawn into --plot. The two are the same computation in float32, so
   the curves must overlap.

python benchmarks/bench_numpy_train.py                      # 1 and 2 threads, then the 500-step curves
python benchmarks/bench_numpy_train.py --threads 2 --repeats 5 --curve-steps 0
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinylm.blas import set_blas_threads
from tinylm.config import ModelConfig, get_preset
from tinylm.model import Model
from tinylm.nptrain.adamw import AdamW, clip_grad_norm
from tinylm.nptrain.memory import keep_freed_memory
from tinylm.nptrain.model import Transformer
from tinylm.train.config import TrainConfig
from tinylm.train.order import Sampler
from tinylm.train.schedule import lr_at

TORCH = "torch eager fp32"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


class TorchLoop:
    """The reference: eager fp32, torch.optim.AdamW as it comes (decay on matrices only)."""

    def __init__(self, cfg: ModelConfig, train: TrainConfig):
        torch.manual_seed(train.seed)
        self.model, self.train = Model(cfg), train
        params = list(self.model.parameters())
        self.opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": train.weight_decay},
                                      {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                     lr=train.lr, betas=(train.beta1, train.beta2))  # fmt: skip

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        for g in self.opt.param_groups:
            g["lr"] = lr
        logits = self.model(torch.from_numpy(x))
        loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


class NumpyLoop:
    """The NumPy trainer's step (tinylm.nptrain.trainer._optimizer_step without the bookkeeping)."""

    def __init__(self, cfg: ModelConfig, train: TrainConfig, weights: dict[str, np.ndarray], threads: int):
        self.model, self.train = Transformer(cfg, weights, threads=threads), train
        self.opt = AdamW(self.model.flat.size, self.model.n_decay, train.lr, (train.beta1, train.beta2), 1e-8,
                         train.weight_decay, threads=threads)  # fmt: skip

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self.opt.lr = lr
        loss = self.model.loss_and_backward(x, y)
        clip_grad_norm(self.model.flat_grad, self.train.grad_clip)
        self.opt.step(self.model.flat, self.model.flat_grad)
        self.model.zero_grad()
        return loss


def engines(cfg: ModelConfig, train: TrainConfig, threads: int) -> dict[str, TorchLoop | NumpyLoop]:
    ref = TorchLoop(cfg, train)
    weights = {k: v.detach().numpy().copy() for k, v in ref.model.state_dict().items()}
    return {"numpy": NumpyLoop(cfg, train, weights, threads), TORCH: ref}


def throughput(name: str, cfg: ModelConfig, threads: int, args: argparse.Namespace) -> None:
    train = TrainConfig(lr=1e-3, max_steps=10**6)
    loops = engines(cfg, train, threads)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (args.batch, args.context))
    y = np.roll(x, -1, axis=1)
    for loop in loops.values():  # warm up: first-touch allocations, thread pools
        loop.step(x, y, 1e-3)
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(args.repeats):
        for key, loop in loops.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loop.step(x, y, 1e-3)
            rates[key].append(args.steps * x.size / (time.perf_counter() - t0))
    ratios = [a / b for a, b in zip(rates["numpy"], rates[TORCH], strict=True)]
    for key, r in rates.items():
        print(f"| {name} | {threads} | {key} | {min(r):,.0f} - {max(r):,.0f} | {np.median(r):,.0f} |")
    print(f"| {name} | {threads} | numpy / torch | {min(ratios):.2f} - {max(ratios):.2f}x | {np.median(ratios):.2f}x |")


def curves(cfg: ModelConfig, ids: np.ndarray, threads: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Both engines' training losses, step by step, on the same batches."""
    train = TrainConfig(lr=1e-3, max_steps=args.curve_steps, warmup_steps=args.curve_steps // 10, beta2=0.99)
    loops = engines(cfg, train, threads)
    sampler = Sampler(len(ids) - args.curve_context, args.curve_batch, 1, seed=train.seed)
    windows = np.arange(args.curve_context + 1)
    losses: dict[str, list[float]] = {k: [] for k in loops}
    for step in range(args.curve_steps):
        w = ids[sampler.step()[0][:, None] + windows]
        for key, loop in loops.items():
            losses[key].append(loop.step(w[:, :-1], w[:, 1:], lr_at(step, train)))
    return {k: np.array(v) for k, v in losses.items()}


def report_curves(runs: dict[str, dict[str, np.ndarray]], steps: int, plot: Path) -> None:
    """A table every 50 steps (and the last), the largest gaps, and the plot."""
    names = list(runs)
    print(f"\ntraining loss on the same batches, numpy / torch eager fp32 ({steps} steps)\n")
    print("| step | " + " | ".join(f"{n} numpy | {n} torch" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for s in sorted({1, *range(50, steps + 1, 50), steps}):
        print(f"| {s} | " + " | ".join(f"{runs[n]['numpy'][s - 1]:.4f} | {runs[n][TORCH][s - 1]:.4f}" for n in names) + " |")
    smooth = np.ones(20) / 20
    for n, r in runs.items():
        a, b = r["numpy"], r[TORCH]
        print(f"{n}: largest gap {np.abs(a - b).max():.2e} (one step), "
              f"{np.abs(np.convolve(a, smooth, 'valid') - np.convolve(b, smooth, 'valid')).max():.2e} (20-step mean)")  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for n, r in runs.items():
        line = ax.plot(np.arange(1, steps + 1), r[TORCH], lw=3, alpha=0.4, label=f"{n} torch eager fp32")[0]
        ax.plot(np.arange(1, steps + 1), r["numpy"], lw=1, color=line.get_color(), label=f"{n} numpy")
    ax.set(xlabel="step", ylabel="training loss", title="NumPy trainer vs torch, same data and batches")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    print(f"plot: {plot}")


def use(threads: int) -> None:
    """As the trainers do: torch's pool gets the threads; the NumPy trainer splits its batch between
    that many processes (tinylm.nptrain.parallel), with one BLAS thread in each."""
    torch.set_num_threads(threads)
    if not set_blas_threads(1 if threads > 1 else threads):
        print("(NumPy's BLAS is not OpenBLAS: its threads follow OPENBLAS_NUM_THREADS, set before the run)")


def shapes(names: str, vocab: int, context: int) -> dict[str, ModelConfig]:
    """The presets named (comma-separated) with the benchmark's vocabulary and context."""
    return {n: get_preset(n).replace(vocab_size=vocab, context_length=context) for n in names.split(",")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="thread counts of both engines, comma-separated (default 1,2)")
    p.add_argument("--shapes", default="stories260K,gpt-micro", help="presets, comma-separated (default: stories260K,gpt-micro)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--context", type=int, default=256, help="tokens per sequence (default 256)")
    p.add_argument("--vocab", type=int, default=512, help="vocabulary of the speed test (stories260K's: 512)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per chunk (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="alternating chunks per engine (default 5)")
    p.add_argument("--curve-steps", type=int, default=500, help="loss-curve length, 0 to skip (default 500)")
    p.add_argument("--curve-batch", type=int, default=12)
    p.add_argument("--curve-context", type=int, default=64)
    p.add_argument("--text", type=Path, default=DATA, help="text for the loss curves (default: tinyshakespeare)")
    p.add_argument("--plot", type=Path, default=Path("numpy_vs_torch_loss.png"), help="where to draw the curves")
    args = p.parse_args()
    keep_freed_memory()  # as the NumPy trainer does; the torch loop in this process gets the same malloc
    print(f"batch {args.batch} x {args.context} tokens, {args.steps} steps x {args.repeats} alternating repeats, "
          f"torch {torch.__version__}, numpy {np.__version__}, load average {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    print("| shape | threads | engine | training tokens/s (range) | median |\n|---|---|---|---|---|")
    counts = [int(n) for n in args.threads.split(",")]
    for threads in counts:
        use(threads)
        for name, cfg in shapes(args.shapes, args.vocab, args.context).items():
            throughput(name, cfg, threads, args)
    print(f"\nload average after the runs: {os.getloadavg()[0]:.2f} (other processes skew the figures)")
    if args.curve_steps:
        text = args.text.read_bytes()
        chars, ids = np.unique(np.frombuffer(text, np.uint8), return_inverse=True)
        runs = {name: curves(cfg, ids.astype(np.int64), counts[-1], args)
                for name, cfg in shapes(args.shapes, len(chars), args.curve_context).items()}  # fmt: skip
        report_curves(runs, args.curve_steps, args.plot)


if __name__ == "__main__":
    main()
