"""GPT-2's tokenizer through tiktoken (kind "tiktoken"). Its encoding files come from tiktoken's cache
(`$TIKTOKEN_CACHE_DIR`) or are downloaded once; the saved directory stores only the encoding's name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.tokenizer.base import Tokenizer

EOS_TOKEN = "<|endoftext|>"


def _get_encoding(name: str) -> Any:
    try:
        import tiktoken
    except ImportError:
        raise TinyLMError(
            "the gpt2 tokenizer needs the tiktoken package: pip install 'tinylm[tiktoken]'"
        ) from None
    try:
        return tiktoken.get_encoding(name)
    except ValueError as e:
        if "Unknown encoding" in str(e):
            raise TinyLMError(f"tiktoken has no encoding {name!r}; use gpt2") from None
        raise TinyLMError(
            f"tiktoken's {name} files are corrupt ({e}); clear $TIKTOKEN_CACHE_DIR and retry"
        ) from None
    except Exception as e:  # requests/urllib/OS errors when the files are neither cached nor reachable
        raise TinyLMError(
            f"tiktoken's {name} encoding files are not cached and could not be downloaded ({type(e).__name__}); "
            "connect once or point $TIKTOKEN_CACHE_DIR at a cache that has them"
        ) from None


class TiktokenTokenizer(Tokenizer):
    kind = "tiktoken"
    lossless = True

    def __init__(self, encoding: Any):
        self.enc = encoding
        self.name: str = encoding.name
        self.eos_id = encoding._special_tokens.get(EOS_TOKEN)
        self.bos_id = None

    @classmethod
    def from_name(cls, name: str = "gpt2") -> TiktokenTokenizer:
        return cls(_get_encoding(name))

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)  # a literal "<|endoftext|>" in text stays text

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts)

    def decode(self, ids: Sequence[int]) -> str:
        special = set(self.enc._special_tokens.values())
        return self.enc.decode_bytes([int(i) for i in ids if int(i) not in special]).decode(
            "utf-8", "replace"
        )

    def _save_files(self, directory: Path) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def _load_files(cls, directory: Path, meta: dict[str, Any]) -> TiktokenTokenizer:
        return cls.from_name(meta.get("name", "gpt2"))
