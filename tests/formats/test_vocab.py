"""Vocabulary conversions between tokenizer kinds and the forms formats store."""

from __future__ import annotations

import pytest

from tests.formats.conftest import save
from tinylm.errors import TinyLMError
from tinylm.formats import export_model, import_model
from tinylm.formats.vocab import (
    GPT2_PATTERNS,
    byte_bpe,
    byte_bpe_from_ranks,
    byte_bpe_to_hf,
    is_sentencepiece_style,
    llama2c_tokenizer,
    sp_to_hf,
    sp_vocab,
    to_hf,
    token_bytes,
)
from tinylm.tokenizer import train_tokenizer
from tinylm.tokenizer.bpe import BPETokenizer
from tinylm.tokenizer.tiktoken_bpe import TiktokenTokenizer

TRICKY = [" lead  and\ttab\r\nrun   of spaces\x00 Ω ① ﬁ 中文 😀 trail ", "  x", "a\n\nb", "it's 12345 dogs!!"]


def test_tiktoken_gpt2_style_converts_to_hf(bpe_tok, stories):
    tiktoken = pytest.importorskip("tiktoken")
    raw = token_bytes(bpe_tok)
    specials = byte_bpe(bpe_tok).specials
    enc = tiktoken.Encoding(
        "gpt2-like",
        pat_str=GPT2_PATTERNS[1],
        mergeable_ranks={t: i for i, t in enumerate(raw) if i not in specials},
        special_tokens={raw[i].decode(): i for i in specials},
    )
    tok = TiktokenTokenizer(enc)
    hf = byte_bpe_to_hf(byte_bpe(tok))
    for text in [*stories[300:330], *TRICKY]:
        assert hf.encode(text, add_special_tokens=False).ids == enc.encode_ordinary(text)
    other = tiktoken.Encoding(
        "other", pat_str=r"\S+|\s+", mergeable_ranks=enc._mergeable_ranks, special_tokens={}
    )
    with pytest.raises(TinyLMError, match="splits text unlike GPT-2"):
        byte_bpe(TiktokenTokenizer(other))


def test_merges_rebuilt_from_token_order(bpe_tok):
    v = byte_bpe(bpe_tok)
    rebuilt = byte_bpe_from_ranks(token_bytes(bpe_tok), v.specials, v.bos_id, v.eos_id)
    assert rebuilt.tokens == v.tokens and rebuilt.merges == v.merges


def test_sentencepiece_style_tokenizer_json(sp_tok, stories, tmp_path):
    """Llama's tokenizer.json (HF BPE with byte fallback) without its tokenizer.model still exports to
    SentencePiece-style formats: pieces, and scores that order the merges as the merge list does."""
    (tmp_path / "tokenizer.json").write_text(sp_to_hf(sp_vocab(sp_tok)).to_str())
    as_json = BPETokenizer.from_file(tmp_path / "tokenizer.json")
    as_json.bos_id, as_json.eos_id = sp_tok.bos_id, sp_tok.eos_id
    assert is_sentencepiece_style(as_json) and not is_sentencepiece_style(
        train_tokenizer("bpe", ["a b"] * 9, 300)
    )
    v = sp_vocab(as_json)
    assert v.pieces == sp_vocab(sp_tok).pieces and v.types == sp_vocab(sp_tok).types
    run_c = llama2c_tokenizer(v)
    for text in [*stories[300:330], *TRICKY]:
        assert as_json.encode(text) == run_c.encode(text) == sp_tok.encode(text)
    assert token_bytes(as_json) == token_bytes(sp_tok)


def test_llama_folder_with_only_tokenizer_json_goes_to_gguf(sp_tok, stories, tmp_path):
    from tests.conftest import tiny_llama

    save(tmp_path / "ckpt", tiny_llama(vocab_size=sp_tok.vocab_size), sp_tok)
    export_model(tmp_path / "ckpt", "hf", tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").unlink()
    assert import_model(tmp_path / "hf", tmp_path / "back").tokenizer.kind == "bpe"
    export_model(tmp_path / "back", "gguf", tmp_path / "m.gguf")
    tok = import_model(tmp_path / "m.gguf", tmp_path / "again").tokenizer
    assert tok.kind == "llama2c" and (tok.bos_id, tok.eos_id) == (1, 2)
    for text in stories[300:320]:
        assert tok.encode(text) == sp_tok.encode(text)


def test_char_tokenizer_to_hf():
    tok = train_tokenizer("char", ["hello world\nfoo"])
    hf = to_hf(tok)
    for text in ["hello\n world", "foo  "]:
        assert hf.encode(text).ids == tok.encode(text)
        assert hf.decode(tok.encode(text)) == text
