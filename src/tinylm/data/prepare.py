"""`prepare`: raw text in, token shards + tokenizer + manifest out.

Two streaming passes, each in constant memory apart from the dedup index:
1. read documents, clean and deduplicate them, and append the kept ones to a scratch file;
2. (after training or loading the tokenizer) tokenise the scratch file in parallel batches, frame
   each document as [bos] + tokens + [eos], and stream it into the train or val shards.
Everything is written into a temporary directory that replaces `out` only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tinylm import __version__
from tinylm.data.clean import Cleaner, CleanReport
from tinylm.data.download import cache_dir, fetch
from tinylm.data.minhash import MinHashConfig
from tinylm.data.shards import MANIFEST, VERSIONS, Manifest, ShardWriter, dtype_for_vocab
from tinylm.data.sources import (
    MAX_DOC_CHARS,
    SourceStats,
    expand_inputs,
    pydoc_file,
    read_documents,
    stdlib_files,
)
from tinylm.data.workers import ordered_map
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_dir, write_json
from tinylm.tokenizer import (
    PRETRAINED,
    TRAINABLE,
    Tokenizer,
    load_tokenizer,
    pretrained_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

# name -> (download name or None, document separator)
DATASETS = {
    "tinystories": ("tinystories", "eot"),  # the TinyStories V2 validation file (~22 MB): a quick start
    "tinystories-train": ("tinystories-train", "eot"),  # the full training file (~2.2 GB)
    "shakespeare": ("shakespeare", "blank"),  # tiny Shakespeare, one document per speech
    "pystdlib": (None, "file"),  # this interpreter's standard library, one document per .py file
    "pydocs": (None, "eot"),  # this interpreter's English help text, one document per topic
}
BATCH_DOCS = 256  # documents cleaned at once
ENCODE_BATCH_DOCS = 1024  # documents tokenised at once (larger batches keep a parallel encoder busy)
BATCH_CHARS = 1 << 22  # ... or fewer: encoders need ~100x the text's size in memory while they work
_SCRATCH = ".documents.tmp"


def _resolve_inputs(
    inputs: Sequence[str | Path], dataset: str | None, max_mb: float | None
) -> tuple[list[Path], str | None]:
    """Files to read, and the separator the dataset implies (None: the caller's)."""
    if dataset is None:
        if not inputs:
            raise TinyLMError("no input: give text/JSONL files, directories or globs, or --dataset NAME")
        return expand_inputs(inputs), None
    if inputs:
        raise TinyLMError("give either input files or --dataset, not both")
    if dataset not in DATASETS:
        raise TinyLMError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    remote, separator = DATASETS[dataset]
    if dataset == "pydocs":
        return [pydoc_file(cache_dir())], separator
    if remote is None:
        return stdlib_files(max_mb), separator
    return [fetch(remote)], separator


def _is_val(doc: str, fraction: float, key: bytes) -> bool:
    """Deterministic by content: the same document always lands in the same split."""
    h = hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest()
    return int.from_bytes(h, "little") < fraction * 2**64


def _write_docs(f: Any, docs: Iterable[str]) -> None:
    for d in docs:
        b = d.encode("utf-8", "surrogatepass")
        f.write(struct.pack("<I", len(b)))
        f.write(b)


def _read_docs(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        while header := f.read(4):
            (n,) = struct.unpack("<I", header)
            yield f.read(n).decode("utf-8", "surrogatepass")


def _batched(docs: Iterable[str], n: int, chars: int | None = None) -> Iterator[list[str]]:
    """Lists of up to `n` documents and `chars` characters (default BATCH_CHARS; at least one document)."""
    chars = chars or BATCH_CHARS
    batch, size = [], 0
    for d in docs:
        if batch and (len(batch) == n or size + len(d) > chars):
            yield batch
            batch, size = [], 0
        batch.append(d)
        size += len(d)
    if batch:
        yield batch


def _take_mb(docs: Iterable[str], mb: float | None) -> Iterator[str]:
    budget = None if mb is None else mb * 1e6
    for d in docs:
        if budget is not None and budget <= 0:
            return
        yield d
        if budget is not None:
            budget -= len(d.encode("utf-8", "surrogatepass"))


def encode_framed(tok: Tokenizer, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every doc as [bos] + tokens + [eos] (where the tokenizer has them), concatenated as uint32,
    plus each doc's length. Uses the tokenizer's own `encode_batch` where it has one."""
    batch = getattr(tok, "encode_batch", None)
    lists = batch(docs) if batch is not None else [tok.encode(d) for d in docs]
    pre = [] if tok.bos_id is None else [tok.bos_id]
    post = [] if tok.eos_id is None else [tok.eos_id]
    lengths = np.fromiter(
        (len(ids) + len(pre) + len(post) for ids in lists), dtype=np.int64, count=len(lists)
    )
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.chain(pre, ids, post) for ids in lists),
        dtype=np.uint32,
        count=int(lengths.sum()),
    )
    return flat, lengths


_worker_tok: Tokenizer | None = None


def _init_worker(tok_dir: str) -> None:
    global _worker_tok
    _worker_tok = load_tokenizer(tok_dir)


def _encode_in_worker(docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker_tok is not None
    return encode_framed(_worker_tok, docs)


def _in_process(tok: Tokenizer) -> bool:
    """SentencePiece and tiktoken encode a batch on all cores themselves, faster than a worker pool
    (measured in benchmarks/bench_prepare.py); the others gain from one process per core."""
    return tok.kind in ("sentencepiece", "tiktoken")


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


def encode_stream(
    tok: Tokenizer, tok_dir: Path, batches: Iterable[list[str]], workers: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`encode_framed` over batches, in order, in `workers` processes that each load the tokenizer
    from `tok_dir` (0 or 1: in this process; None: by tokenizer kind, see `_in_process`)."""
    if workers is None:
        workers = 0 if _in_process(tok) else (os.cpu_count() or 1)
    if workers <= 1:
        for docs in batches:
            yield encode_framed(tok, docs)
        return
    # One HF tokenizers thread per worker process (and no fork warning from it).
    with _env("TOKENIZERS_PARALLELISM", "false"):
        yield from ordered_map(_encode_in_worker, batches, workers, _init_worker, (str(tok_dir),))


def _get_tokenizer(
    spec: str | Path | Tokenizer, texts: Iterable[str], vocab_size: int, bos: bool
) -> Tokenizer:
    if isinstance(spec, Tokenizer):
        return spec
    if spec in TRAINABLE:
        return train_tokenizer(str(spec), texts, vocab_size, bos=bos)
    if spec in PRETRAINED:
        return pretrained_tokenizer(str(spec))
    if Path(spec).exists():
        return load_tokenizer(spec)
    raise TinyLMError(
        f"unknown tokenizer {str(spec)!r}; use {', '.join(TRAINABLE + PRETRAINED)}, or a path to a saved tokenizer "
        "directory, tokenizer.model or tokenizer.bin"
    )


def prepare(
    inputs: Sequence[str | Path] = (),
    out: str | Path = "data",
    *,
    dataset: str | None = None,
    tokenizer: str | Path | Tokenizer = "bpe",
    vocab_size: int = 4096,
    bos: bool = False,
    separator: str = "auto",
    text_field: str = "text",
    dedup: bool = True,
    near_dedup: bool = True,
    minhash: MinHashConfig | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
    max_mb: float | None = None,
    tokenizer_train_mb: float = 64.0,
    dtype: str | None = None,
    shard_tokens: int = 100_000_000,
    workers: int | None = None,
    progress: bool = True,
) -> Manifest:
    """Turn text into token shards in `out` (see module doc); returns the written manifest.

    `inputs`: files, directories or globs (.txt/.md split by `separator`, .jsonl reading `text_field`,
    .gz of either), or `dataset` ("tinystories", "tinystories-train", "shakespeare", "pystdlib", "pydocs").
    `tokenizer`: a trainable kind ("bpe", "sentencepiece", "char", trained on up to
    `tokenizer_train_mb` of the cleaned text), a published one ("llama2", "gpt2"), a path, or a
    Tokenizer. `bos` gives a trained BPE a BOS token. `max_mb` stops reading after that much text.
    """
    if not 0 <= val_fraction < 1:
        raise TinyLMError(f"--val-fraction must be in [0, 1), not {val_fraction}")
    out = Path(out)
    files, dataset_sep = _resolve_inputs(inputs, dataset, max_mb)
    stats = SourceStats()
    cleaner = Cleaner(exact=dedup, near=(minhash or MinHashConfig()) if dedup and near_dedup else None)
    timings: dict[str, float] = {}
    with atomic_dir(out) as tmp:
        # Pass 1: read, clean, deduplicate, spill the kept documents to a scratch file.
        t0 = time.perf_counter()
        scratch = tmp / _SCRATCH
        docs = _take_mb(read_documents(files, stats, dataset_sep or separator, text_field), max_mb)
        known = None if any(f.suffix == ".gz" for f in files) else sum(f.stat().st_size for f in files)
        is_val = _clean_pass(docs, cleaner, stats, scratch, known, val_fraction, seed.to_bytes(8, "little"), progress)
        report = cleaner.report
        if report.documents_out == 0:
            where = dataset or ", ".join(str(p) for p in inputs)
            raise TinyLMError(f"{where}: no text found (empty corpus); give files with some text in them")
        timings["clean_s"] = time.perf_counter() - t0

        # The tokenizer, saved beside the shards.
        t0 = time.perf_counter()
        train_mb = None if tokenizer == "char" else tokenizer_train_mb
        tok = _get_tokenizer(tokenizer, _take_mb(_read_docs(scratch), train_mb), vocab_size, bos)
        save_tokenizer(tok, tmp / "tokenizer")
        timings["tokenizer_s"] = time.perf_counter() - t0
        shard_dtype = _shard_dtype(tok, dtype)

        # Pass 2: tokenise in parallel and stream into the shards.
        t0 = time.perf_counter()
        writers = {s: ShardWriter(tmp, s, shard_dtype, shard_tokens) for s in ("train", "val")}
        by_tokens = val_fraction > 0 and report.documents_out == 1  # one document: split its tokens instead
        split_docs = _tokenize_pass(tok, tmp, scratch, writers, is_val, val_fraction if by_tokens else None,
                                    report.bytes_out, workers, progress)  # fmt: skip
        scratch.unlink()
        splits = _close_splits(writers, split_docs)
        timings["tokenize_s"] = time.perf_counter() - t0
        split = {"method": "tokens" if by_tokens else "document-hash", "val_fraction": val_fraction, "seed": seed}
        sources = [dataset] if dataset else [str(f) for f in files]
        write_json(tmp / MANIFEST, _manifest(sources, tok, shard_dtype, split, splits, cleaner.report, stats, timings))
    return Manifest.load(out)


def _close_splits(writers: dict[str, ShardWriter], split_docs: dict[str, int]) -> dict[str, Any]:
    """Finish each split's last shard; the manifest's account of the splits."""
    splits = {}
    for s, w in writers.items():
        shards = w.close()
        splits[s] = {
            "documents": split_docs[s],
            "tokens": sum(n for _, n in shards),
            "shards": [{"file": name, "tokens": n} for name, n in shards],
        }
    return splits


def _manifest(sources: list[str], tok: Tokenizer, shard_dtype: np.dtype, split: dict[str, Any],
              splits: dict[str, Any], report: CleanReport, stats: SourceStats, timings: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    tokens = splits["train"]["tokens"] + splits["val"]["tokens"]
    return {
        "format": "tinylm-token-shards",
        "created_by": f"tinylm {__version__}",
        "sources": sources,
        "tokenizer": "tokenizer",
        "tokenizer_kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "dtype": shard_dtype.name,
        "split": split,
        "splits": splits,
        "tokens": tokens,
        "bytes_per_token": report.bytes_out / max(tokens, 1),
        "input": {"files": stats.files, "bytes": stats.bytes, "invalid_utf8_bytes": stats.invalid_utf8_bytes,
                  "long_document_cuts": stats.cuts},
        "clean": report.to_dict(),
        "timings": timings,
    }


def _clean_pass(docs: Iterable[str], cleaner: Cleaner, stats: SourceStats, scratch: Path, known: int | None,
                val_fraction: float, key: bytes, progress: bool) -> bytearray:  # fmt: skip
    """Clean and deduplicate `docs` into the scratch file; whether each kept document is a validation one."""
    is_val = bytearray()
    with (
        open(scratch, "wb") as f,
        tqdm(total=known, unit="B", unit_scale=True, desc="clean+dedup", disable=not progress) as bar,
    ):
        for batch in _batched(docs, BATCH_DOCS):
            kept = cleaner.clean(batch)
            _write_docs(f, kept)
            is_val.extend(_is_val(d, val_fraction, key) for d in kept)
            bar.update(stats.bytes - bar.n)
            bar.set_postfix(docs=f"{cleaner.report.documents_in / max(bar.format_dict['elapsed'], 1e-9):,.0f}/s")
    if val_fraction > 0 and len(is_val) > 1:
        # Hashing can leave a tiny corpus with an empty split; move one document over.
        if not any(is_val):
            is_val[-1] = 1
        elif all(is_val):
            is_val[0] = 0
    return is_val


def _shard_dtype(tok: Tokenizer, dtype: str | None) -> np.dtype:
    shard_dtype = dtype_for_vocab(tok.vocab_size) if dtype in (None, "auto") else np.dtype(dtype)
    if shard_dtype not in VERSIONS.values():
        raise TinyLMError(f"--dtype must be uint16, uint32 or auto, not {dtype}")
    if tok.vocab_size - 1 > np.iinfo(shard_dtype).max:
        raise TinyLMError(
            f"the tokenizer's {tok.vocab_size:,} ids do not fit {shard_dtype.name} shards; use --dtype uint32 (or auto)"
        )
    return shard_dtype


def _tokenize_pass(tok: Tokenizer, tmp: Path, scratch: Path, writers: dict[str, ShardWriter], is_val: bytearray,
                   token_split: float | None, total_bytes: int, workers: int | None, progress: bool) -> dict[str, int]:  # fmt: skip
    """Tokenise the scratch file's documents in parallel into the train/val shard writers, each document
    to its split, or (`token_split`: the validation fraction of a one-document corpus) its tokens cut in
    two. Returns the documents per split."""
    split_docs = {"train": 0, "val": 0}
    done = 0  # documents written so far
    batch_bytes: deque[int] = deque()  # filled as batches are read, emptied as their tokens arrive

    def batches() -> Iterator[list[str]]:
        for docs in _batched(_read_docs(scratch), ENCODE_BATCH_DOCS):
            batch_bytes.append(sum(len(d.encode("utf-8", "surrogatepass")) for d in docs))
            yield docs

    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenise", disable=not progress) as bar:
        for flat, lengths in encode_stream(tok, tmp / "tokenizer", batches(), workers):
            if token_split is not None:
                cut = round(flat.size * (1 - token_split))
                writers["train"].add(flat[:cut])
                writers["val"].add(flat[cut:])
                split_docs = {"train": 1, "val": 1}
            else:
                val = np.frombuffer(is_val, dtype=bool, count=len(lengths), offset=done)
                done += len(lengths)
                token_is_val = np.repeat(val, lengths)
                writers["train"].add(flat[~token_is_val])
                writers["val"].add(flat[token_is_val])
                split_docs["val"] += int(val.sum())
                split_docs["train"] += int((~val).sum())
            bar.update(batch_bytes.popleft())
            docs_done = split_docs["train"] + split_docs["val"]
            bar.set_postfix(docs=f"{docs_done / max(bar.format_dict['elapsed'], 1e-9):,.0f}/s")
    return split_docs


def summary_table(manifest: Manifest) -> str:
    """The end-of-run table: documents in/out, duplicates removed, tokens, bytes per token."""
    m = manifest.raw
    c, s = m["clean"], m["splits"]
    rows = [
        ("input", f"{m['input']['files']:,} files, {m['input']['bytes'] / 1e6:,.2f} MB"),
        ("invalid UTF-8 bytes replaced", f"{m['input']['invalid_utf8_bytes']:,}"),
        (f"cuts in documents over {MAX_DOC_CHARS >> 20} Mi chars", f"{m['input'].get('long_document_cuts', 0):,}"),
        ("documents in", f"{c['documents_in']:,}"),
        ("NFC-normalised", f"{c['nfc_changed']:,}"),
        ("exact duplicates removed", f"{c['exact_duplicates']:,}"),
        ("near duplicates removed", f"{c['near_duplicates']:,}" if c["near_dedup"] else "off"),
        (
            "documents out",
            f"{c['documents_out']:,} ({s['train']['documents']:,} train / {s['val']['documents']:,} val)",
        ),
        ("tokenizer", f"{m['tokenizer_kind']}, {m['vocab_size']:,} ids, {m['dtype']} shards"),
        ("tokens", f"{m['tokens']:,} ({s['train']['tokens']:,} train / {s['val']['tokens']:,} val)"),
        ("bytes per token", f"{m['bytes_per_token']:.2f}"),
        ("time", ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in m["timings"].items())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
