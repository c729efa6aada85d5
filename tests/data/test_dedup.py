"""Cleaning and deduplication: NFC, exact duplicates, and planted near-duplicates found by MinHash + LSH."""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest

from tinylm.data.clean import Cleaner
from tinylm.data.minhash import MinHashConfig, MinHasher, NearDuplicateIndex


def jaccard(a: str, b: str, n: int = 2) -> float:
    x, starts = MinHasher(ngram=n).shingles([a, b])
    sa, sb = set(x[: starts[1]].tolist()), set(x[starts[1] :].tolist())
    return len(sa & sb) / len(sa | sb)


def edit_words(doc: str, rng: random.Random, rate: float = 0.05) -> str:
    """Replace, delete or insert a word at `rate` of the positions."""
    words = doc.split()
    for _ in range(max(1, round(rate * len(words)))):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 1 / 3:
            words[i] = rng.choice(words)
        elif op < 2 / 3 and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(["big", "red", "happy", "the", "and", "very"]))
    return " ".join(words)


@pytest.fixture(scope="module")
def stories(shared_data) -> list[str]:
    text = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


@pytest.mark.parametrize("verify", ["exact", "estimate"])
def test_planted_near_duplicates_found(stories, verify):
    rng = random.Random(0)
    # Base documents that are not near-duplicates of each other to begin with.
    base = [d for d, dup in zip(stories, NearDuplicateIndex().check(stories), strict=True) if not dup][:1500]
    sources = rng.sample(range(len(base)), 300)
    corpus = base + [edit_words(base[s], rng) for s in sources]
    pairs = [(s, len(base) + k) for k, s in enumerate(sources)]
    # Ground truth at the threshold: the pairs whose shingle sets really are >= 0.8 similar.
    positives = [(a, b) for a, b in pairs if jaccard(corpus[a], corpus[b]) >= 0.8]
    assert len(positives) >= 0.9 * len(pairs)  # 5% word edits keep bigram Jaccard above 0.8

    order = list(range(len(corpus)))
    rng.shuffle(order)  # a copy may come before its original: then the original is the later one
    rank = {doc: r for r, doc in enumerate(order)}
    index = NearDuplicateIndex(
        MinHashConfig(threshold=0.8, num_perm=256 if verify == "estimate" else 128, verify=verify)
    )
    flags: list[bool] = []
    for i in range(0, len(order), 200):
        flags += index.check([corpus[d] for d in order[i : i + 200]])
    removed = {order[r] for r, f in enumerate(flags) if f}
    later = {max(pair, key=rank.__getitem__) for pair in pairs}

    recall = sum(max(p, key=rank.__getitem__) in removed for p in positives) / len(positives)
    precision = len(removed & later) / max(1, len(removed))
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision


def test_signatures_estimate_jaccard(stories):
    h = MinHasher(num_perm=256, ngram=2, seed=1)
    a = stories[0]
    b = edit_words(a, random.Random(1), rate=0.2)
    sig = h.signatures([a, b, stories[1]])
    assert sig.shape == (3, 256) and sig.dtype == np.uint32
    assert abs((sig[0] == sig[1]).mean() - jaccard(a, b)) < 0.1
    assert (sig[0] == sig[2]).mean() < 0.1
    # Stable across instances and batch composition (no per-process hash salt).
    assert np.array_equal(MinHasher(num_perm=256, ngram=2, seed=1).signatures([b])[0], sig[1])


def test_band_choice_reaches_threshold():
    bands, rows = MinHashConfig(threshold=0.8, num_perm=128).band_rows()
    assert bands * rows <= 128 and 1 - (1 - 0.8**rows) ** bands >= 0.995
    assert MinHashConfig(num_perm=128, bands=16).band_rows() == (16, 8)


def test_edge_documents_without_words_or_short():
    index = NearDuplicateIndex()
    assert index.check(["!!!", "???", "a", "a b", "\ue000 sentinel \ue000 inside"]) == [False] * 5
    assert index.check(["!!!"]) == [True]  # same non-word text: a duplicate, not merged with "???"


def test_cleaner_report():
    decomposed = unicodedata.normalize("NFD", "café au lait")
    story = "the little dog ran to the park and played with a red ball all day long " * 3
    docs = [
        decomposed,
        "café au lait",
        story,
        edit_words(story, random.Random(0), 0.03),
        "something else entirely",
    ]
    cleaner = Cleaner(exact=True, near=MinHashConfig())
    kept = cleaner.clean(docs)
    assert kept == ["café au lait", story, "something else entirely"]
    r = cleaner.report
    assert (r.documents_in, r.documents_out, r.nfc_changed, r.exact_duplicates, r.near_duplicates) == (
        5,
        3,
        1,
        1,
        1,
    )
    assert r.near_dedup["bands"] * r.near_dedup["rows"] <= 128
    off = Cleaner(exact=False, near=None)
    assert off.clean(docs) == [unicodedata.normalize("NFC", d) for d in docs]
    assert off.report.near_dedup is None
