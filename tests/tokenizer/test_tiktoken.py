"""GPT-2 through tiktoken: the wrapper's round trip and specials, and the offline error (no network in tests)."""

from __future__ import annotations

import pytest

from tinylm.errors import TinyLMError
from tinylm.tokenizer import pretrained_tokenizer
from tinylm.tokenizer.tiktoken_bpe import TiktokenTokenizer

tiktoken = pytest.importorskip("tiktoken")


def test_wrapper_round_trip_and_eos():
    # A byte-level encoding built in memory stands in for GPT-2's (whose files need a download).
    enc = tiktoken.Encoding(
        "bytes",
        pat_str=r"""'s|'t| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )
    tok = TiktokenTokenizer(enc)
    assert (tok.vocab_size, tok.eos_id, tok.bos_id) == (257, 256, None)
    for text in ["a <|endoftext|> b", "crlf\r\n\ttab  nul\x00 中文 😀"]:
        ids = tok.encode(text)
        assert 256 not in ids and tok.decode(ids) == text
    assert tok.encode_document("hi")[-1] == 256
    assert tok.decode(tok.encode_document("hi")) == "hi"


def test_offline_gpt2_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache

    def offline(url: str) -> bytes:
        raise OSError(f"network is unreachable: {url}")

    monkeypatch.setattr("tiktoken.load.read_file", offline)
    with pytest.raises(TinyLMError, match=r"gpt2.*not cached.*TIKTOKEN_CACHE_DIR"):
        pretrained_tokenizer("gpt2")
