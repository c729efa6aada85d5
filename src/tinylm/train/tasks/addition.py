"""minGPT's n-digit addition: read a and b (n digits each), write a + b (n + 1 digits, reversed).

For n = 2, "55" "45" -> 100 is the sequence 5 5 4 5 0 0 1: the sum comes least significant digit first,
the order in which a carry is computed. The model sees the sequence minus its last token and learns to
predict the next; only the n + 1 answer positions are scored (target -1 elsewhere, which Model ignores).
Evaluation decodes the answer greedily for every pair and counts exact matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinylm.tokenizer import CharTokenizer
from tinylm.train.batches import Examples
from tinylm.train.config import TrainConfig
from tinylm.train.shapes import build_config
from tinylm.train.tasks import ADDITION_SETTINGS, ADDITION_SHAPE
from tinylm.train.trainer import Result, TrainData, train

DIGITS = "0123456789"


def tokenizer() -> CharTokenizer:
    return CharTokenizer(list(DIGITS))  # digit d has id d


def digits(x: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) numbers -> (N, n) digits, most significant first."""
    powers = 10 ** torch.arange(n - 1, -1, -1)
    return x[:, None] // powers % 10


def sequences(pairs: torch.Tensor, n: int) -> torch.Tensor:
    """(N, 2) pairs -> (N, 3n + 1) token sequences: a, b, then the sum's digits reversed."""
    a, b = pairs[:, 0], pairs[:, 1]
    return torch.cat([digits(a, n), digits(b, n), digits(a + b, n + 1).flip(1)], dim=1)


def examples(pairs: torch.Tensor, n: int) -> Examples:
    seq = sequences(pairs, n)
    x, y = seq[:, :-1], seq[:, 1:].clone()
    y[:, : 2 * n - 1] = -1  # positions that would predict a digit of the question: not scored
    return Examples(x, y)


def all_pairs(n: int) -> torch.Tensor:
    """Every (a, b) with n-digit operands, in order: (0, 0), (0, 1), ..."""
    k = 10**n
    r = torch.arange(k * k)
    return torch.stack([r // k, r % k], dim=1)


def split(n: int, held_out: int = 500, seed: int = 1337) -> tuple[torch.Tensor, torch.Tensor]:
    """(training pairs, held-out pairs): a fixed random `held_out` pairs are never trained on (as minGPT)."""
    pairs = all_pairs(n)
    perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    held_out = min(held_out, len(pairs) // 5)
    return pairs[perm[held_out:]], pairs[perm[:held_out]]


@dataclass
class Score:
    correct: int
    total: int
    wrong: list[tuple[int, int, int]]  # (a, b, the model's answer), the first few

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)


@torch.no_grad()
def exact_match(model: torch.nn.Module, n: int, pairs: torch.Tensor | None = None, batch_size: int = 2500) -> Score:
    """Greedy decoding of the n + 1 answer digits for every pair (default: all 10^(2n) of them)."""
    pairs = all_pairs(n) if pairs is None else pairs
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, wrong = 0, []
    for chunk in pairs.split(batch_size):
        idx = sequences(chunk, n)[:, : 2 * n].to(device)
        for _ in range(n + 1):
            logits = model(idx)
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        answer = idx[:, 2 * n :].flip(1).cpu()  # back to most significant first
        guess = (answer * 10 ** torch.arange(n, -1, -1)).sum(1)
        ok = (guess == chunk.sum(1)) & (answer < 10).all(1)
        correct += int(ok.sum())
        wrong += [(int(a), int(b), int(g)) for (a, b), g in zip(chunk[~ok].tolist(), guess[~ok], strict=True)][:10]
    model.train(was_training)
    return Score(correct, len(pairs), wrong[:10])


def train_addition(n: int = 2, out_dir: str = "runs/addition", quiet: bool = False, model_args: dict | None = None,
                   resume: bool = False, overwrite: bool = False, **train_args) -> tuple[Result, Score, Score]:  # fmt: skip
    """Train until every n-digit sum is right (or max_steps), checking all pairs at each evaluation.
    Returns (training result, score on all pairs, score on the held-out pairs)."""
    train_pairs, held_out = split(n)
    data = TrainData(examples(train_pairs, n), examples(held_out, n), tokenizer(), f"{n}-digit addition")
    shape = {**ADDITION_SHAPE, **(model_args or {})}
    model_config = build_config(len(DIGITS) + 1, context_length=3 * n, **shape)
    # 1-digit addition has fewer training pairs than the default batch
    settings = {**ADDITION_SETTINGS, "batch_size": min(ADDITION_SETTINGS["batch_size"], len(train_pairs)), **train_args}
    cfg = TrainConfig(out_dir=out_dir, data=f"addition-{n}", **settings)

    def on_eval(model: torch.nn.Module) -> dict:
        s = exact_match(model, n)
        return {"exact_match": s.accuracy, "done": s.correct == s.total}

    result = train(cfg, data, model_config, on_eval=on_eval, resume=resume, quiet=quiet, overwrite=overwrite)
    return result, exact_match(result.model, n), exact_match(result.model, n, held_out)
