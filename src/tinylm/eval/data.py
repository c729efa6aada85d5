"""What is evaluated: documents of text, from a file, folder or glob (split as `tinylm prepare` splits
them), a named dataset, or a prepared shard folder's validation split (decoded back to text with the
folder's tokenizer, so each model can tokenize it with its own). Documents are read lazily and kept,
so every model sees the same ones and `--max-tokens` reads no more than it needs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from tinylm.errors import TinyLMError


class Documents:
    """A lazily read, re-iterable list of documents (each later pass replays what was read)."""

    def __init__(self, docs: Iterable[str], name: str):
        self.name = name
        self._source: Iterator[str] = iter(docs)
        self._read: list[str] = []

    def __iter__(self) -> Iterator[str]:
        yield from self._read
        for doc in self._source:
            self._read.append(doc)
            yield doc

    def check_not_empty(self) -> None:
        if next(iter(self), None) is None:
            raise TinyLMError(f"{self.name}: no text to evaluate (empty or only whitespace); give a text with content")


def load_documents(spec: str | Path, separator: str = "auto", text_field: str = "text",
                   split: str = "val") -> Documents:  # fmt: skip
    """Documents named by `spec`: a prepared shard folder (its `split`), a dataset name known to
    `tinylm prepare`, or text/JSONL files, folders and globs."""
    from tinylm.data.prepare import DATASETS, _resolve_inputs
    from tinylm.data.shards import MANIFEST
    from tinylm.data.sources import SourceStats, read_documents

    path = Path(spec)
    if path.is_dir() and ((path / MANIFEST).is_file() or any(path.glob("*.bin"))):
        docs = Documents(shard_documents(path, split), f"{path} ({split} split)")
    else:
        if str(spec) in DATASETS and not path.exists():
            files, sep = _resolve_inputs([], str(spec), None)
        else:
            files, sep = _resolve_inputs([spec], None, None)
        docs = Documents(read_documents(files, SourceStats(), sep or separator, text_field), str(spec))
    docs.check_not_empty()
    return docs


def shard_documents(directory: Path, split: str = "val") -> Iterator[str]:
    """The documents of a prepared split as text: the stream is cut after each end-of-document id
    (before each begin-of-document id for a tokenizer without one) and decoded."""
    from tinylm.data.shards import TokenShards

    shards = TokenShards(directory, split)
    if shards.manifest is None:
        raise TinyLMError(f"{directory}: bare shards without {directory / 'manifest.json'} have no known tokenizer, "
                          "so their text (and bits per byte) cannot be recovered; evaluate the text instead")  # fmt: skip
    tok = shards.tokenizer
    ids = shards.window(0, len(shards)) if len(shards) else np.zeros(0, np.int64)
    if tok.eos_id is not None:
        cuts = np.flatnonzero(ids == tok.eos_id) + 1
    elif tok.bos_id is not None:
        cuts = np.flatnonzero(ids == tok.bos_id)
    else:
        raise TinyLMError(f"{directory}: its tokenizer marks no document boundaries; evaluate the text instead")
    for piece in np.split(ids, cuts):
        text = tok.decode(piece.tolist()).strip()
        if text:
            yield text
