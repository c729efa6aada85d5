"""llama2.c's `tokenizer.bin`: read, write, and encode/decode exactly as its run.c does.

Layout: uint32 max_token_length, then for each token: float32 score, uint32 byte length, the bytes.
The vocabulary size is not stored; it is the number of records. Pieces are SentencePiece pieces with
"▁" written as a plain space, BOS/EOS written as "\\n<s>\\n" / "\\n</s>\\n", and byte-fallback pieces
kept as the text "<0xXX>".

Encoding follows run.c: a leading space (SentencePiece's dummy prefix), each code point looked up in
the vocabulary or else split into byte-fallback tokens, then repeatedly merge the adjacent pair whose
concatenation is the highest-scoring piece (leftmost on ties). A heap makes that O(n log n) instead of
run.c's O(n^2). Unlike run.c, byte-fallback and special pieces never take part in merges (as in
SentencePiece), so a literal "<0x41>" in the text stays text.
"""

from __future__ import annotations

import heapq
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinylm.errors import TinyLMError
from tinylm.fileio import write_bytes
from tinylm.tokenizer.base import Tokenizer

if TYPE_CHECKING:
    from tinylm.tokenizer.sentencepiece import SentencePieceTokenizer

BIN_FILE = "tokenizer.bin"
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
_SPECIAL_IDS = (0, 1, 2)  # unk, bos, eos: SentencePiece's defaults, which llama2.c's export keeps


@dataclass
class Llama2cVocab:
    pieces: list[bytes]
    scores: list[float]
    max_token_length: int


def from_bin(data: bytes) -> Llama2cVocab:
    """Parse the bytes of a `tokenizer.bin`."""
    if len(data) < 4:
        raise TinyLMError("tokenizer.bin is truncated: shorter than its 4-byte header; re-export it")
    (max_len,) = struct.unpack_from("<I", data, 0)
    pieces: list[bytes] = []
    scores: list[float] = []
    pos = 4
    while pos < len(data):
        if pos + 8 > len(data):
            raise TinyLMError(
                f"tokenizer.bin is truncated in record {len(pieces)} (byte {pos}); re-export it"
            )
        score, n = struct.unpack_from("<fI", data, pos)
        pos += 8
        if pos + n > len(data):
            raise TinyLMError(
                f"tokenizer.bin is truncated in record {len(pieces)} (byte {pos}); re-export it"
            )
        pieces.append(data[pos : pos + n])
        scores.append(score)
        pos += n
    return Llama2cVocab(pieces, scores, max_len)


def to_bin(vocab: Llama2cVocab) -> bytes:
    """The bytes of a `tokenizer.bin` for `vocab` (inverse of `from_bin`, byte for byte)."""
    parts = [struct.pack("<I", vocab.max_token_length)]
    for piece, score in zip(vocab.pieces, vocab.scores, strict=True):
        parts.append(struct.pack("<fI", score, len(piece)))
        parts.append(piece)
    return b"".join(parts)


def vocab_from_sentencepiece(tok: SentencePieceTokenizer) -> Llama2cVocab:
    """The vocabulary llama2.c's export script writes for a SentencePiece model."""
    sp = tok.sp
    pieces: list[bytes] = []
    for i in range(sp.get_piece_size()):
        p = sp.id_to_piece(i)
        if i == sp.bos_id():
            p = "\n<s>\n"
        elif i == sp.eos_id():
            p = "\n</s>\n"
        pieces.append(p.replace("▁", " ").encode("utf-8"))
    scores = [sp.get_score(i) for i in range(sp.get_piece_size())]
    return Llama2cVocab(pieces, scores, max(len(p) for p in pieces))


