"""Story-words, an instruction task small models can learn (after TinyStories-Instruct): "Write a story
that uses the words X, Y and Z." answered by a TinyStories story that contains them.

The words are drawn from each story itself, so every example is satisfiable, and only from a vocabulary
the training stories define: content words (letters only, at least 3 of them, not a function word, not
the stem of a contraction such as "didn" in "didn't") found in at least `min_share` and at most
`max_share` of the training stories (default 1% to 20%). The lower bound keeps words a small model has
seen often enough to spell (TinyStories-Instruct, too, draws its words from a simple vocabulary, not a
story's rare names); the upper bound drops words nearly every story has ("once", "upon", "time", "day"),
which a model would use without reading the prompt.

The metric: the share of held-out prompts whose generated story contains every requested word (as a whole
word, any case), beside the smoother share of requested words it contains, each with its binomial standard
error (the per-word one counts words as independent trials, which slightly understates it: the words of one
prompt succeed or fail together more often than apart).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinylm.chat import render
from tinylm.data.sources import SourceStats, expand_inputs, read_documents
from tinylm.errors import TinyLMError
from tinylm.fileio import write_text
from tinylm.tokenizer import Tokenizer
from tinylm.train.instruct import Record
from tinylm.train.tasks import STORY_WORDS_SHARES

FUNCTION_WORDS = frozenset({
    "the", "and", "was", "she", "her", "his", "him", "they", "them", "their", "there", "then", "than",
    "that", "this", "with", "for", "you", "your", "are", "but", "not", "had", "have", "has", "were",
    "what", "when", "who", "why", "how", "all", "one", "out", "can", "said", "says", "into", "from", "too",
    "very", "its", "our", "off",
})
WORD = re.compile(r"[A-Za-z]+")
WHOLE_WORD = re.compile(r"\b[A-Za-z]+\b(?!['’])")  # not "didn" of "didn't", nor "dog" of "dog's"
MIN_SHARE, MAX_SHARE = STORY_WORDS_SHARES


def prompt(words: Sequence[str]) -> str:
    listed = ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else words[0]
    return f"Write a story that uses the words {listed}."


def content_words(story: str) -> set[str]:
    """The distinct lower-cased words of `story` that may be requested, before the frequency rule."""
    return {w.lower() for w in WHOLE_WORD.findall(story) if len(w) >= 3} - FUNCTION_WORDS


def common_words(stories: Sequence[str], min_share: float = MIN_SHARE, max_share: float = MAX_SHARE) -> frozenset[str]:
    """Content words found in at least `min_share` and at most `max_share` of `stories`."""
    counts = Counter(w for s in stories for w in content_words(s))
    lo, hi = min_share * len(stories), max_share * len(stories)
    return frozenset(w for w, c in counts.items() if lo <= c <= hi)


def pick_words(story: str, n: int, rng: random.Random, vocabulary: Iterable[str] | None = None) -> list[str] | None:
    """`n` distinct content words of `story` (of `vocabulary` if given), in random order; None if it has fewer."""
    found = content_words(story)
    candidates = sorted(found if vocabulary is None else found & set(vocabulary))
    return rng.sample(candidates, n) if len(candidates) >= n else None


def words_used(text: str, words: Sequence[str]) -> int:
    """How many of `words` `text` has as a whole word, any case."""
    found = {w.lower() for w in WORD.findall(text)}
    return sum(w.lower() in found for w in words)


def uses_words(text: str, words: Sequence[str]) -> bool:
    return words_used(text, words) == len(words)


def examples(stories: Sequence[str], n_words: int = 3, rng: random.Random | None = None,
             vocabulary: Iterable[str] | None = None, variants: int = 1) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Up to `variants` examples per story, each asking for a different set of its words: with one set per
    story the words also name the story to recall; with several, only the requested words differ between
    a story's examples (on the 5M base of bench_finetune this made no measurable difference)."""
    rng = rng or random.Random(1337)
    vocabulary = None if vocabulary is None else frozenset(vocabulary)
    for story in stories:
        story = story.strip()
        seen: set[frozenset[str]] = set()
        for _ in range(variants * 4 if story else 0):  # a story with few words has fewer distinct sets
            words = pick_words(story, n_words, rng, vocabulary)
            if words is None:
                break
            if frozenset(words) not in seen:
                seen.add(frozenset(words))
                yield {"prompt": prompt(words), "completion": story, "words": words}
            if len(seen) == variants:
                break


