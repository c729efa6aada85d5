"""Story-words, an instruction task small models can learn (after TinyStories-Instruct): "Write a story
that uses the words X, Y and Z." answered by a TinyStories story that contains them.

The words are drawn from each story itself (distinct content words: letters only, at least 3 of them, not
a function word), so every example is satisfiable. The metric is the share of held-out prompts whose
generated story contains every requested word (as a whole word, any case).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tinylm.chat import render
from tinylm.data.sources import SourceStats, expand_inputs, read_documents
from tinylm.errors import TinyLMError
from tinylm.fileio import write_text
from tinylm.tokenizer import Tokenizer
from tinylm.train.instruct import Record

FUNCTION_WORDS = frozenset({
    "the", "and", "was", "she", "her", "his", "him", "they", "them", "their", "there", "then", "than",
    "that", "this", "with", "for", "you", "your", "are", "but", "not", "had", "have", "has", "were",
    "what", "when", "who", "why", "how", "all", "one", "out", "can", "said", "says", "into", "from", "too",
    "very", "its", "our", "off",
})
WORD = re.compile(r"[A-Za-z]+")


def prompt(words: Sequence[str]) -> str:
    listed = ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else words[0]
    return f"Write a story that uses the words {listed}."


def pick_words(story: str, n: int, rng: random.Random) -> list[str] | None:
    """`n` distinct content words of `story`, in random order (None if it has fewer)."""
    candidates = sorted({w.lower() for w in WORD.findall(story) if len(w) >= 3} - FUNCTION_WORDS)
    return rng.sample(candidates, n) if len(candidates) >= n else None


def uses_words(text: str, words: Sequence[str]) -> bool:
    found = {w.lower() for w in WORD.findall(text)}
    return all(w.lower() in found for w in words)


def examples(stories: Sequence[str], n_words: int = 3, seed: int = 1337) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for story in stories:
        story = story.strip()
        words = pick_words(story, n_words, rng) if story else None
        if words is not None:
            yield {"prompt": prompt(words), "completion": story, "words": words}


def read_stories(source: str) -> list[str]:
    """Stories of a text file (separated by <|endoftext|> or blank lines) or the named dataset
    "tinystories" (downloaded once, see tinylm.data.download)."""
    if source in ("tinystories", "tinystories-train"):
        from tinylm.data.download import fetch

        source = str(fetch(source))
    return [s for s in read_documents(expand_inputs([source]), SourceStats()) if s.strip()]


def write_task(source: str, out: Path, n_train: int, n_test: int, n_words: int = 3, seed: int = 1337) -> tuple[int, int]:
    """train.jsonl and test.jsonl under `out` from the first stories of `source`; (train, test) counts."""
    import json

    rows = list(examples(read_stories(source)[: n_train + n_test], n_words, seed))
    if len(rows) < 2:
        raise TinyLMError(f"{source}: fewer than 2 stories with {n_words} distinct content words")
    n_test = min(n_test, len(rows) // 2)
    test, train = rows[:n_test], rows[n_test:]
    for name, part in (("train.jsonl", train), ("test.jsonl", test)):
        write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    return len(train), len(test)


def words_rate(model: Any, tok: Tokenizer, records: Sequence[Record], max_new_tokens: int = 200,
               batch_size: int = 16) -> float:  # fmt: skip
    """Share of `records` (with extra["words"]) whose greedy reply uses every requested word."""
    from tinylm.generate import Generator

    gen = Generator.from_model(model.eval(), tok)
    ctx = model.config.context_length
    hits = 0
    for i in range(0, len(records), batch_size):
        batch = records[i : i + batch_size]
        prompts = [render(tok, [m for m in r.messages if m["role"] != "assistant"], add_generation_prompt=True)
                   for r in batch]  # fmt: skip
        n = max(1, min(max_new_tokens, ctx - max(map(len, prompts))))
        done = gen.generate(prompts, n, temperature=0.0)
        hits += sum(uses_words(c.text or "", r.extra["words"]) for c, r in zip(done, batch, strict=True))  # type: ignore[union-attr]
    return hits / len(records)
