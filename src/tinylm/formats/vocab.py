"""Tokenizer vocabularies in the shapes other formats store them.

Two families cover every tokenizer tinylm has:
- SentencePiece-style (kinds "sentencepiece", "llama2c", and a "bpe" tokenizer.json with byte fallback
  as Llama's): pieces with "▁" for space, a score per piece
  (higher merges first), byte-fallback pieces "<0xXX>". Stored by GGUF as tokenizer model "llama", by
  llama2.c as tokenizer.bin, by Hugging Face as a BPE tokenizer.json with byte_fallback.
- Byte-level BPE (kinds "bpe", "tiktoken"): tokens are byte strings spelled in GPT-2's byte-to-unicode
  alphabet, plus an ordered merge list. Stored by GGUF as tokenizer model "gpt2", by HF as tokenizer.json,
  by llm.c as the raw bytes of each token (its merges follow from the token order, as in tiktoken).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from tinylm.errors import TinyLMError

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

    from tinylm.tokenizer import Tokenizer

# Piece types, numbered as both SentencePiece's model proto and GGUF's token_type do.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "▁"
GPT2_EOT = "<|endoftext|>"
# GPT-2's pre-tokenizer regex, as HF's ByteLevel applies it (tiktoken spells it either way)
GPT2_PATTERNS = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
)


@dataclass
class SpVocab:
    pieces: list[str]  # SentencePiece spelling: "▁the", "<0x0A>", "<s>"
    scores: list[float]
    types: list[int]
    bos_id: int | None
    eos_id: int | None

    @property
    def unk_id(self) -> int | None:
        return next((i for i, t in enumerate(self.types) if t == UNKNOWN), None)


@dataclass
class ByteBPE:
    tokens: list[str]  # byte-level spelling ("Ġthe"); specials as their own text
    merges: list[str]  # "Ġ t" pairs, highest priority first
    specials: set[int]
    bos_id: int | None
    eos_id: int | None


# ---- SentencePiece-style -----------------------------------------------------------------------


def sp_vocab(tok: Tokenizer) -> SpVocab:
    """The SentencePiece-style vocabulary of a "sentencepiece" or "llama2c" tokenizer."""
    if tok.kind == "sentencepiece":
        sp = tok.sp  # type: ignore[attr-defined]
        types = []
        for i in range(sp.get_piece_size()):
            kind = [
                (sp.is_unknown, UNKNOWN),
                (sp.is_control, CONTROL),
                (sp.is_byte, BYTE),
                (sp.is_unused, UNUSED),
            ]
            types.append(next((t for test, t in kind if test(i)), NORMAL))
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        scores = [sp.get_score(i) for i in range(sp.get_piece_size())]
        return SpVocab(pieces, scores, types, tok.bos_id, tok.eos_id)
    if tok.kind == "llama2c":
        from tinylm.tokenizer.llama2c import _BYTE_PIECE

        vocab = tok.vocab  # type: ignore[attr-defined]
        pieces, types = [], []
        for i, raw in enumerate(vocab.pieces):
            if i in (tok.bos_id, tok.eos_id):
                pieces.append("<s>" if i == tok.bos_id else "</s>")
                types.append(CONTROL)
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise TinyLMError(
                    f"tokenizer.bin piece {i} is not UTF-8 text; it has no SentencePiece spelling"
                ) from None
            pieces.append(text if _BYTE_PIECE.fullmatch(raw) else text.replace(" ", SPACE))
            types.append(BYTE if _BYTE_PIECE.fullmatch(raw) else UNKNOWN if raw == b"<unk>" else NORMAL)
        return SpVocab(pieces, list(vocab.scores), types, tok.bos_id, tok.eos_id)
    if is_sentencepiece_style(tok):
        return _sp_vocab_from_json(json.loads(tok.hf.to_str()), tok)  # type: ignore[attr-defined]
    raise TinyLMError(f"a {tok.kind!r} tokenizer has no SentencePiece-style vocabulary")


def is_sentencepiece_style(tok: Tokenizer) -> bool:
    """SentencePiece kinds, and HF tokenizer.json files converted from one (BPE with byte fallback, as
    Llama's): they can be written wherever a SentencePiece vocabulary goes."""
    if tok.kind in ("sentencepiece", "llama2c"):
        return True
    if tok.kind != "bpe":
        return False
    model = json.loads(tok.hf.to_str())["model"]  # type: ignore[attr-defined]
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def _sp_vocab_from_json(spec: dict, tok: Tokenizer) -> SpVocab:
    """Pieces from the vocabulary; a piece's score is minus the rank of the first merge that makes it,
    which orders merges exactly as the merge list does (pieces no merge makes never need a score)."""
    model = spec["model"]
    pieces = [""] * tok.vocab_size
    for text, i in model["vocab"].items():
        pieces[i] = text
    specials = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    for t in spec.get("added_tokens", []):
        pieces[t["id"]] = t["content"]
    made: dict[str, float] = {}
    for rank, m in enumerate(model["merges"]):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        made.setdefault(left + right, float(-rank))
    types = []
    for i, p in enumerate(pieces):
        byte = len(p) == 6 and p.startswith("<0x") and p.endswith(">")
        types.append(
            UNKNOWN if p == model.get("unk_token") else CONTROL if i in specials else BYTE if byte else NORMAL
        )
    scores = [made.get(p, -1e9 if len(p) > 1 else 0.0) for p in pieces]
    return SpVocab(pieces, scores, types, tok.bos_id, tok.eos_id)


def llama2c_tokenizer(v: SpVocab) -> Tokenizer:
    """A tinylm tokenizer (kind "llama2c", run.c's encoder, equal to SentencePiece BPE) for `v`."""
    from tinylm.tokenizer.llama2c import Llama2cTokenizer, Llama2cVocab

    pieces = []
    for i, p in enumerate(v.pieces):
        if i == v.bos_id:
            p = "\n<s>\n"  # llama2.c's spelling of the specials (its decoder prints them this way)
        elif i == v.eos_id:
            p = "\n</s>\n"
        elif v.types[i] != BYTE:
            p = p.replace(SPACE, " ")
        pieces.append(p.encode("utf-8"))
    return Llama2cTokenizer(Llama2cVocab(pieces, list(v.scores), max(map(len, pieces))), v.bos_id, v.eos_id)


def sp_to_hf(v: SpVocab) -> HFTokenizer:
    """An HF tokenizer (BPE with byte fallback, as Llama's tokenizer.json) that encodes like `v`.

    SentencePiece BPE merges the adjacent pair whose concatenation scores highest; HF BPE merges the pair
    ranked first. Listing, for each piece from the highest score down, every split of it into two pieces
    gives HF the same order.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    vocab = {p: i for i, p in enumerate(v.pieces)}
    mergeable = {p: i for p, i in vocab.items() if v.types[i] in (NORMAL, USER_DEFINED)}
    order = sorted(mergeable.values(), key=lambda i: (-v.scores[i], i))
    merges = []
    for i in order:
        p = v.pieces[i]
        splits = [(p[:k], p[k:]) for k in range(1, len(p)) if p[:k] in mergeable and p[k:] in mergeable]
        merges += sorted(splits, key=lambda lr: (mergeable[lr[0]], mergeable[lr[1]]))
    unk = v.pieces[v.unk_id] if v.unk_id is not None else None
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    # SentencePiece's dummy prefix: one "▁" before the text, even one that starts with a space
    hf.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    hf.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    hf.add_special_tokens([AddedToken(v.pieces[i], special=True, normalized=False)
                           for i, t in enumerate(v.types) if t in (CONTROL, UNKNOWN)])  # fmt: skip
    if v.bos_id is not None:
        bos = v.pieces[v.bos_id]
        hf.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, v.bos_id)]
        )
    return hf


# ---- byte-level BPE ----------------------------------------------------------------------------


@cache
def byte_to_char() -> dict[int, str]:
    """GPT-2's reversible spelling of bytes as printable characters: printable Latin-1 bytes stand
    for themselves, the other 68 are shifted to code points 256 and up, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table


@cache
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


def spell(raw: bytes) -> str:
    table = byte_to_char()
    return "".join(table[b] for b in raw)


def unspell(text: str) -> bytes:
    table = char_to_byte()
    try:
        return bytes(table[c] for c in text)
    except KeyError as e:
        raise TinyLMError(
            f"token {text!r} has character {e.args[0]!r}, which is not byte-level BPE spelling"
        ) from None


def byte_bpe(tok: Tokenizer) -> ByteBPE:
    """The byte-level BPE vocabulary and merges of a "bpe" or "tiktoken" tokenizer."""
    if tok.kind == "bpe":
        spec = json.loads(tok.hf.to_str())  # type: ignore[attr-defined]
        model = spec["model"]
        if (
            model.get("type") != "BPE"
            or model.get("byte_fallback")
            or "ByteLevel" not in json.dumps(spec["pre_tokenizer"])
        ):
            raise TinyLMError(
                "this tokenizer.json is not byte-level BPE (GPT-2 style); it cannot be stored as one"
            )
        tokens = [""] * tok.vocab_size
        for text, i in model["vocab"].items():
            tokens[i] = text
        specials = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        for t in spec.get("added_tokens", []):
            tokens[t["id"]] = t["content"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        return ByteBPE(tokens, merges, specials, tok.bos_id, tok.eos_id)
    if tok.kind == "tiktoken":
        enc = tok.enc  # type: ignore[attr-defined]
        if enc._pat_str not in GPT2_PATTERNS:  # tiktoken has no public accessor for the pattern
            raise TinyLMError(
                f"tiktoken's {enc.name} splits text unlike GPT-2; only its gpt2 encoding converts"
            )
        special = {enc.encode_single_token(t) for t in enc.special_tokens_set}
        raw = [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab)]
        return byte_bpe_from_ranks(raw, special, tok.bos_id, tok.eos_id)
    raise TinyLMError(f"a {tok.kind!r} tokenizer is not byte-level BPE")


def byte_bpe_from_ranks(
    raw: list[bytes], specials: set[int], bos_id: int | None, eos_id: int | None
) -> ByteBPE:
    """Recover the merge list from tokens in rank order (tiktoken's and llm.c's view of BPE): each
    multi-byte token is the merge of the two parts that BPE with only lower-ranked tokens leaves."""
    ranks = {t: i for i, t in enumerate(raw) if i not in specials}
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TinyLMError(
            f"vocabulary lacks single-byte token(s) such as {bytes([missing[0]])!r}; it is not byte-level BPE"
        )
    merges = []
    for t, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(t) < 2:
            continue
        parts = [t[i : i + 1] for i in range(len(t))]
        while len(parts) > 2:
            best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 62))
            joined = parts[best] + parts[best + 1]
            if ranks.get(joined, 1 << 62) >= rank:
                break
            parts[best : best + 2] = [joined]
        if len(parts) != 2:
            raise TinyLMError(
                f"token {rank} ({t!r}) is not the merge of two lower-ranked tokens; not a BPE vocabulary"
            )
        merges.append(f"{spell(parts[0])} {spell(parts[1])}")
    tokens = [raw[i].decode("utf-8", "replace") if i in specials else spell(raw[i]) for i in range(len(raw))]
    return ByteBPE(tokens, merges, specials, bos_id, eos_id)


