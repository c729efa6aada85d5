"""Protocols: which windows a token list is cut into and which of their tokens are scored."""

from __future__ import annotations

import pytest

from tinylm.errors import TinyLMError
from tinylm.eval import Protocol, Window, cut


def test_non_overlapping_windows_leave_each_window_start_as_context():
    assert list(cut(10, 4, 4)) == [Window(0, 4, 1), Window(4, 8, 5), Window(8, 10, 9)]


def test_sliding_windows_score_only_new_tokens():
    assert list(cut(10, 4, 2)) == [Window(0, 4, 1), Window(2, 6, 4), Window(4, 8, 6), Window(6, 10, 8)]


@pytest.mark.parametrize(("n", "length", "stride"), [(1, 4, 1), (2, 4, 4), (37, 8, 3), (64, 8, 1), (65, 16, 15)])
def test_sliding_scores_every_token_but_the_first_exactly_once(n, length, stride):
    scored = [t for w in cut(n, length, stride) for t in range(w.first, w.end)]
    assert scored == list(range(1, n))
    assert all(w.end - w.start <= length and w.first > w.start for w in cut(n, length, stride))


def test_bad_protocols_are_one_line():
    for make, words in [(lambda: Protocol("chunks"), "unknown protocol"),
                        (lambda: Protocol("windows", stride=4), "no stride"),
                        (lambda: Protocol("sliding", context=1), "at least 2"),
                        (lambda: Protocol("sliding", context=8, stride=16).step(8), "longer than the window"),
                        (lambda: Protocol(context=64).window_length(32), "longer than the model's context")]:  # fmt: skip
        with pytest.raises(TinyLMError, match=words) as e:
            make()
        assert "\n" not in str(e.value)
