"""The distillation pieces of `tinylm.train.objectives`: each divergence against a direct computation on
hand-made distributions, the temperature and the ignored positions, the T^2 scaling and the mix."""

from __future__ import annotations

import math

import pytest
import torch

from tinylm.errors import TinyLMError
from tinylm.train.objectives import cross_entropy, distill_term, distillation_loss, divergence

P = [0.7, 0.2, 0.1]  # the teacher
Q = [0.2, 0.3, 0.5]  # the student


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def jsd(p: list[float], q: list[float], beta: float) -> float:
    m = [beta * a + (1 - beta) * b for a, b in zip(p, q, strict=True)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def logs(p: list[float]) -> torch.Tensor:
    return torch.tensor(p, dtype=torch.float64).log()


@pytest.mark.parametrize(
    ("kind", "beta", "expected"),
    [("forward", 0.5, kl(P, Q)), ("reverse", 0.5, kl(Q, P)), ("jsd", 0.5, jsd(P, Q, 0.5)), ("jsd", 0.2, jsd(P, Q, 0.2))],
)
def test_each_divergence_matches_a_direct_computation(kind, beta, expected):
    got = divergence(kind, logs(P), logs(Q), beta).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert divergence(kind, logs(P), logs(P), beta).item() == pytest.approx(0.0, abs=1e-15)


def test_the_divergences_differ_where_they_should():
    assert kl(P, Q) != pytest.approx(kl(Q, P))  # the hand-made pair tells forward from reverse
    assert divergence("jsd", logs(P), logs(Q), 0.5).item() <= math.log(2)  # JSD is bounded
    assert divergence("jsd", logs(P), logs(Q), 0.5).item() == pytest.approx(divergence("jsd", logs(Q), logs(P), 0.5).item())


def test_the_term_softens_by_temperature_and_skips_ignored_positions():
    teacher = torch.tensor([[[2.0, 0.0, -1.0], [5.0, 5.0, 5.0]]])  # (B=1, T=2, V=3)
    student = torch.tensor([[[0.0, 1.0, 0.5], [9.0, 0.0, 0.0]]])
    T = 3.0

    def soft(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    only_first = distill_term(student, teacher, torch.tensor([[1, -1]]), temperature=T)
    assert only_first.item() == pytest.approx(kl(soft([2, 0, -1]), soft([0, 1, 0.5])), rel=1e-5)
    both = distill_term(student, teacher, torch.tensor([[1, 1]]), temperature=T)
    second = kl(soft([5, 5, 5]), soft([9, 0, 0]))
    assert both.item() == pytest.approx((kl(soft([2, 0, -1]), soft([0, 1, 0.5])) + second) / 2, rel=1e-5)


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_t_squared_keeps_the_gradient_size_across_temperatures(kind):
    teacher, student = torch.randn(4, 8, 50) * 3, torch.randn(4, 8, 50) * 3
    targets = torch.zeros(4, 8, dtype=torch.long)
    scaled, plain = [], []
    for T in (2.0, 4.0, 8.0, 16.0):
        s = student.clone().requires_grad_()
        kd = distill_term(s, teacher, targets, temperature=T, kind=kind)
        (g,) = torch.autograd.grad(distillation_loss(torch.zeros(()), kd, alpha=1.0, temperature=T), s)
        scaled.append(g.norm().item())
        plain.append(scaled[-1] / T**2)  # the same term without the T^2
    assert max(scaled) / min(scaled) < 2.0
    assert plain[0] / plain[-1] > 30.0  # without it, the gradient shrinks ~T^2-fold


def test_the_mix_of_hard_and_soft_terms():
    ce, kd = torch.tensor(2.5), torch.tensor(0.3)
    assert distillation_loss(ce, kd, alpha=0.0, temperature=2.0).item() == 2.5
    assert distillation_loss(ce, kd, alpha=1.0, temperature=2.0).item() == pytest.approx(4 * 0.3)
    assert distillation_loss(ce, kd, alpha=0.25, temperature=1.0).item() == pytest.approx(0.75 * 2.5 + 0.25 * 0.3)
    logits, y = torch.randn(2, 3, 5), torch.randint(5, (2, 3))
    assert distill_term(logits, logits, y, temperature=2.0).item() == 0.0
    assert cross_entropy(logits, y).dtype == torch.float32


def test_bad_settings_are_one_line():
    with pytest.raises(TinyLMError, match="unknown divergence 'tvd'"):
        divergence("tvd", logs(P), logs(Q))
    with pytest.raises(TinyLMError, match=r"beta must be in \(0, 1\)"):
        divergence("jsd", logs(P), logs(Q), beta=1.0)