def byte_bpe_to_hf(v: ByteBPE) -> HFTokenizer:
    """An HF byte-level BPE tokenizer (GPT-2's pre-tokenizer regex) for `v`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(v.tokens)}
    if len(vocab) != len(v.tokens):
        raise TinyLMError("the vocabulary spells two ids the same way; it is not a BPE vocabulary")
    merges = [tuple(m.split(" ", 1)) for m in v.merges]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    # the specials are in the vocabulary already, so they keep their ids
    hf.add_special_tokens(
        [AddedToken(v.tokens[i], special=True, normalized=False) for i in sorted(v.specials)]
    )
    return hf


def byte_bpe_tokenizer(v: ByteBPE) -> Tokenizer:
    """A tinylm "bpe" tokenizer for `v`."""
    from tinylm.tokenizer.bpe import BPETokenizer

    tok = BPETokenizer(byte_bpe_to_hf(v))
    tok.bos_id, tok.eos_id = v.bos_id, v.eos_id
    return tok


def token_bytes(tok: Tokenizer) -> list[bytes]:
    """What each id of `tok` stands for, as raw bytes (specials as their text)."""
    if is_sentencepiece_style(tok):
        v = sp_vocab(tok)
        out = []
        for p, t in zip(v.pieces, v.types, strict=True):
            out.append(bytes([int(p[3:5], 16)]) if t == BYTE else p.replace(SPACE, " ").encode("utf-8"))
        return out
    if tok.kind in ("bpe", "tiktoken"):
        b = byte_bpe(tok)
        return [t.encode("utf-8") if i in b.specials else unspell(t) for i, t in enumerate(b.tokens)]
    if tok.kind == "char":
        return [c.encode("utf-8") for c in tok.chars] + [GPT2_EOT.encode()]  # type: ignore[attr-defined]
    raise TinyLMError(f"cannot list the tokens of a {tok.kind!r} tokenizer")


def char_to_hf(tok: Tokenizer) -> HFTokenizer:
    """An HF tokenizer for a character-level one: BPE without merges splits text into characters."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    chars = tok.chars  # type: ignore[attr-defined]
    hf = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)} | {GPT2_EOT: len(chars)}, merges=[]))
    hf.decoder = decoders.Fuse()
    hf.add_special_tokens([AddedToken(GPT2_EOT, special=True, normalized=False)])
    return hf


