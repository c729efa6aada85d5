"""Tokenizers behind one interface, saved and loaded as a directory (see `base.py`)."""

from __future__ import annotations

import json
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.fileio import write_json
from tinylm.tokenizer.base import META_FILE, Tokenizer
from tinylm.tokenizer.char import CharTokenizer

_KINDS: dict[str, type[Tokenizer]] = {t.kind: t for t in (CharTokenizer,)}


def register(cls: type[Tokenizer]) -> type[Tokenizer]:
    _KINDS[cls.kind] = cls
    return cls


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> None:
    """Write `tok` into `directory` (each file atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    options = tok._save_files(directory)
    meta = {"kind": tok.kind, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id, **options}
    write_json(directory / META_FILE, meta)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise TinyLMError(f"{directory}: no tokenizer here (missing {META_FILE}); train or attach one first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{meta_path}: not valid JSON ({e}); re-save the tokenizer") from None
    cls = _KINDS.get(meta.get("kind", ""))
    if cls is None:
        raise TinyLMError(f"{meta_path}: unknown tokenizer kind {meta.get('kind')!r}; known: {', '.join(sorted(_KINDS))}")
    tok = cls._load_files(directory, meta)
    tok.bos_id, tok.eos_id = meta.get("bos_id"), meta.get("eos_id")
    return tok


__all__ = ["CharTokenizer", "Tokenizer", "load_tokenizer", "register", "save_tokenizer"]
