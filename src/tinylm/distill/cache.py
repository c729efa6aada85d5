"""A teacher's outputs written once to disk, read by any number of students and epochs.

Layout of a cache directory (NumPy files, memory-mapped when read):
  values.npy  (N, T, k) float32   the teacher's k largest logits at each position of each example
  ids.npy     (N, T, k) uint16/int32  their token ids
  lse.npy     (N, T)    float32   log-sum-exp of all the teacher's logits there (over the shared vocabulary)
  manifest.json  the teacher (weights hash), the data (hash of every example's tokens), N, T, vocab, k,
                 and how much probability the k kept tokens hold (the truncation, see `dense_logits`)
Row n holds the teacher's outputs for example n of the training dataset, so any sampler order works;
a cache made for another teacher or other data is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tinylm.distill.teacher import LiveTeacher, TeacherInfo
from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_dir, write_json
from tinylm.train.batches import Dataset

MANIFEST, FORMAT, VERSION = "manifest.json", "tinylm-teacher-cache", 1
TRUNCATION = ("the k kept log-probabilities are exact (logit - lse); the remaining probability mass is spread "
              "evenly over the other vocab - k tokens; exact when k = vocab")  # fmt: skip


def dense_logits(values: torch.Tensor, ids: torch.Tensor, lse: torch.Tensor, vocab: int) -> torch.Tensor:
    """The teacher's logits (B, T, vocab) as the cache declares them (TRUNCATION): the k kept logits as
    they were, every other token at the logit that spreads the remaining mass 1 - sum(kept) evenly.
    At temperature 1 the kept tokens' probabilities are exact; with k = vocab the logits are the teacher's."""
    values = values.float()
    k = values.shape[-1]
    if k == vocab:
        return torch.empty_like(values).scatter_(-1, ids, values)
    kept = torch.logsumexp(values - lse[..., None], dim=-1)  # log of the probability the k tokens hold
    rest = (-torch.expm1(kept)).clamp(min=1e-30)  # the mass left for the others (> 0 so its log is finite)
    fill = lse + rest.log() - math.log(vocab - k)  # (B, T)
    return fill[..., None].expand(*values.shape[:-1], vocab).clone().scatter_(-1, ids, values)


def data_hash(ds: Dataset, chunk: int = 4096) -> str:
    """SHA-256 of every example's (x, y) in index order: the cache's rows belong to exactly these."""
    h = hashlib.sha256()
    for start in range(0, len(ds), chunk):
        x, y = ds.get(torch.arange(start, min(start + chunk, len(ds))))[:2]
        h.update(x.numpy().astype("<i8").tobytes())
        h.update(y.numpy().astype("<i8").tobytes())
    return h.hexdigest()


def identity(info: TeacherInfo, ds: Dataset, vocab: int) -> dict[str, Any]:
    """What a cache must have been made from to serve this teacher and this data."""
    seq_len = ds.get(torch.zeros(1, dtype=torch.long))[0].shape[1]
    return {"teacher": str(info.path), "teacher_sha256": info.weights(), "data_sha256": data_hash(ds),
            "examples": len(ds), "seq_len": seq_len, "vocab": vocab}  # fmt: skip


class TeacherCache:
    """The cached teacher outputs for a batch of example indices: get(rows) -> (values, ids, lse)."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory, self.manifest = directory, manifest
        self.top_k, self.vocab = int(manifest["top_k"]), int(manifest["vocab"])
        try:
            self.values, self.ids, self.lse = (np.load(directory / f"{n}.npy", mmap_mode="r")
                                               for n in ("values", "ids", "lse"))  # fmt: skip
        except (OSError, ValueError) as e:
            raise TinyLMError(f"{directory}: the teacher cache is incomplete or corrupt ({e}); delete it to "
                              "rewrite it") from None  # fmt: skip

    def __len__(self) -> int:
        return len(self.lse)

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = rows.numpy()
        return (torch.from_numpy(self.values[r]), torch.from_numpy(self.ids[r].astype(np.int64)),
                torch.from_numpy(self.lse[r]))  # fmt: skip


class WithTeacher:
    """A training dataset whose examples carry their cached teacher outputs: get(rows) -> (x, y, values, ids,
    lse); the trainer passes the last three to the objective."""

    def __init__(self, data: Dataset, cache: TeacherCache):
        self.data, self.cache = data, cache

    @property
    def num_tokens(self) -> int:
        return getattr(self.data, "num_tokens", len(self.data))

    def __len__(self) -> int:
        return len(self.data)

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (*self.data.get(rows)[:2], *self.cache.get(rows))


