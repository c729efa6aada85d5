"""Speed of `prepare`'s two hot stages, each against a plain baseline measured in the same run.

Tokenisation: `tinylm.data.prepare.encode_stream` (batches of documents framed with BOS/EOS, in
process or in a worker pool) against one plain call of the library itself (`tokenizers`
`encode_batch` on all documents at once / SentencePiece `encode` on the list), in MB/s of UTF-8 text.
Deduplication: the vectorised NumPy MinHash + LSH against a straightforward pure-Python MinHash
(same shingles, same hash family, one Python loop per shingle and permutation), in documents/s.

    python benchmarks/bench_prepare.py [--mb 4]

Text: the TinyStories head from ../shared/data if present, else this Python's standard library.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tinylm.data.minhash import MinHashConfig, NearDuplicateIndex
from tinylm.data.prepare import _batched, encode_stream, prepare
from tinylm.data.sources import SourceStats, read_documents, stdlib_files
from tinylm.tokenizer import Llama2cTokenizer, save_tokenizer, train_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_docs(mb: float) -> tuple[list[str], str]:
    path = SHARED / "tinystories_v2_head.txt"
    if path.is_file():
        docs, name = list(read_documents([path], SourceStats(), "eot")), "TinyStories head"
    else:
        docs, name = list(read_documents(stdlib_files(mb), SourceStats(), "file")), "Python stdlib"
    out, size = [], 0
    while size < mb * 1e6:  # repeat to reach the requested size
        for d in docs:
            out.append(d)
            size += len(d.encode())
            if size >= mb * 1e6:
                break
    return out, name


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def naive_minhash(doc: str, a: list[int], b: list[int], n: int) -> list[int]:
    """Pure-Python MinHash of word n-gram shingles (the per-element loop a vectorised version replaces)."""
    words = re.findall(r"\w+", doc.lower()) or [doc]
    grams = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
    shingles = [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little") for g in grams]
    mask = (1 << 64) - 1
    return [min(((ai * x + bi) & mask) >> 32 for x in shingles) for ai, bi in zip(a, b, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=4.0, help="MB of text to tokenise")
    args = ap.parse_args()
    docs, name = load_docs(args.mb)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(
        f"text: {name}, {len(docs):,} documents, {mb:.1f} MB; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}"
    )
    rows: list[tuple[str, str, float, str, float]] = []

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        train_text = docs[: max(1, len(docs) // 4)]
        bpe = train_tokenizer("bpe", train_text, 4096)
        spm = train_tokenizer("sentencepiece", train_text, 4096)
        l2c = Llama2cTokenizer.from_sentencepiece(spm)  # type: ignore[arg-type]
        for tok in (bpe, spm, l2c):
            save_tokenizer(tok, tmp_path / tok.kind)

        def stage(tok, workers: int, docs=docs) -> Callable[[], object]:
            return lambda: sum(
                f.size for f, _ in encode_stream(tok, tmp_path / tok.kind, _batched(docs, 256), workers)
            )

        base = best_of(lambda: bpe.hf.encode_batch(docs, add_special_tokens=False))
        rows.append(("tokenise bpe", "tokenizers encode_batch(all)", mb / base, "MB/s", 1.0))
        t = best_of(lambda: bpe.hf.encode_batch_fast(docs, add_special_tokens=False))
        rows.append(("tokenise bpe", "tokenizers encode_batch_fast(all)", mb / t, "MB/s", base / t))
        for w in (0, 2):
            t = best_of(stage(bpe, w))
            rows.append(("tokenise bpe", f"encode_stream workers={w}", mb / t, "MB/s", base / t))
        base = best_of(lambda: spm.sp.encode(docs))
        rows.append(("tokenise sentencepiece", "sentencepiece encode(list)", mb / base, "MB/s", 1.0))
        for w in (0, 2):
            t = best_of(stage(spm, w))
            rows.append(("tokenise sentencepiece", f"encode_stream workers={w}", mb / t, "MB/s", base / t))
        small = docs[: len(docs) // 4]
        small_mb = sum(len(d.encode()) for d in small) / 1e6
        base = best_of(lambda: [l2c.encode(d) for d in small], 1)
        rows.append(("tokenise llama2c (Python)", "encode() loop", small_mb / base, "MB/s", 1.0))
        t = best_of(stage(l2c, 2, small), 1)
        rows.append(("tokenise llama2c (Python)", "encode_stream workers=2", small_mb / t, "MB/s", base / t))

        # Whole pipeline: clean + dedup + BPE training + tokenising + shards.
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("\n<|endoftext|>\n".join(docs), encoding="utf-8")
        t = best_of(
            lambda: prepare([corpus], tmp_path / "out", tokenizer="bpe", vocab_size=4096, progress=False), 1
        )
        rows.append(("prepare() end to end", "bpe 4096, dedup on", mb / t, "MB/s", float("nan")))

    # Deduplication, on distinct documents (in prepare, exact duplicates never reach MinHash).
    docs = list(dict.fromkeys(docs))
    cfg = MinHashConfig()
    naive_docs = docs[:300]
    index = NearDuplicateIndex(cfg)
    a, b = index.hasher.a.tolist(), index.hasher.b.tolist()
    base = best_of(lambda: [naive_minhash(d, a, b, cfg.ngram) for d in naive_docs], 1) / len(naive_docs)
    rows.append(("minhash signatures", "pure-Python MinHash", 1 / base, "docs/s", 1.0))
    t = best_of(lambda: [index.hasher.signatures(docs[i : i + 256]) for i in range(0, len(docs), 256)], 1)
    rows.append(
        ("minhash signatures", "NumPy, batches of 256", len(docs) / t, "docs/s", base / (t / len(docs)))
    )
    for verify in ("exact", "estimate"):

        def dedup(verify=verify) -> None:
            idx = NearDuplicateIndex(MinHashConfig(verify=verify))
            for i in range(0, len(docs), 256):
                idx.check(docs[i : i + 256])

        t = best_of(dedup, 1)
        rows.append(
            ("dedup (MinHash + LSH)", f"verify={verify}", len(docs) / t, "docs/s", base / (t / len(docs)))
        )

    print(f"\n{'stage':<26} {'variant':<34} {'speed':>10} {'unit':<7} {'x baseline':>10}")
    for stage_name, variant, speed, unit, ratio in rows:
        print(f"{stage_name:<26} {variant:<34} {speed:10,.1f} {unit:<7} {ratio:10.2f}")


if __name__ == "__main__":
    main()
