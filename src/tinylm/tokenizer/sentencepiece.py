"""SentencePiece BPE: trained the way llama2.c's `train_vocab` does, or loaded from a `tokenizer.model`
(the Llama 2 tokenizer is one). Ids follow Llama: unk=0, bos=1, eos=2, then 256 byte-fallback pieces.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.fileio import write_bytes
from tinylm.tokenizer.base import Tokenizer

MODEL_FILE = "tokenizer.model"
# Strings that lose information under SentencePiece's common options (extra-whitespace removal,
# NFKC); a model that round-trips all of them keeps every byte.
_PROBE = " lead  and\ttab\r\nrun   of spaces\x00 Ω ① ﬁ 中文 😀 trail "


def _spm() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise TinyLMError(
            "the sentencepiece tokenizer needs the sentencepiece package: pip install 'tinylm[sentencepiece]'"
        ) from None
    return sentencepiece


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = _spm().SentencePieceProcessor(model_proto=model_proto)
        bos, eos = self.sp.bos_id(), self.sp.eos_id()
        self.bos_id = bos if bos >= 0 else None
        self.eos_id = eos if eos >= 0 else None
        self.lossless = self.decode(self.encode(_PROBE)) == _PROBE

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> SentencePieceTokenizer:
        """BPE with byte fallback and split digits, like llama2.c's `train_vocab`, but keeping every
        whitespace character (so the trained tokenizer is lossless)."""
        model = io.BytesIO()
        with tempfile.TemporaryDirectory() as tmp:
            # SentencePiece reads sentences one per line; a file keeps memory flat for large corpora.
            corpus = Path(tmp) / "corpus.txt"
            with open(corpus, "w", encoding="utf-8") as f:
                for t in texts:
                    for line in t.splitlines():
                        if line.strip():
                            f.write(line + "\n")
            try:
                _spm().SentencePieceTrainer.train(
                    input=str(corpus),
                    model_writer=model,
                    model_type="bpe",
                    vocab_size=vocab_size,
                    self_test_sample_size=0,
                    input_format="text",
                    character_coverage=1.0,
                    num_threads=2,
                    split_digits=True,
                    allow_whitespace_only_pieces=True,
                    byte_fallback=True,
                    unk_surface=r" \342\201\207 ",
                    normalization_rule_name="identity",
                    remove_extra_whitespaces=False,
                    max_sentence_length=1 << 16,
                    minloglevel=2,
                )
            except RuntimeError as e:
                raise TinyLMError(f"SentencePiece training failed: {e}; try a smaller --vocab-size") from None
        return cls(model.getvalue())

    @classmethod
    def from_file(cls, path: str | Path) -> SentencePieceTokenizer:
        try:
            return cls(Path(path).read_bytes())
        except OSError as e:
            raise TinyLMError(f"{path}: cannot read ({e.strerror})") from None
        except RuntimeError as e:
            raise TinyLMError(f"{path}: not a SentencePiece model ({e})") from None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def _save_files(self, directory: Path) -> dict[str, Any]:
        write_bytes(directory / MODEL_FILE, self.model_proto)
        return {"file": MODEL_FILE}

    @classmethod
    def _load_files(cls, directory: Path, meta: dict[str, Any]) -> SentencePieceTokenizer:
        return cls.from_file(directory / meta.get("file", MODEL_FILE))