def open_cache(directory: str | Path, expected: dict[str, Any], top_k: int | None = None) -> TeacherCache:
    """The cache in `directory`, refused (one line) unless it was made from the expected teacher and data."""
    directory = Path(directory)
    m = _read_manifest(directory)
    if m["teacher_sha256"] != expected["teacher_sha256"]:
        raise TinyLMError(f"{directory} holds the outputs of another teacher ({m.get('teacher', '?')}, other weights); "
                          "delete it or give another --cache-teacher directory")  # fmt: skip
    if any(m[key] != expected[key] for key in ("data_sha256", "examples", "seq_len")):
        raise TinyLMError(f"{directory} was made for other data ({m['examples']:,} examples of {m['seq_len']} tokens, "
                          f"other tokens or order); delete it or give another --cache-teacher directory")  # fmt: skip
    if m["vocab"] != expected["vocab"]:
        raise TinyLMError(f"{directory} holds a vocabulary of {m['vocab']:,}, the student shares {expected['vocab']:,} "
                          "with the teacher; delete it to rewrite it")  # fmt: skip
    if top_k is not None and top_k != m["top_k"]:
        raise TinyLMError(f"{directory} keeps the top {m['top_k']} logits, not {top_k}; drop --top-k to use it, or "
                          "delete it to rewrite it")  # fmt: skip
    return TeacherCache(directory, m)


def _read_manifest(directory: Path) -> dict[str, Any]:
    f = directory / MANIFEST
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{f}: cannot read the teacher cache manifest ({e}); delete {directory} to rewrite "
                          "it") from None  # fmt: skip
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != VERSION:
        raise TinyLMError(f"{directory} is not a tinylm teacher cache (version {VERSION}); give an empty or new "
                          "directory")  # fmt: skip
    return m


def write_cache(directory: str | Path, teacher: LiveTeacher, expected: dict[str, Any], ds: Dataset, top_k: int, *,
                batch_size: int, device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager],
                progress: bool = True) -> TeacherCache:  # fmt: skip
    """One teacher pass over every example of `ds`, in order, into a new cache at `directory` (atomic: a
    crash leaves no half-written cache)."""
    directory, V = Path(directory), expected["vocab"]
    N, T, k = expected["examples"], expected["seq_len"], min(top_k, V)
    try:
        with atomic_dir(directory) as tmp:
            values = np.lib.format.open_memmap(tmp / "values.npy", "w+", np.float32, (N, T, k))
            ids = np.lib.format.open_memmap(tmp / "ids.npy", "w+", np.uint16 if V <= 1 << 16 else np.int32, (N, T, k))
            lse = np.lib.format.open_memmap(tmp / "lse.npy", "w+", np.float32, (N, T))
            kept_mass = _fill(teacher, ds, (values, ids, lse), batch_size, device, autocast, progress)
            for a in (values, ids, lse):
                a.flush()
            del values, ids, lse
            write_json(tmp / MANIFEST, {
                "format": FORMAT, "version": VERSION, **expected, "top_k": k,
                "truncation": TRUNCATION, "kept_mass_mean": float(kept_mass.mean()),
                "kept_mass_min": float(kept_mass.min())})  # fmt: skip
    except OSError as e:
        raise TinyLMError(f"cannot write the teacher cache to {directory} ({e.strerror}); free some space or give "
                          "another --cache-teacher directory") from None  # fmt: skip
    return open_cache(directory, expected, k)


def _fill(teacher: LiveTeacher, ds: Dataset, out: tuple[np.ndarray, ...], batch_size: int, device: torch.device,
          autocast: Callable[[], contextlib.AbstractContextManager], progress: bool) -> np.ndarray:  # fmt: skip
    """Write the teacher's top-k logits, ids and log-sum-exp for every example; returns the probability the
    kept tokens hold at each position (N, T)."""
    values, ids, lse = out
    kept = np.empty(lse.shape, np.float32)
    k = values.shape[-1]
    for start in tqdm(range(0, len(ds), batch_size), desc="teacher cache", unit="batch", disable=not progress):
        stop = min(start + batch_size, len(ds))
        x = ds.get(torch.arange(start, stop))[0].to(device)
        with autocast():
            logits = teacher(x).float()  # (B, T, V)
        top = logits.topk(k, dim=-1)
        total = torch.logsumexp(logits, dim=-1)  # (B, T)
        values[start:stop] = top.values.cpu().numpy()
        ids[start:stop] = top.indices.cpu().numpy()
        lse[start:stop] = total.cpu().numpy()
        kept[start:stop] = torch.logsumexp(top.values - total[..., None], dim=-1).exp().cpu().numpy()
    return kept
