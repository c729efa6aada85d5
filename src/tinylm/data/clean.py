"""Cleaning: Unicode NFC, exact-duplicate and near-duplicate removal, with a report of what went."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

from tinylm.data.minhash import MinHashConfig, NearDuplicateIndex


@dataclass
class CleanReport:
    documents_in: int = 0
    documents_out: int = 0
    bytes_in: int = 0  # UTF-8 bytes of the documents before cleaning
    bytes_out: int = 0
    nfc_changed: int = 0  # documents that Unicode NFC normalisation changed
    exact_duplicates: int = 0
    near_duplicates: int = 0
    near_dedup: dict[str, Any] | None = field(default=None)  # the MinHash settings, None when off

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Cleaner:
    """`clean(docs)` returns the documents to keep, NFC-normalised, updating `report`.

    `exact` drops documents whose NFC text was seen before (a set of 16-byte hashes); `near` (a
    MinHash configuration, or None for off) drops near duplicates of an earlier kept document.
    """

    def __init__(self, exact: bool = True, near: MinHashConfig | None = None):
        self.exact = exact
        self.seen: set[bytes] = set()
        self.near = NearDuplicateIndex(near) if near is not None else None
        self.report = CleanReport()
        if self.near is not None:
            self.report.near_dedup = {
                **asdict(self.near.config),
                "bands": self.near.bands,
                "rows": self.near.rows,
            }

    def clean(self, docs: list[str]) -> list[str]:
        r = self.report
        r.documents_in += len(docs)
        out: list[str] = []
        for doc in docs:
            r.bytes_in += len(doc.encode("utf-8", "surrogatepass"))
            nfc = unicodedata.normalize("NFC", doc)
            if nfc != doc:
                r.nfc_changed += 1
            if self.exact:
                digest = hashlib.blake2b(nfc.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                if digest in self.seen:
                    r.exact_duplicates += 1
                    continue
                self.seen.add(digest)
            out.append(nfc)
        if self.near is not None:
            flags = self.near.check(out)
            r.near_duplicates += sum(flags)
            out = [d for d, dup in zip(out, flags, strict=True) if not dup]
        r.documents_out += len(out)
        r.bytes_out += sum(len(d.encode("utf-8", "surrogatepass")) for d in out)
        return out
