"""Tokenizers behind one interface, saved and loaded as a directory (see `base.py`)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.fileio import write_json
from tinylm.tokenizer.base import META_FILE, Tokenizer
from tinylm.tokenizer.bpe import BPETokenizer
from tinylm.tokenizer.char import CharTokenizer
from tinylm.tokenizer.llama2c import Llama2cTokenizer
from tinylm.tokenizer.sentencepiece import SentencePieceTokenizer
from tinylm.tokenizer.tiktoken_bpe import TiktokenTokenizer

_KINDS: dict[str, type[Tokenizer]] = {
    t.kind: t
    for t in (CharTokenizer, BPETokenizer, SentencePieceTokenizer, Llama2cTokenizer, TiktokenTokenizer)
}
TRAINABLE = ("bpe", "sentencepiece", "char")
PRETRAINED = ("llama2", "gpt2")


def register(cls: type[Tokenizer]) -> type[Tokenizer]:
    _KINDS[cls.kind] = cls
    return cls


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> None:
    """Write `tok` into `directory` (each file atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    options = tok._save_files(directory)
    meta = {
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        **options,
    }
    write_json(directory / META_FILE, meta)


def tokenizer_hash(tok: Tokenizer) -> str:
    """SHA-256 of the tokenizer as saved (every file, by name): equal exactly when two tokenizers map text
    to the same ids, whatever directory each was loaded from."""
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as d:
        save_tokenizer(tok, d)
        for f in sorted(p for p in Path(d).rglob("*") if p.is_file()):
            h.update(f.relative_to(d).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _load_file(path: Path) -> Tokenizer:
    """A tokenizer from one foreign file: SentencePiece `.model`, llama2.c `.bin` or HF `tokenizer.json`."""
    loaders = {".model": SentencePieceTokenizer, ".bin": Llama2cTokenizer, ".json": BPETokenizer}
    cls = loaders.get(path.suffix)
    if cls is None:
        raise TinyLMError(
            f"{path}: not a tokenizer file; give a tokenizer.model, tokenizer.bin or tokenizer.json"
        )
    return cls.from_file(path)  # type: ignore[attr-defined]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A saved tokenizer directory, or a directory/file holding a tokenizer.model, tokenizer.bin or tokenizer.json."""
    directory = Path(path)
    if directory.is_file():
        return _load_file(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        for name in ("tokenizer.model", "tokenizer.json", "tokenizer.bin"):
            if (directory / name).is_file():
                return _load_file(directory / name)
        raise TinyLMError(f"{directory}: no tokenizer here (missing {META_FILE}); train or attach one first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{meta_path}: not valid JSON ({e}); re-save the tokenizer") from None
    cls = _KINDS.get(meta.get("kind", ""))
    if cls is None:
        raise TinyLMError(
            f"{meta_path}: unknown tokenizer kind {meta.get('kind')!r}; known: {', '.join(sorted(_KINDS))}"
        )
    tok = cls._load_files(directory, meta)
    tok.bos_id, tok.eos_id = meta.get("bos_id"), meta.get("eos_id")
    return tok


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 4096, bos: bool = False) -> Tokenizer:
    """Train a new tokenizer of `kind` ("bpe", "sentencepiece" or "char") on `texts`.

    `bos` adds a BOS token to byte-level BPE (SentencePiece always has one, char never does).
    `vocab_size` is ignored for "char", whose vocabulary is the characters seen.
    """
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size, bos=bos)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(texts, vocab_size)
    if kind == "char":
        return CharTokenizer.train(texts)
    raise TinyLMError(f"cannot train a tokenizer of kind {kind!r}; trainable kinds: {', '.join(TRAINABLE)}")


def pretrained_tokenizer(name: str) -> Tokenizer:
    """A published tokenizer by name: "llama2" (Llama 2's tokenizer.model, downloaded once into the cache)
    or "gpt2" (through tiktoken)."""
    if name == "gpt2":
        return TiktokenTokenizer.from_name("gpt2")
    if name == "llama2":
        from tinylm.data.download import fetch

        return SentencePieceTokenizer.from_file(fetch("llama2-tokenizer"))
    raise TinyLMError(f"unknown tokenizer name {name!r}; known: {', '.join(PRETRAINED)}")


__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "Llama2cTokenizer",
    "SentencePieceTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "pretrained_tokenizer",
    "register",
    "save_tokenizer",
    "train_tokenizer",
]
