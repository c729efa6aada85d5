"""Training speed of the NumPy trainer (tinylm.nptrain) against the loop a PyTorch user would write
(eager fp32: forward, cross-entropy, backward, clip, torch.optim.AdamW), measured in one run on the
same machine with the same thread count, model, weights and batches.

1. tokens/s on the stories260K and gpt-micro shapes: the two engines alternate in chunks of --steps
   steps, --repeats times, so both see the same machine load; the table gives the range over repeats.
2. loss curves: --curve-steps steps of each on the same character-level text and the same batches
   (warmup + cosine, weight decay, clipping, as the trainers run them); prints a few points and the
   largest gap. The two are the same computation in float32, so the curves must overlap.

python benchmarks/bench_numpy_train.py --text ../shared/data/tinyshakespeare.txt
python benchmarks/bench_numpy_train.py --threads 2 --batch 8 --context 256 --repeats 5 --curve-steps 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

THREADS = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "2")
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # read when NumPy loads BLAS
    os.environ[var] = THREADS

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tinylm.config import ModelConfig, get_preset  # noqa: E402
from tinylm.model import Model  # noqa: E402
from tinylm.nptrain.adamw import AdamW, clip_grad_norm  # noqa: E402
from tinylm.nptrain.model import Transformer  # noqa: E402
from tinylm.train.config import TrainConfig  # noqa: E402
from tinylm.train.order import Sampler  # noqa: E402
from tinylm.train.schedule import lr_at  # noqa: E402

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

    def __init__(self, cfg: ModelConfig, train: TrainConfig, weights: dict[str, np.ndarray]):
        self.model, self.train = Transformer(cfg, weights), train
        self.opt = AdamW(self.model.flat.size, self.model.n_decay, train.lr, (train.beta1, train.beta2), 1e-8,
                         train.weight_decay)  # fmt: skip

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self.opt.lr = lr
        loss = self.model.loss_and_backward(x, y)
        clip_grad_norm(self.model.flat_grad, self.train.grad_clip)
        self.opt.step(self.model.flat, self.model.flat_grad)
        self.model.zero_grad()
        return loss


def engines(cfg: ModelConfig, train: TrainConfig) -> dict[str, TorchLoop | NumpyLoop]:
    ref = TorchLoop(cfg, train)
    weights = {k: v.detach().numpy().copy() for k, v in ref.model.state_dict().items()}
    return {"numpy": NumpyLoop(cfg, train, weights), "torch eager fp32": ref}


def throughput(name: str, cfg: ModelConfig, args: argparse.Namespace) -> None:
    train = TrainConfig(lr=1e-3, max_steps=10**6)
    loops = engines(cfg, train)
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
    ratios = [a / b for a, b in zip(rates["numpy"], rates["torch eager fp32"], strict=True)]
    for key, r in rates.items():
        print(f"| {name} | {cfg.num_params() / 1e3:.0f}K | {key} | {min(r):,.0f} - {max(r):,.0f} | {np.median(r):,.0f} |")
    print(f"| {name} | | numpy / torch | {min(ratios):.2f} - {max(ratios):.2f}x | {np.median(ratios):.2f}x |")


def curves(name: str, cfg: ModelConfig, ids: np.ndarray, args: argparse.Namespace) -> None:
    train = TrainConfig(lr=1e-3, max_steps=args.curve_steps, warmup_steps=args.curve_steps // 10, beta2=0.99)
    loops = engines(cfg, train)
    sampler = Sampler(len(ids) - args.curve_context, args.curve_batch, 1, seed=train.seed)
    windows = np.arange(args.curve_context + 1)
    losses: dict[str, list[float]] = {k: [] for k in loops}
    for step in range(args.curve_steps):
        w = ids[sampler.step()[0][:, None] + windows]
        for key, loop in loops.items():
            losses[key].append(loop.step(w[:, :-1], w[:, 1:], lr_at(step, train)))
    a, b = np.array(losses["numpy"]), np.array(losses["torch eager fp32"])
    show = sorted({1, *range(50, args.curve_steps + 1, max(50, args.curve_steps // 10)), args.curve_steps})
    print(f"\n{name}: loss at step " + ", ".join(f"{s}: {a[s - 1]:.4f} / {b[s - 1]:.4f}" for s in show)
          + " (numpy / torch)")  # fmt: skip
    smooth = np.ones(20) / 20
    print(f"{name}: largest gap {np.abs(a - b).max():.2e} (one step), "
          f"{np.abs(np.convolve(a, smooth, 'valid') - np.convolve(b, smooth, 'valid')).max():.2e} (20-step mean)")  # fmt: skip


def shapes(vocab: int, context: int) -> dict[str, ModelConfig]:
    return {"stories260K": get_preset("stories260K").replace(vocab_size=vocab, context_length=context),
            "gpt-micro": get_preset("gpt-micro").replace(vocab_size=vocab, context_length=context)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="BLAS / intra-op threads of both engines (default 2)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--context", type=int, default=256, help="tokens per sequence (default 256)")
    p.add_argument("--vocab", type=int, default=512, help="vocabulary of the speed test (stories260K's: 512)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per chunk (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="alternating chunks per engine (default 3)")
    p.add_argument("--curve-steps", type=int, default=500, help="loss-curve length, 0 to skip (default 500)")
    p.add_argument("--curve-batch", type=int, default=12)
    p.add_argument("--curve-context", type=int, default=64)
    p.add_argument("--text", type=Path, default=DATA, help="text for the loss curves (default: tinyshakespeare)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batch {args.batch} x {args.context} tokens, {args.steps} steps x {args.repeats} "
          f"alternating repeats, torch {torch.__version__}, numpy {np.__version__}\n")  # fmt: skip
    print("| shape | params | engine | training tokens/s (range) | median |\n|---|---|---|---|---|")
    for name, cfg in shapes(args.vocab, args.context).items():
        throughput(name, cfg, args)
    if args.curve_steps:
        text = args.text.read_bytes()
        chars, ids = np.unique(np.frombuffer(text, np.uint8), return_inverse=True)
        for name, cfg in shapes(len(chars), args.curve_context).items():
            curves(name, cfg, ids.astype(np.int64), args)


if __name__ == "__main__":
    main()