def document_start(tok: Tokenizer) -> int | None:
    """The token tinylm puts before a text prompt, as training put it before every document: BOS, or the
    EOS that separates documents when the tokenizer has no BOS (GPT-2's <|endoftext|>). Exports declare
    it, so other runtimes start the same prompt the same way."""
    return tok.bos_id if tok.bos_id is not None else tok.eos_id


def starting_with(hf: HFTokenizer, start: int) -> HFTokenizer:
    """A copy of `hf` whose encode (with special tokens, transformers' default) puts `start` first."""
    from tokenizers import Tokenizer, processors

    out = Tokenizer.from_str(hf.to_str())
    piece = out.id_to_token(start)
    out.post_processor = processors.TemplateProcessing(
        single=f"{piece} $A", pair=f"{piece} $A {piece} $B", special_tokens=[(piece, start)]
    )
    return out


def to_hf(tok: Tokenizer) -> HFTokenizer:
    """The HF `tokenizers` form of any tinylm tokenizer."""
    if tok.kind == "bpe":
        return tok.hf  # type: ignore[attr-defined]
    if tok.kind == "tiktoken":
        return byte_bpe_to_hf(byte_bpe(tok))
    if tok.kind in ("sentencepiece", "llama2c"):
        return sp_to_hf(sp_vocab(tok))
    if tok.kind == "char":
        return char_to_hf(tok)
    raise TinyLMError(f"a {tok.kind!r} tokenizer has no Hugging Face tokenizer.json form")
