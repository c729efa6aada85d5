"""Compute-optimal sizing (Chinchilla: Hoffmann et al. 2022).

Given a token count D or a parameter count N, the rule of thumb: about 20 training tokens per parameter
(compute C ~ 6 N D). Given a wall-clock budget, the rule is not enough: on a CPU, small models run far
below the matmul peak (their time goes to small kernels and overhead, not 6 N flops per token), so
shrinking a model buys fewer extra tokens than 6 N D assumes, and the shape that sees 20 tokens per
parameter in a few minutes trains to a worse loss than a bigger one that sees fewer (measured: pydocs,
1.5 minutes, 2x64 held-out loss 4.30 vs 4x128 3.72). So for a budget we measure tokens/s of each
candidate here and pick the one whose *predicted loss* is lowest, from the fitted law

    L(N, D) = E + A / N^alpha + B / D^beta        (E 1.82, A 482.0, B 2085.4, alpha 0.348, beta 0.366)

with D the tokens the candidate reaches in the budget. The constants are Besiroglu et al.'s refit of
Chinchilla's own data (2024, "Chinchilla Scaling: A replication attempt"), not the paper's approach-3
values (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28), which they show fit that data poorly. The
optimum those give drifts with compute (~8 tokens per parameter at 1e13 FLOPs, this scale; ~100 at 1e24),
while the refit's stays near the 20 of the paper's other two approaches (35 here, 18 at 1e24). With the
paper's values the plan chose shapes one rung too big here (pydocs, 3 minutes: 6x192, held-out loss
3.393, over 4x128, 3.348). Over three such runs the refit orders 7 of the 9 pairs of shapes trained as
they came out, the paper's values 3; both misses prefer 4x128 to 4x96, which trained 0.4% and 0.6% lower
(benchmarks/bench_plan.py). Absolute values belong to that data and tokenizer, not ours; only the ranking
is used. Repeated data is worth less than fresh data: with U unique
tokens (--data), D counts as U + U R* (1 - exp(-(D/U - 1) / R*)), R* = 15.4 (Muennighoff et al.
2023, "Scaling data-constrained language models"), so many passes over a small corpus stop paying.
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
LAW = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}  # Besiroglu et al. 2024
REPEAT_DECAY = 15.4  # R*: passes over the same data after which repeats are worth ~1/e of fresh tokens
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
    loss: float | None = None  # predicted after the budget (fit_budget)

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


def effective_tokens(tokens: float, unique: float | None) -> float:
    """Tokens worth as much as `tokens` drawn from `unique` distinct ones (all of them when None)."""
    if not unique or tokens <= unique:
        return tokens
    return unique + unique * REPEAT_DECAY * (1 - math.exp(-(tokens / unique - 1) / REPEAT_DECAY))


def predicted_loss(params: float, tokens: float, unique: float | None = None) -> float:
    """Chinchilla's L(N, D), D discounted for repeats: for ranking shapes, not a forecast of our loss."""
    d = effective_tokens(tokens, unique)
    return LAW["E"] + LAW["A"] / params ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


def candidates(vocab_size: int, context: int, family: str = "llama") -> list[Candidate]:
    return [Candidate(build_config(vocab_size, family=family, n_layers=L, dim=d, n_heads=h, context_length=context))
            for L, d, h in LADDER]  # fmt: skip


def closest(cands: list[Candidate], params: float) -> Candidate:
    """The candidate nearest in parameters (on a log scale)."""
    return min(cands, key=lambda c: abs(math.log(c.params / params)))


def measure(cfg: ModelConfig, batch_size: int, device: str = "auto", precision: str = "auto", steps: int = 5) -> float:
    """Training tokens/s of a shape here: one warm-up step, then the fastest of `steps` timed AdamW steps.
    The fastest, not the mean: another process taking a core for a moment slows some steps, and the mean
    of three once ranked 4x96 slower than the bigger 4x128 (5.5K vs 6.3K tokens/s under load); what a
    shape costs shows in its unhindered steps, and the ranking needs only that."""
    dev = pick_device(device)
    prec = Precision(pick_precision(precision, dev), dev)
    torch.manual_seed(0)
    model = Model(cfg).to(dev)
    opt = make_optimizer(model, TrainConfig(), dev)
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.context_length), device=dev)
    fastest = math.inf
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with prec.autocast():
            loss = next_token(model, x, x)
        prec.scaler.scale(loss).backward()
        prec.scaler.step(opt)
        prec.scaler.update()
        opt.zero_grad(set_to_none=True)
        loss.item()  # wait for the device
        if i:  # the first step warms up (allocations, kernel choice)
            fastest = min(fastest, time.perf_counter() - t0)
    return batch_size * cfg.context_length / fastest


def fit_budget(cands: list[Candidate], seconds: float, batch_size: int, device: str, precision: str,
               unique: float | None = None, progress: bool = True) -> Candidate:  # fmt: skip
    """Measure candidates from the smallest up and return the one with the lowest predicted loss after
    `seconds` of training here (`unique`: distinct training tokens, if known). Bigger shapes are slower,
    so the predicted loss falls, bottoms out and rises along the ladder: stop after it has risen twice,
    so the table shows both sides of the choice."""
    best: Candidate | None = None
    worse = 0
    for c in cands:
        c.tokens_per_s = measure(c.config, batch_size, device, precision)
        c.loss = predicted_loss(c.params, c.tokens_per_s * seconds, unique)
        if progress:
            print(f"  measured {c.name:>10}: {human(c.params)} params, {human(c.tokens_per_s)} tokens/s")
        if best is None or c.loss < best.loss:  # type: ignore[operator]
            best, worse = c, 0
        else:
            worse += 1
            if worse == 2:
                break
    assert best is not None
    return best


def table(cands: list[Candidate], chosen: Candidate, seconds: float | None) -> str:
    cols = ["shape", "params", "20x tokens", "compute", "tokens/s", "time for 20x", "tokens in budget", "tok/param",
            "predicted loss"]
    rows = []
    for c in cands:
        tps = c.tokens_per_s
        in_budget = tps * seconds if tps and seconds else None
        rows.append([
            c.name + (" <-" if c is chosen else ""), human(c.params), human(c.optimal_tokens),
            f"{c.flops(c.optimal_tokens):.1e}", human(tps) if tps else "-",
            duration(c.optimal_tokens / tps) if tps else "-", human(in_budget) if in_budget else "-",
            f"{in_budget / c.params:.0f}" if in_budget else "-", f"{c.loss:.2f}" if c.loss else "-",
        ])  # fmt: skip
    if not any(c.tokens_per_s for c in cands):
        cols, rows = cols[:4], [r[:4] for r in rows]
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    return "\n".join("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in
                               enumerate(zip(r, widths, strict=True))) for r in [cols, *rows])  # fmt: skip
