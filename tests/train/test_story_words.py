"""The story-words task: satisfiable examples whose words are common ones (the share-of-stories rule), a
story-level train/test split, and the score's rates and standard errors."""

from __future__ import annotations

import math
import random
import re

import pytest

from tinylm.train.instruct import read_jsonl
from tinylm.train.tasks.story_words import (
    WordsScore,
    common_words,
    examples,
    pick_words,
    prompt,
    uses_words,
    words_used,
    write_task,
)

# ten stories: "dog" in all ten, "ran" and "stop" in six, "ball" and "kite" in two, "saw" and "moon" in one;
# "didn" only as the stem of "didn't"
TOY = ["The dog ran. He didn't stop."] * 6 + ["A dog, a ball and a kite."] * 2 + ["The dog saw the moon.", "dog"]


@pytest.fixture(scope="module")
def stories(shared_data) -> list[str]:
    text = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:200]


def test_common_words_keep_the_shares_asked_for():
    assert common_words(TOY, min_share=0.15, max_share=0.5) == {"ball", "kite"}
    assert common_words(TOY, min_share=0.1, max_share=0.5) == {"ball", "kite", "saw", "moon"}
    assert common_words(TOY, min_share=0.5, max_share=1.0) == {"dog", "ran", "stop"}  # never "didn"


def test_picked_words_come_from_the_story_and_the_vocabulary():
    story = "Tom took his red ball and his kite to the park. The sun was warm."
    rng = random.Random(0)
    for _ in range(20):
        words = pick_words(story, 2, rng, {"ball", "kite", "moon"})
        assert words is not None and sorted(words) == ["ball", "kite"]
    assert pick_words(story, 3, rng, {"ball", "kite", "moon"}) is None  # "moon" is not in the story
    assert pick_words("He didn't. She wasn't.", 1, rng) is None  # contraction stems are not words
    assert pick_words("a an the", 3, random.Random(0)) is None
    assert pick_words(story, 3, random.Random(5)) == pick_words(story, 3, random.Random(5))  # seeded


def test_story_words_examples_are_satisfiable(stories):
    rows = list(examples(stories[:50]))
    assert len(rows) >= 45
    for r in rows:
        assert len(set(r["words"])) == 3 and uses_words(r["completion"], r["words"])
        assert r["prompt"] == prompt(r["words"]) and r["prompt"].startswith("Write a story that uses the words ")
    assert prompt(["dog", "ball", "happy"]) == "Write a story that uses the words dog, ball and happy."
    assert uses_words("The Dog ran.", ["dog"]) and not uses_words("The dogs ran.", ["dog"])
    assert words_used("A dog and a cat.", ["cat", "dog", "bird"]) == 2


def test_variants_ask_for_different_words_of_the_same_story(stories):
    rows = list(examples(stories[:20], variants=4, rng=random.Random(3)))
    by_story: dict[str, list[frozenset[str]]] = {}
    for r in rows:
        assert uses_words(r["completion"], r["words"]) and r["prompt"] == prompt(r["words"])
        by_story.setdefault(r["completion"], []).append(frozenset(r["words"]))
    assert all(len(sets) == len(set(sets)) for sets in by_story.values())  # no set asked twice of one story
    assert sum(len(sets) == 4 for sets in by_story.values()) >= 15  # most stories have 4 different sets
    assert rows == list(examples(stories[:20], variants=4, rng=random.Random(3)))  # seeded
    assert rows != list(examples(stories[:20], variants=4, rng=random.Random(4)))
    # "The dog ran to the ball." has exactly three content words: one set, however many are asked for
    assert [set(r["words"]) for r in examples(["The dog ran to the ball."], variants=5)] == [{"dog", "ran", "ball"}]


def test_write_task_draws_common_words_and_splits_by_story(tmp_path, stories):
    src = tmp_path / "s.txt"
    src.write_text("<|endoftext|>".join(stories[:150]), encoding="utf-8")
    n_train, n_test = write_task(str(src), tmp_path / "task", n_train=120, n_test=30, min_share=0.05, max_share=0.2)
    train, test = read_jsonl(tmp_path / "task" / "train.jsonl"), read_jsonl(tmp_path / "task" / "test.jsonl")
    assert (len(train), len(test)) == (n_train, n_test) and 100 <= n_train <= 120 and 20 <= n_test <= 30
    held, rest = set(stories[:30]), stories[30:150]
    assert all(r.messages[-1]["content"] in held for r in test)
    assert not any(r.messages[-1]["content"] in held for r in train)
    for r in train + test:
        words = r.extra["words"]
        assert len(set(words)) == 3 and uses_words(r.messages[-1]["content"], words)
        for w in words:  # in at least 6 of the 120 training stories (5%), and not in most of them
            found = sum(bool(re.search(rf"\b{w}\b", s, re.IGNORECASE)) for s in rest)
            assert 6 <= found <= 0.5 * len(rest), (w, found)
    again = tmp_path / "again"
    write_task(str(src), again, n_train=120, n_test=30, min_share=0.05, max_share=0.2)
    assert (again / "test.jsonl").read_text() == (tmp_path / "task" / "test.jsonl").read_text()  # seeded
    n_more, n_test_more = write_task(str(src), tmp_path / "v3", n_train=120, n_test=30, min_share=0.05,
                                     max_share=0.2, variants=3)  # fmt: skip
    more = read_jsonl(tmp_path / "v3" / "train.jsonl")
    assert n_test_more == n_test and 2.5 * n_train <= n_more <= 3 * n_train
    assert (tmp_path / "v3" / "test.jsonl").read_text() == (tmp_path / "task" / "test.jsonl").read_text()  # one each
    assert {r.messages[-1]["content"] for r in more} == {r.messages[-1]["content"] for r in train}


def test_score_rates_and_standard_errors():
    s = WordsScore(prompts=4, satisfied=1, words=12, used=6)
    assert (s.rate, s.word_rate) == (0.25, 0.5)
    assert s.rate_se == pytest.approx(math.sqrt(0.25 * 0.75 / 4)) and s.word_rate_se == pytest.approx(math.sqrt(0.25 / 12))
    assert str(s).startswith("25.0% ± 21.7% of 4 held-out prompts use every word; 50.0% ± 14.4% of their 12 words")
