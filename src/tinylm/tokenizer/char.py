"""Character-level tokenizer (nanoGPT's shakespeare_char, minGPT's CharDataset)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.tokenizer.base import Tokenizer


class CharTokenizer(Tokenizer):
    """One id per distinct character seen in training, plus an end-of-text id after them.

    Characters never seen in training cannot be encoded: that raises a clear error rather than
    silently mapping them to something else, because the model could never produce them anyway.
    """

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.eos_id = len(self.chars)

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        if not seen:
            raise TinyLMError("cannot build a character vocabulary from an empty corpus; give it some text")
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise TinyLMError(
                f"character {e.args[0]!r} is not in this character-level vocabulary; "
                "use only characters from the training text"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        n = len(self.chars)
        return "".join(self.chars[i] for i in ids if 0 <= i < n)

    def _save_files(self, directory: Path) -> dict[str, Any]:
        return {"chars": "".join(self.chars)}

    @classmethod
    def _load_files(cls, directory: Path, meta: dict[str, Any]) -> CharTokenizer:
        return cls(list(meta["chars"]))
