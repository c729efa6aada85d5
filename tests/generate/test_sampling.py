"""Each sampling rule filters exactly what it promises, on hand-made distributions."""

from __future__ import annotations

import numpy as np
import pytest

from tinylm.errors import TinyLMError
from tinylm.generate.sampling import (
    Sampler,
    SamplingParams,
    apply_repetition_penalty,
    min_p_filter,
    top_k_filter,
    top_p_filter,
)

# powers of two: every partial sum is exact, so the cut points below are exact too
P = np.array([0.125, 0.5, 0.0625, 0.25, 0.0625])  # sorted: ids 1, 3, 0, 2, 4


def kept(probs: np.ndarray) -> set[int]:
    return set(np.flatnonzero(probs).tolist())


def test_top_k_keeps_exactly_k_with_ties_to_lowest_id() -> None:
    assert kept(top_k_filter(P, 1)) == {1}
    assert kept(top_k_filter(P, 3)) == {1, 3, 0}
    assert kept(top_k_filter(P, 4)) == {1, 3, 0, 2}  # 2 and 4 tie: the lower id stays
    assert kept(top_k_filter(P, 10)) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(top_k_filter(P, 2)[[1, 3]], P[[1, 3]])  # kept values unchanged


@pytest.mark.parametrize(
    ("p", "want"),
    [
        (0.5, {1}),
        (0.51, {1, 3}),
        (0.75, {1, 3}),
        (0.76, {1, 3, 0}),
        (0.875, {1, 3, 0}),
        (0.9, {1, 3, 0, 2}),
        (1.0, {0, 1, 2, 3, 4}),
    ],
)
def test_top_p_keeps_the_smallest_head_reaching_p(p: float, want: set[int]) -> None:
    assert kept(top_p_filter(P, p)) == want


def test_top_p_on_a_large_flat_vocabulary_matches_a_full_sort() -> None:
    """Many small probabilities make the sorted head grow past its first guess."""
    rng = np.random.default_rng(0)
    probs = rng.random(5000) ** 4
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    for p in (0.3, 0.9, 0.999):
        assert kept(top_p_filter(probs, p)) == set(order[before < p].tolist())


def test_min_p_keeps_tokens_at_least_min_p_of_the_top() -> None:
    assert kept(min_p_filter(P, 0.5)) == {1, 3}  # threshold 0.25, inclusive
    assert kept(min_p_filter(P, 0.25)) == {1, 3, 0}
    assert kept(min_p_filter(P, 0.125)) == {0, 1, 2, 3, 4}
    assert kept(min_p_filter(P, 1.0)) == {1}


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = np.array([2.0, -2.0, 1.0, 0.5], dtype=np.float32)
    got = apply_repetition_penalty(logits, [0, 1, 1], 2.0)
    np.testing.assert_array_equal(got, [1.0, -4.0, 1.0, 0.5])
    np.testing.assert_array_equal(logits, [2.0, -2.0, 1.0, 0.5])  # the input is left alone


def test_greedy_picks_the_argmax_and_penalty_can_move_it() -> None:
    s = Sampler(SamplingParams(temperature=0))
    assert s.sample(np.array([0.1, 3.0, 2.0])) == 1
    s = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0))
    assert s.sample(np.array([0.1, 3.0, 2.0]), history=[1]) == 2


def test_draws_follow_the_filtered_distribution() -> None:
    logits = np.log(P)
    s = Sampler(SamplingParams(temperature=1.0, top_k=3, seed=0))
    counts = np.bincount([s.sample(logits) for _ in range(20000)], minlength=5) / 20000
    want = np.array([0.125, 0.5, 0.0, 0.25, 0.0]) / 0.875
    np.testing.assert_allclose(counts, want, atol=0.015)
    assert counts[2] == counts[4] == 0


def test_temperature_sharpens_and_flattens() -> None:
    logits = np.log(P)
    hot = Sampler(SamplingParams(temperature=100.0, top_p=None, seed=1)).probs(logits)
    cold = Sampler(SamplingParams(temperature=0.1, seed=1)).probs(logits)
    assert hot.max() < 0.21 and cold[1] > 0.99


def test_same_seed_same_draws_and_rows_have_their_own_streams() -> None:
    logits = np.zeros(50)
    a = Sampler(SamplingParams(seed=7), rows=2)
    b = Sampler(SamplingParams(seed=7), rows=3)
    draws_a = [a.sample(logits, row=0) for _ in range(20)]
    assert draws_a == [b.sample(logits, row=0) for _ in range(20)]  # row 0 does not depend on the batch size
    assert draws_a != [a.sample(logits, row=1) for _ in range(20)]
    assert draws_a != [Sampler(SamplingParams(seed=8)).sample(logits) for _ in range(20)]


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_k=0),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(min_p=2),
        dict(repetition_penalty=0),
    ],
)
def test_bad_parameters_are_one_line_errors(bad: dict) -> None:
    with pytest.raises(TinyLMError):
        SamplingParams(**bad)
