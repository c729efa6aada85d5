"""Every tokenizer kind: exact round trips on tricky text, specials, save/load through the registry."""

from __future__ import annotations

import pytest

from tinylm.errors import TinyLMError
from tinylm.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Llama2cTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

TRICKY = [
    "",
    "plain words",
    "line one\r\nline two\r\n",
    "\ttabs\tand\t\ttabs",
    "runs    of     spaces   ",
    "  leading and trailing  ",
    "nul\x00byte",
    "中文字符和日本語のテキスト",
    "emoji 😀👍🏽 and ZWJ 👩‍👩‍👧",
    "a literal <|endoftext|> and <s> and <0x41> in text",
    "\n\n\nnewlines only\n",
    "digits 1234567890 3.14159",
]
CORPUS = [
    "Once upon a time there was a little cat. The cat liked to play in the sun.\n"
    "One day, the cat met a dog. 'Hello,' said the dog. They became friends.\n" * 3,
    "Tom and Sue went to the park with 12 red balls.\tThey played all day.\r\n" * 3,
]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_tokenizer("bpe", CORPUS, vocab_size=300)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def spm() -> SentencePieceTokenizer:
    return train_tokenizer("sentencepiece", CORPUS * 20, vocab_size=400)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def llama_sp(shared_data) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.from_file(shared_data / "llama2_tokenizer" / "tokenizer.model")


@pytest.fixture(scope="module")
def llama_bin(shared_data) -> Llama2cTokenizer:
    return Llama2cTokenizer.from_file(shared_data / "llama2_tokenizer" / "tokenizer.bin")


@pytest.mark.parametrize("name", ["bpe", "spm", "llama_sp", "llama_bin"])
def test_lossless_round_trip(name, request):
    tok = request.getfixturevalue(name)
    assert tok.lossless
    for text in TRICKY:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text, (name, text)


def test_char_round_trip_on_its_alphabet():
    tok = CharTokenizer.train(TRICKY)
    for text in TRICKY:
        assert tok.decode(tok.encode(text)) == text


def test_bpe_specials_and_framing(bpe):
    assert bpe.eos_id is not None and bpe.bos_id is None
    # Text never yields the separator: only encode_document adds it.
    assert bpe.eos_id not in bpe.encode("a <|endoftext|> b")
    doc = bpe.encode_document("hello", bos=True, eos=True)
    assert doc[-1] == bpe.eos_id and doc[:-1] == bpe.encode("hello")
    with_bos = train_tokenizer("bpe", CORPUS, vocab_size=300, bos=True)
    framed = with_bos.encode_document("hi")
    assert framed[0] == with_bos.bos_id and framed[-1] == with_bos.eos_id
    assert with_bos.decode(framed) == "hi"
    # Separators decode to nothing, so a stream of documents reads as their concatenation.
    assert bpe.decode(bpe.encode_document("a") + bpe.encode_document("b")) == "ab"


def test_sentencepiece_llama_ids(spm, llama_sp):
    for tok in (spm, llama_sp):
        assert (tok.bos_id, tok.eos_id) == (1, 2)
        doc = tok.encode_document("Hello world")
        assert doc[0] == 1 and doc[-1] == 2 and tok.decode(doc) == "Hello world"
    assert llama_sp.vocab_size == 32000


def test_llama2c_decode_strips_space_after_bos(llama_bin):
    ids = llama_bin.encode("Hello world")
    assert llama_bin.vocab.pieces[ids[0]] == b" Hello"
    assert llama_bin.decode([1, *ids, 2]) == "Hello world"
    assert llama_bin.decode([1, *ids, 2, 1, *ids]) == "Hello worldHello world"
    assert llama_bin.decode([13]) == "\n"  # <0x0A> byte piece


@pytest.mark.parametrize("name", ["bpe", "spm", "llama_sp", "llama_bin"])
def test_save_load_registry(name, request, tmp_path):
    tok = request.getfixturevalue(name)
    save_tokenizer(tok, tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert type(again) is type(tok)
    assert (again.vocab_size, again.bos_id, again.eos_id) == (tok.vocab_size, tok.bos_id, tok.eos_id)
    for text in TRICKY:
        assert again.encode(text) == tok.encode(text)


def test_load_from_foreign_files(shared_data, tmp_path, bpe):
    d = shared_data / "llama2_tokenizer"
    assert isinstance(load_tokenizer(d / "tokenizer.model"), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(d / "tokenizer.bin"), Llama2cTokenizer)
    assert isinstance(load_tokenizer(d), SentencePieceTokenizer)  # a directory without tinylm metadata
    save_tokenizer(bpe, tmp_path / "b")
    assert load_tokenizer(tmp_path / "b" / "tokenizer.json").encode("hi there") == bpe.encode("hi there")


def test_bpe_dir_loads_with_transformers(bpe, tmp_path):
    transformers = pytest.importorskip("transformers")
    save_tokenizer(bpe, tmp_path / "b")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "b"))
    text = "Once upon a time, 12 cats."
    assert hf.encode(text, add_special_tokens=False) == bpe.encode(text)
    assert hf.eos_token_id == bpe.eos_id


def test_train_errors():
    with pytest.raises(TinyLMError, match="vocab-size"):
        train_tokenizer("bpe", CORPUS, vocab_size=100)
    with pytest.raises(TinyLMError, match="trainable kinds"):
        train_tokenizer("llama2c", CORPUS)
    with pytest.raises(TinyLMError, match="empty corpus"):
        train_tokenizer("char", [])


@pytest.mark.parametrize("name", ["bpe", "spm", "llama_sp"])
def test_encode_batch_matches_encode(name, request):
    tok = request.getfixturevalue(name)
    assert tok.encode_batch(TRICKY) == [tok.encode(t) for t in TRICKY]
