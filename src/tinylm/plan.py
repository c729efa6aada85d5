"""Compute-optimal sizing (Chinchilla: about 20 training tokens per parameter; compute C ~ 6 N D).

Given a token count D, a parameter count N, or a wall-clock budget (with tokens/s measured here by
timing a few training steps of each candidate shape), suggest a shape and how many tokens to train on.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import torch

from tinylm.config import PRESETS, ModelConfig
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.train.config import TrainConfig
from tinylm.train.device import Precision, pick_device, pick_precision
from tinylm.train.metrics import duration, human
from tinylm.train.objectives import next_token
from tinylm.train.optim import make_optimizer
from tinylm.train.shapes import build_config

TOKENS_PER_PARAM = 20.0
# (layers, dim, heads): a ladder of Llama shapes from ~0.1M to ~150M parameters (with a 4K vocabulary);
# 288/6/6, 512/8/8 and 768/12/12 are llama2.c's stories15M/42M/110M bodies
LADDER = [(2, 64, 4), (4, 96, 4), (4, 128, 4), (6, 192, 6), (6, 288, 6), (8, 384, 6), (8, 512, 8), (10, 640, 10),
          (12, 768, 12), (16, 896, 14)]  # fmt: skip


def parse_count(text: str) -> int:
    """'300M', '1.5B', '20k', '123456' -> an integer."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMbBtT]?)\s*", text)
    if not m:
        raise TinyLMError(f"cannot read {text!r} as a count; write e.g. 300M, 1.5B, 20k or 123456")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


@dataclass
class Candidate:
    config: ModelConfig
    tokens_per_s: float | None = None

    @property
    def params(self) -> int:
        return self.config.num_params()

    @property
    def optimal_tokens(self) -> int:
        return int(TOKENS_PER_PARAM * self.params)

    def flops(self, tokens: int) -> float:
        return 6.0 * self.params * tokens

    @property
    def name(self) -> str:
        """The preset with this shape ("~name": the same body with another vocabulary), else layers x dim."""
        c = self.config
        for name, p in PRESETS.items():
            if _body(p) == _body(c):
                return name if p.vocab_size == c.vocab_size else f"~{name}"
        return f"{c.n_layers}x{c.dim}"


def _body(c: ModelConfig) -> tuple:
    return c.family, c.n_layers, c.dim, c.n_heads, c.kv_heads, c.ffn_dim


def candidates(vocab_size: int, context: int, family: str = "llama") -> list[Candidate]:
    return [Candidate(build_config(vocab_size, family=family, n_layers=L, dim=d, n_heads=h, context_length=context))
            for L, d, h in LADDER]  # fmt: skip


def closest(cands: list[Candidate], params: float) -> Candidate:
    """The candidate nearest in parameters (on a log scale)."""
    return min(cands, key=lambda c: abs(math.log(c.params / params)))


def measure(cfg: ModelConfig, batch_size: int, device: str = "auto", precision: str = "auto", steps: int = 3) -> float:
    """Training tokens/s of a shape here: one warm-up step, then `steps` timed AdamW steps."""
    dev = pick_device(device)
    prec = Precision(pick_precision(precision, dev), dev)
    torch.manual_seed(0)
    model = Model(cfg).to(dev)
    opt = make_optimizer(model, TrainConfig(), dev)
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.context_length), device=dev)
    for i in range(steps + 1):
        if i == 1:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with prec.autocast():
            loss = next_token(model, x, x)
        prec.scaler.scale(loss).backward()
        prec.scaler.step(opt)
        prec.scaler.update()
        opt.zero_grad(set_to_none=True)
    loss.item()  # wait for the device
    return steps * batch_size * cfg.context_length / (time.perf_counter() - t0)


def fit_budget(cands: list[Candidate], seconds: float, batch_size: int, device: str, precision: str,
               progress: bool = True) -> Candidate:  # fmt: skip
    """Measure candidates from the smallest up; the largest that still sees >= 20 tokens per parameter
    in `seconds` is compute-optimal (a bigger one would be under-trained, a smaller one over-trained).
    The first one that falls short is measured too (and at least two), so the table shows both sides."""
    best = None
    for i, c in enumerate(cands):
        c.tokens_per_s = measure(c.config, batch_size, device, precision)
        if progress:
            print(f"  measured {c.name:>10}: {human(c.params)} params, {human(c.tokens_per_s)} tokens/s")
        if c.tokens_per_s * seconds >= c.optimal_tokens:
            best = c
        elif i >= 1:
            break  # bigger shapes are slower still: they cannot reach 20 tokens/param either
    return best or cands[0]


def table(cands: list[Candidate], chosen: Candidate, seconds: float | None) -> str:
    cols = ["shape", "params", "20x tokens", "compute", "tokens/s", "time for 20x", "tokens in budget", "tok/param"]
    rows = []
    for c in cands:
        tps = c.tokens_per_s
        in_budget = tps * seconds if tps and seconds else None
        rows.append([
            c.name + (" <-" if c is chosen else ""), human(c.params), human(c.optimal_tokens),
            f"{c.flops(c.optimal_tokens):.1e}", human(tps) if tps else "-",
            duration(c.optimal_tokens / tps) if tps else "-", human(in_budget) if in_budget else "-",
            f"{in_budget / c.params:.0f}" if in_budget else "-",
        ])  # fmt: skip
    if not any(c.tokens_per_s for c in cands):
        cols, rows = cols[:4], [r[:4] for r in rows]
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    return "\n".join("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in
                               enumerate(zip(r, widths, strict=True))) for r in [cols, *rows])  # fmt: skip
