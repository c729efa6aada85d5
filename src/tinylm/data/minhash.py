"""Near-duplicate detection with MinHash + banded LSH, vectorised with NumPy.

Each document becomes a set of word n-gram shingles (lower-cased `\\w+` words). Words are hashed once
(blake2b, cached, so results are the same in every process and run); n-gram hashes are combined and
mixed with array arithmetic over a whole batch. The `num_perm` hash functions are multiply-shift
universal hashes `((a*x + b) mod 2^64) >> 32`, evaluated for all shingles of a batch at once, and each
document's signature is the per-function minimum (`np.minimum.reduceat`).

LSH splits a signature into `bands` bands of `rows` values; documents sharing any band are candidates,
and a candidate counts as a duplicate only if its Jaccard similarity is at least `threshold`: exactly,
from the shingle sets (default), or as estimated by the share of equal signature values. Documents
are checked in order against the documents kept so far, so the first of each cluster is kept.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from tinylm.errors import TinyLMError

_SEP = "\ue000"  # a private-use character: never a word character
_WORD_OR_SEP = re.compile(r"\w+|\ue000")
_COLS_PER_CHUNK = 2048  # shingles hashed at once


@dataclass(frozen=True)
class MinHashConfig:
    threshold: float = 0.8  # Jaccard similarity at or above which a document is a duplicate
    num_perm: int = 128
    bands: int | None = None  # None: chosen so a pair at `threshold` becomes a candidate with >= 99.5%
    ngram: int = 2  # words per shingle
    verify: str = "exact"  # how LSH candidates are confirmed: "exact" Jaccard or the MinHash "estimate"
    seed: int = 0

    def band_rows(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.num_perm // self.bands
        for rows in range(self.num_perm, 0, -1):
            bands = self.num_perm // rows
            if 1 - (1 - self.threshold**rows) ** bands >= 0.995:
                return bands, rows
        return self.num_perm, 1


class _WordHashes(dict[str, int]):
    """Stable 64-bit word hashes (Python's own `hash` is salted per process)."""

    def __missing__(self, word: str) -> int:
        if len(self) > 1 << 20:  # bound memory on huge vocabularies
            self.clear()
        h = int.from_bytes(
            hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
        )
        self[word] = h
        return h


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads combined n-gram hashes over all 64 bits (in place)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class MinHasher:
    def __init__(self, num_perm: int = 128, ngram: int = 2, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)
        self.ngram_weights = rng.integers(0, 2**64, size=ngram, dtype=np.uint64) | np.uint64(1)
        self.ngram = ngram
        self.words = _WordHashes()

    def _word_hashes(self, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every word of every doc, concatenated, and each doc's word count.

        The batch is lower-cased and split in one regex pass over the docs joined by a sentinel
        character, which keeps the per-document Python work to almost nothing.
        """
        words = _WORD_OR_SEP.findall(_SEP.join(docs).lower())
        hashes = np.fromiter(map(self.words.__getitem__, words), dtype=np.uint64, count=len(words))
        is_sep = hashes == self.words[_SEP]
        seps = np.flatnonzero(is_sep)
        if seps.size != len(docs) - 1:  # a doc contained the sentinel itself (rare): blank it out
            return self._word_hashes([d.replace(_SEP, " ") for d in docs])
        counts = np.diff(np.concatenate(([-1], seps, [hashes.size]))) - 1
        hashes = hashes[~is_sep]
        if (counts == 0).any():  # no words at all: the text itself is the doc's one word
            empty = np.flatnonzero(counts == 0)
            at = np.cumsum(counts)[empty] - counts[empty]
            hashes = np.insert(hashes, at, [self.words[docs[i]] for i in empty])
            counts[empty] = 1
        return hashes, counts

    def shingles(self, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit shingle hashes of all docs, concatenated, and each doc's first row."""
        w, counts = self._word_hashes(docs)
        doc_of_word = np.repeat(np.arange(len(docs)), counts)
        s = w * self.ngram_weights[0]
        for k in range(1, self.ngram):
            same_doc = np.zeros(w.size, dtype=bool)
            same_doc[:-k] = doc_of_word[k:] == doc_of_word[:-k]
            shifted = np.zeros_like(w)
            shifted[:-k] = w[k:]
            s += np.where(same_doc, shifted, np.uint64(0)) * self.ngram_weights[k]
        # A doc of m words has max(m - n + 1, 1) n-grams, starting at its first word.
        word_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        per_doc = np.maximum(counts - self.ngram + 1, 1)
        rank = np.arange(w.size) - np.repeat(word_starts, counts)
        keep = rank < np.repeat(per_doc, counts)
        x = _mix(s[keep]) >> np.uint64(32)
        starts = np.concatenate(([0], np.cumsum(per_doc)[:-1]))
        return x, starts

    def signatures(self, docs: list[str]) -> np.ndarray:
        """(len(docs), num_perm) uint32 MinHash signatures."""
        if not docs:
            return np.empty((0, self.a.size), dtype=np.uint32)
        return self.signatures_of(*self.shingles(docs))

    def signatures_of(self, x: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Signatures from `shingles`' output."""
        sig = np.full((self.a.size, starts.size), np.iinfo(np.uint64).max, dtype=np.uint64)
        a, b = self.a[:, None], self.b[:, None]
        # (num_perm, chunk) blocks small enough to stay in cache through multiply, add and min.
        # The ">> 32" of the hash commutes with min, so it is applied once, to the signature.
        for c0 in range(0, x.size, _COLS_PER_CHUNK):
            c1 = min(x.size, c0 + _COLS_PER_CHUNK)
            h = np.multiply(a, x[c0:c1])
            h += b
            d0 = int(np.searchsorted(starts, c0, side="right")) - 1
            d1 = int(np.searchsorted(starts, c1, side="left"))
            segments = np.maximum(starts[d0:d1], c0) - c0
            np.minimum(sig[:, d0:d1], np.minimum.reduceat(h, segments, axis=1), out=sig[:, d0:d1])
        return (sig.T >> np.uint64(32)).astype(np.uint32)


class NearDuplicateIndex:
    """Streaming near-duplicate filter: `check(docs)` says, per doc, whether it duplicates an earlier kept one.

    Candidates from LSH are verified by exact Jaccard similarity of the shingle sets
    (`verify="exact"`, keeps each kept doc's shingle set: about 4 bytes a word) or by the MinHash
    estimate (`verify="estimate"`, keeps only the 4 x num_perm byte signature, noisier near the threshold).
    """

    def __init__(self, config: MinHashConfig | None = None):
        self.config = config or MinHashConfig()
        if self.config.verify not in ("exact", "estimate"):
            raise TinyLMError(f"dedup verify must be 'exact' or 'estimate', not {self.config.verify!r}")
        self.hasher = MinHasher(self.config.num_perm, self.config.ngram, self.config.seed)
        self.bands, self.rows = self.config.band_rows()
        rng = np.random.default_rng(self.config.seed + 1)
        self.band_weights = rng.integers(0, 2**64, size=self.rows, dtype=np.uint64) | np.uint64(1)
        self.buckets: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self.kept_sigs = np.empty((1024, self.config.num_perm), dtype=np.uint32)
        self.kept_sets: list[np.ndarray] = []
        self.n_kept = 0
        self.candidates_checked = 0

    def check(self, docs: list[str]) -> list[bool]:
        if not docs:
            return []
        x, starts = self.hasher.shingles(docs)
        sig = self.hasher.signatures_of(x, starts)
        banded = sig[:, : self.bands * self.rows].reshape(len(docs), self.bands, self.rows).astype(np.uint64)
        keys = (banded * self.band_weights).sum(axis=2).tolist()  # (docs, bands) band hashes
        sets = self._shingle_sets(x, starts) if self.config.verify == "exact" else None
        duplicate: list[bool] = []
        for i, doc_keys in enumerate(keys):
            shingles = sets[i] if sets is not None else None
            candidates = {
                c for band, key in zip(self.buckets, doc_keys, strict=True) for c in band.get(key, ())
            }
            self.candidates_checked += len(candidates)
            if candidates and self._similar(sig[i], shingles, sorted(candidates)):
                duplicate.append(True)
                continue
            duplicate.append(False)
            self._keep(sig[i], shingles, doc_keys)
        return duplicate

    @staticmethod
    def _shingle_sets(x: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
        """Each doc's distinct shingles, sorted: one sort of (doc << 32 | shingle) for the whole batch."""
        doc = np.repeat(np.arange(starts.size, dtype=np.uint64), np.diff(np.append(starts, x.size)))
        keys = np.unique((doc << np.uint64(32)) | x)
        bounds = np.searchsorted(keys >> np.uint64(32), np.arange(1, starts.size, dtype=np.uint64))
        return np.split((keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), bounds)

    def _similar(self, sig: np.ndarray, shingles: np.ndarray | None, candidates: list[int]) -> bool:
        t = self.config.threshold
        if shingles is None:
            return bool((self.kept_sigs[candidates] == sig).sum(axis=1).max() >= t * self.config.num_perm)
        for c in candidates:
            other = self.kept_sets[c]
            inter = np.intersect1d(shingles, other, assume_unique=True).size
            if inter >= t * (shingles.size + other.size - inter):
                return True
        return False

    def _keep(self, sig: np.ndarray, shingles: np.ndarray | None, keys: list[int]) -> None:
        if shingles is None:
            if self.n_kept == len(self.kept_sigs):
                self.kept_sigs = np.concatenate([self.kept_sigs, np.empty_like(self.kept_sigs)])
            self.kept_sigs[self.n_kept] = sig
        else:
            self.kept_sets.append(shingles)
        for band, key in zip(self.buckets, keys, strict=True):
            band.setdefault(key, []).append(self.n_kept)
        self.n_kept += 1