class Llama2cTokenizer(Tokenizer):
    kind = "llama2c"

    def __init__(self, vocab: Llama2cVocab, bos_id: int | None = 1, eos_id: int | None = 2):
        self.vocab = vocab
        self.bos_id, self.eos_id = bos_id, eos_id
        self._text: list[bytes] = []  # what each id decodes to
        self._byte_ids: dict[int, int] = {}
        self._lookup: dict[bytes, int] = {}  # mergeable pieces
        for i, p in enumerate(vocab.pieces):
            m = _BYTE_PIECE.fullmatch(p)
            if m:
                self._byte_ids.setdefault(int(m.group(1), 16), i)
                self._text.append(bytes([int(m.group(1), 16)]))
                continue
            self._text.append(p)
            if i not in _SPECIAL_IDS:
                self._lookup.setdefault(p, i)
        self._scores = vocab.scores
        self.lossless = len(self._byte_ids) == 256 and b" " in self._lookup

    @classmethod
    def from_file(cls, path: str | Path) -> Llama2cTokenizer:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise TinyLMError(f"{path}: cannot read ({e.strerror})") from None
        try:
            return cls(from_bin(data))
        except TinyLMError as e:
            raise TinyLMError(f"{path}: {e}") from None

    @classmethod
    def from_sentencepiece(cls, tok: SentencePieceTokenizer) -> Llama2cTokenizer:
        return cls(vocab_from_sentencepiece(tok), tok.bos_id, tok.eos_id)

    def to_bin(self) -> bytes:
        return to_bin(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab.pieces)

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        lookup = self._lookup
        ids: list[int] = []
        space = lookup.get(b" ")
        if space is not None:
            ids.append(space)
        for ch in text:
            b = ch.encode("utf-8", "surrogatepass")
            i = lookup.get(b)
            if i is not None:
                ids.append(i)
                continue
            try:
                ids.extend(self._byte_ids[x] for x in b)
            except KeyError:
                raise TinyLMError(
                    f"character {ch!r} is not in this tokenizer.bin vocabulary and it has no byte-fallback pieces"
                ) from None
        return self._merge(ids)

    def _merge(self, ids: list[int]) -> list[int]:
        n = len(ids)
        lookup, scores = self._lookup, self._scores
        # Byte-fallback tokens carry no mergeable text (None).
        text: list[bytes | None] = [
            self.vocab.pieces[i] if lookup.get(self.vocab.pieces[i]) == i else None for i in ids
        ]
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        version = [0] * n
        heap: list[tuple[float, int, int, int, int, int]] = []

        def push(a: int) -> None:
            b = nxt[a]
            if b >= n or text[a] is None or text[b] is None:
                return
            j = lookup.get(text[a] + text[b])  # type: ignore[operator]
            if j is not None:
                heapq.heappush(heap, (-scores[j], a, b, version[a], version[b], j))

        for a in range(n - 1):
            push(a)
        while heap:
            _, a, b, va, vb, j = heapq.heappop(heap)
            if text[a] is None or nxt[a] != b or version[a] != va or version[b] != vb:
                continue  # stale: one side was merged away since this pair was pushed
            ids[a], text[a] = j, self.vocab.pieces[j]
            version[a] += 1
            text[b] = None
            version[b] += 1
            nxt[a] = nxt[b]
            if nxt[b] < n:
                prv[nxt[b]] = a
            ids[b] = -1
            if prv[a] >= 0:
                push(prv[a])
            push(a)
        return [i for i in ids if i >= 0]

    def decode(self, ids: Sequence[int]) -> str:
        out = bytearray()
        at_start = True  # run.c drops the dummy-prefix space of the first piece after BOS
        specials = (self.bos_id, self.eos_id)
        for i in ids:
            i = int(i)
            if i in specials:
                at_start = i == self.bos_id
                continue
            if not 0 <= i < len(self._text):
                continue
            piece = self._text[i]
            if at_start and piece.startswith(b" "):
                piece = piece[1:]
            at_start = False
            out += piece
        return out.decode("utf-8", errors="replace")

    def _save_files(self, directory: Path) -> dict[str, Any]:
        write_bytes(directory / BIN_FILE, self.to_bin())
        return {"file": BIN_FILE}

    @classmethod
    def _load_files(cls, directory: Path, meta: dict[str, Any]) -> Llama2cTokenizer:
        return cls.from_file(directory / meta.get("file", BIN_FILE))
