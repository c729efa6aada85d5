"""The Llama 2 tokenizer two ways (tokenizer.model and llama2.c's tokenizer.bin) against SentencePiece itself."""

from __future__ import annotations

import pytest

from tinylm.errors import TinyLMError
from tinylm.tokenizer.llama2c import (
    Llama2cTokenizer,
    Llama2cVocab,
    from_bin,
    to_bin,
    vocab_from_sentencepiece,
)
from tinylm.tokenizer.sentencepiece import SentencePieceTokenizer


@pytest.fixture(scope="module")
def stories(shared_data) -> list[str]:
    text = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:400]


def test_both_encoders_match_sentencepiece(shared_data, stories):
    spm = pytest.importorskip("sentencepiece")
    d = shared_data / "llama2_tokenizer"
    reference = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    ours_model = SentencePieceTokenizer.from_file(d / "tokenizer.model")
    ours_bin = Llama2cTokenizer.from_file(d / "tokenizer.bin")
    # Whole stories (with newlines and punctuation), and two stories joined by a double space.
    texts = [*stories, stories[0] + "  " + stories[1]]
    for text in texts:
        expected = reference.encode(text)
        assert ours_model.encode(text) == expected
        assert ours_bin.encode(text) == expected
        assert ours_bin.decode([1, *expected]) == reference.decode(expected) == text


def test_bin_round_trip_is_byte_exact(shared_data):
    d = shared_data / "llama2_tokenizer"
    raw = (d / "tokenizer.bin").read_bytes()
    vocab = from_bin(raw)
    assert len(vocab.pieces) == 32000 and vocab.pieces[13] == b"<0x0A>" and vocab.pieces[1] == b"\n<s>\n"
    assert to_bin(vocab) == raw
    # llama2.c's export of the tokenizer.model gives the same file.
    assert to_bin(vocab_from_sentencepiece(SentencePieceTokenizer.from_file(d / "tokenizer.model"))) == raw


def test_bin_from_trained_sentencepiece_encodes_alike():
    from tinylm.tokenizer import train_tokenizer

    corpus = ["The quick brown fox jumps over the lazy dog 42 times.\nA dog sleeps.\n" * 5] * 10
    sp = train_tokenizer("sentencepiece", corpus, vocab_size=320)
    bin_tok = Llama2cTokenizer(from_bin(to_bin(vocab_from_sentencepiece(sp))))  # type: ignore[arg-type]
    for text in ["The lazy fox sleeps.", "dogs 12345\n\nfox  jumps", "ünïcode 中"]:
        assert bin_tok.encode(text) == sp.encode(text)


def test_truncated_bin_is_one_clear_error(shared_data, tmp_path):
    raw = (shared_data / "llama2_tokenizer" / "tokenizer.bin").read_bytes()
    bad = tmp_path / "tokenizer.bin"
    bad.write_bytes(raw[:1001])
    with pytest.raises(TinyLMError, match=r"tokenizer.bin.*truncated"):
        Llama2cTokenizer.from_file(bad)


def test_no_byte_fallback_names_the_character():
    tok = Llama2cTokenizer(Llama2cVocab([b"<unk>", b"\n<s>\n", b"\n</s>\n", b" ", b"a"], [0.0] * 5, 6))
    assert tok.decode(tok.encode("a a")) == "a a"
    with pytest.raises(TinyLMError, match="'z'"):
        tok.encode("z")
