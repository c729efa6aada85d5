"""Byte-level BPE (GPT-2 style) trained and run by HF `tokenizers`.

Saved as the plain HF `tokenizer.json` (plus a `tokenizer_config.json`), so `transformers.AutoTokenizer`
and the HF exporter can load the directory as it is. Text never produces special tokens: a literal
"<|endoftext|>" in a document is encoded as ordinary bytes, so every string round-trips exactly and
only `encode_document` inserts the real separator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tinylm.errors import TinyLMError
from tinylm.fileio import write_json, write_text
from tinylm.tokenizer.base import Tokenizer

EOS_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|startoftext|>"
HF_FILE = "tokenizer.json"


class BPETokenizer(Tokenizer):
    kind = "bpe"
    lossless = True

    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        self.hf.encode_special_tokens = True  # specials come only from encode_document, never from text
        self.eos_id = hf.token_to_id(EOS_TOKEN)
        self.bos_id = hf.token_to_id(BOS_TOKEN)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, bos: bool = False) -> BPETokenizer:
        specials = [EOS_TOKEN] + ([BOS_TOKEN] if bos else [])
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + len(specials):
            raise TinyLMError(
                f"--vocab-size {vocab_size} is too small for byte-level BPE; use at least {len(alphabet) + len(specials)}"
            )
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
        )
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once (HF tokenizers parallelises this across cores; the `_fast` variant,
        where there is one, skips computing character offsets, which we never use)."""
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def _save_files(self, directory: Path) -> dict[str, Any]:
        write_text(directory / HF_FILE, self.hf.to_str(pretty=True))
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS_TOKEN}
        if self.bos_id is not None:
            config["bos_token"] = BOS_TOKEN
        write_json(directory / "tokenizer_config.json", config)
        return {"file": HF_FILE}

    @classmethod
    def _load_files(cls, directory: Path, meta: dict[str, Any]) -> BPETokenizer:
        return cls.from_file(directory / meta.get("file", HF_FILE))

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises plain Exception on a bad file
            raise TinyLMError(
                f"{path}: not a readable HF tokenizer.json ({e}); re-save the tokenizer"
            ) from None