def read_stories(source: str) -> list[str]:
    """Stories of a text file (separated by <|endoftext|> or blank lines) or the named dataset
    "tinystories" (downloaded once, see tinylm.data.download)."""
    if source in ("tinystories", "tinystories-train"):
        from tinylm.data.download import fetch

        source = str(fetch(source))
    return [s for s in read_documents(expand_inputs([source]), SourceStats()) if s.strip()]


def write_task(source: str, out: Path, n_train: int, n_test: int, n_words: int = 3, seed: int = 1337,
               min_share: float = MIN_SHARE, max_share: float = MAX_SHARE, variants: int = 1) -> tuple[int, int]:  # fmt: skip
    """test.jsonl from the first `n_test` stories of `source` and train.jsonl from the `n_train` after them,
    the words drawn from the vocabulary of those training stories (see the module docstring); (train, test)
    counts. A story without `n_words` such words makes no example; a training story makes up to `variants`
    (different words each, see examples), a test story one."""
    import json

    stories = read_stories(source)[: n_train + n_test]
    n_test = min(n_test, len(stories) // 2)
    held, rest = stories[:n_test], stories[n_test:]
    vocabulary = common_words(rest, min_share, max_share)
    rng = random.Random(seed)
    test, train = list(examples(held, n_words, rng, vocabulary)), list(examples(rest, n_words, rng, vocabulary, variants))
    if not test or not train:
        raise TinyLMError(f"{source}: too few stories with {n_words} words found in {min_share:.0%} to "
                          f"{max_share:.0%} of the training stories ({len(vocabulary)} such words)")  # fmt: skip
    for name, part in (("train.jsonl", train), ("test.jsonl", test)):
        write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    return len(train), len(test)


@dataclass(frozen=True)
class WordsScore:
    """Held-out prompts and requested words, and how many of each a model's stories satisfied."""

    prompts: int
    satisfied: int  # prompts whose story uses every requested word
    words: int
    used: int  # requested words the stories use

    @property
    def rate(self) -> float:
        return self.satisfied / self.prompts

    @property
    def word_rate(self) -> float:
        return self.used / self.words

    @property
    def rate_se(self) -> float:
        return _binomial_se(self.rate, self.prompts)

    @property
    def word_rate_se(self) -> float:
        return _binomial_se(self.word_rate, self.words)

    def __str__(self) -> str:
        return (f"{self.rate:.1%} ± {self.rate_se:.1%} of {self.prompts} held-out prompts use every word; "
                f"{self.word_rate:.1%} ± {self.word_rate_se:.1%} of their {self.words} words are used")  # fmt: skip


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def words_rate(model: Any, tok: Tokenizer, records: Sequence[Record], max_new_tokens: int = 200,
               batch_size: int = 16) -> WordsScore:  # fmt: skip
    """Score `records` (with extra["words"]) by the greedy replies of `model`."""
    from tinylm.generate import Generator

    gen = Generator.from_model(model.eval(), tok)
    ctx = model.config.context_length
    satisfied = used = 0
    for i in range(0, len(records), batch_size):
        batch = records[i : i + batch_size]
        prompts = [render(tok, [m for m in r.messages if m["role"] != "assistant"], add_generation_prompt=True)
                   for r in batch]  # fmt: skip
        n = max(1, min(max_new_tokens, ctx - max(map(len, prompts))))
        for c, r in zip(gen.generate(prompts, n, temperature=0.0), batch, strict=True):
            hits = words_used(c.text or "", r.extra["words"])  # type: ignore[union-attr]
            used += hits
            satisfied += hits == len(r.extra["words"])  # type: ignore[union-attr]
    return WordsScore(len(records), satisfied, sum(len(r.extra["words"]) for r in records), used)  # type: ignore[union-attr]
