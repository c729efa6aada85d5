"""minGPT's addition task: the sequences, the loss mask, the split, and exact-match evaluation."""

from __future__ import annotations

import torch
from torch import nn

from tinylm.model import Model
from tinylm.train.shapes import build_config
from tinylm.train.tasks import addition


def test_sequences_reverse_the_sum_and_mask_the_question():
    pairs = torch.tensor([[55, 45], [7, 3], [99, 99]])
    assert addition.sequences(pairs, 2).tolist() == [
        [5, 5, 4, 5, 0, 0, 1],  # 55 + 45 = 100, written 0 0 1
        [0, 7, 0, 3, 0, 1, 0],  # 7 + 3 = 010
        [9, 9, 9, 9, 8, 9, 1],  # 198
    ]
    ex = addition.examples(pairs, 2)
    assert ex.x[0].tolist() == [5, 5, 4, 5, 0, 0]
    assert ex.y[0].tolist() == [-1, -1, -1, 0, 0, 1]  # only the 3 answer digits are scored
    assert addition.tokenizer().decode(ex.x[0].tolist()) == "554500"


def test_split_is_fixed_disjoint_and_complete():
    train, held = addition.split(2)
    assert (len(train), len(held)) == (9500, 500)
    keys = lambda p: set((p[:, 0] * 100 + p[:, 1]).tolist())  # noqa: E731
    assert keys(train).isdisjoint(keys(held)) and len(keys(train) | keys(held)) == 10_000
    assert torch.equal(addition.split(2)[1], held)


class Oracle(nn.Module):
    """Predicts the next token of the true sequence from the question digits; `wrong` pairs get 0 0 0."""

    def __init__(self, n: int, wrong: set[tuple[int, int]] = frozenset()):
        super().__init__()
        self.n, self.wrong, self.p = n, wrong, nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        n, B, T = self.n, *idx.shape
        powers = 10 ** torch.arange(n - 1, -1, -1)
        pairs = torch.stack([(idx[:, :n] * powers).sum(1), (idx[:, n : 2 * n] * powers).sum(1)], 1)
        truth = addition.sequences(pairs, n)
        for i, (a, b) in enumerate(pairs.tolist()):
            if (a, b) in self.wrong:
                truth[i, 2 * n :] = 0
        logits = torch.full((B, T, 11), -1e9)
        for t in range(2 * n - 1, T):
            logits[torch.arange(B), t, truth[:, t + 1]] = 0.0
        return logits


def test_exact_match_of_a_perfect_and_a_flawed_model():
    perfect = addition.exact_match(Oracle(2), 2)
    assert (perfect.correct, perfect.total, perfect.wrong) == (10_000, 10_000, [])
    flawed = addition.exact_match(Oracle(2, wrong={(55, 45), (0, 0)}), 2)
    # (0, 0) answered "000" is right; 55 + 45 = "000" is minGPT's famous miss
    assert (flawed.correct, flawed.wrong) == (9_999, [(55, 45, 0)])
    assert flawed.accuracy == 0.9999


def test_untrained_model_scores_low_and_eval_keeps_train_mode():
    model = Model(build_config(11, family="gpt2", n_layers=1, dim=16, n_heads=2, context_length=6)).train()
    score = addition.exact_match(model, 2, addition.all_pairs(2)[:500])
    assert score.total == 500 and score.correct < 50 and model.training
