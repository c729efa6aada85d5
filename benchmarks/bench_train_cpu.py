"""Training tokens/s of small models on the CPU: where a step's time goes, and what tinylm's choices cost.

For each shape, in one process and alternating in chunks (so every variant sees the same machine load):
- eager fp32:   a plain nanoGPT-style loop (forward, cross-entropy, backward, clip, AdamW, zero_grad): the baseline;
- eager bf16:   the same under bf16 autocast (what `--precision auto` picks on CPUs with bf16);
- compiled:     the fp32 loop with torch.compile'd model (its warm-up is reported, not counted).
Also the share of an eager fp32 step spent in the forward pass, the backward pass and the optimizer.

python benchmarks/bench_train_cpu.py                           # all shapes, 3 rounds of 10 steps
python benchmarks/bench_train_cpu.py --shapes quickstart --rounds 5 --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import time

SHAPES = {  # name: (model shape, vocab, batch, context)
    "stories260K": ({"preset": "stories260K"}, 512, 32, 256),
    "quickstart": ({"family": "llama", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 128}, 1024, 16, 128),
    "gpt-micro": ({"preset": "gpt-micro"}, 4096, 16, 256),
}


class Loop:
    """One training variant: its model, optimizer and step."""

    def __init__(self, shape: str, precision: str, compile: bool):
        import torch

        from tinylm.model import Model
        from tinylm.train.shapes import build_config

        kw, vocab, self.B, self.T = SHAPES[shape]
        torch.manual_seed(0)
        model = Model(build_config(vocab, **{**kw, "context_length": self.T}))
        self.model = torch.compile(model) if compile else model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.params = list(model.parameters())
        self.bf16 = precision == "bf16"
        self.data = torch.randint(0, vocab, (self.B, self.T + 1))
        self.warmup = self.timed_steps(2)

    def step(self, parts: dict[str, float] | None = None) -> None:
        import torch
        import torch.nn.functional as F

        t0 = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            logits = self.model(self.data[:, :-1])  # (B, T, vocab)
            loss = F.cross_entropy(logits.float().flatten(0, 1), self.data[:, 1:].flatten())
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if parts is not None:
            for k, v in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", time.perf_counter() - t2)):
                parts[k] = parts.get(k, 0.0) + v

    def timed_steps(self, n: int, parts: dict[str, float] | None = None) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.step(parts)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    p.add_argument("--rounds", type=int, default=3, help="alternations of the variants")
    p.add_argument("--steps", type=int, default=10, help="steps per variant and round")
    p.add_argument("--threads", type=int, default=None, help="as tinylm's --threads (default: idle cores)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variant (slow to warm up)")
    args = p.parse_args()
    from tinylm.threads import busy_cores, use_threads

    threads = use_threads(args.threads)
    print(f"{threads} thread(s); other processes kept {busy_cores(1.0):.1f} core(s) busy at start\n")
    variants = [("eager fp32", "fp32", False), ("eager bf16", "bf16", False)]
    variants += [] if args.no_compile else [("compiled fp32", "fp32", True)]
    print(f"{'shape':<12}{'variant':<15}{'tokens/s (min-max)':>22}{'vs eager fp32':>15}{'warm-up s':>11}")
    for shape in args.shapes.split(","):
        loops = {name: Loop(shape, prec, comp) for name, prec, comp in variants}
        rates: dict[str, list[float]] = {name: [] for name in loops}
        parts: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, loop in loops.items():
                seconds = loop.timed_steps(args.steps, parts if name == "eager fp32" else None)
                rates[name].append(args.steps * loop.B * loop.T / seconds)
        base = sorted(rates["eager fp32"])[len(rates["eager fp32"]) // 2]
        for name, r in rates.items():
            mid = sorted(r)[len(r) // 2]
            print(f"{shape:<12}{name:<15}{f'{min(r):,.0f} - {max(r):,.0f}':>22}{mid / base:>14.2f}x"
                  f"{loops[name].warmup:>11.1f}")  # fmt: skip
        total = sum(parts.values())
        print(f"{'':<12}eager fp32 step: " + ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
