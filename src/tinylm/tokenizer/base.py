"""The one tokenizer interface every part of tinylm codes against.

A tokenizer is saved as a directory: `tinylm_tokenizer.json` (kind, special ids, kind-specific options)
plus whatever files its kind needs (e.g. an HF `tokenizer.json`, a SentencePiece `tokenizer.model`).
Checkpoints keep it in their `tokenizer/` subdirectory; `prepare` keeps it beside the shards.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

META_FILE = "tinylm_tokenizer.json"


class Tokenizer(ABC):
    kind: ClassVar[str]  # registry key written to META_FILE
    bos_id: int | None = None
    eos_id: int | None = None  # also the document separator between documents in token shards
    lossless: bool = False  # True when decode(encode(text)) == text for every string (instances may refine)

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with no special tokens added (see `encode_document`)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; special tokens decode to nothing. Invalid UTF-8 becomes U+FFFD."""

    @abstractmethod
    def _save_files(self, directory: Path) -> dict[str, Any]:
        """Write the kind's own files into `directory`; return the kind's options for META_FILE."""

    @classmethod
    @abstractmethod
    def _load_files(cls, directory: Path, meta: dict[str, Any]) -> Tokenizer:
        """Inverse of `_save_files`."""

    def encode_document(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        """Ids of one document, framed by BOS/EOS where this tokenizer has them and they are asked for."""
        ids = self.encode(text)
        if bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids
