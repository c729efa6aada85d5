"""Streamed text never splits a character, never shows the start of a stop string, and adds up to
the whole completion."""

from __future__ import annotations

from pathlib import Path

from tinylm.generate.stream import TextStream
from tinylm.tokenizer import CharTokenizer, Llama2cTokenizer, Tokenizer, train_tokenizer

TEXT = "Zoë ate 🍰 and 🍩 at the café — très bien! 中文 ok."


class ByteTokenizer(Tokenizer):
    """One token per byte: the hardest case, every multi-byte character spans several tokens."""

    kind = "test-bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def _save_files(self, directory):  # pragma: no cover - never saved
        return {}

    @classmethod
    def _load_files(cls, directory, meta):  # pragma: no cover
        return cls()


def pieces(stream: TextStream, ids: list[int]) -> list[str]:
    out = [stream.push(i) for i in ids]
    return [*out, stream.finish()]


def test_pieces_are_whole_characters_and_add_up() -> None:
    tok = ByteTokenizer()
    got = pieces(TextStream(tok), tok.encode(TEXT))
    assert "".join(got) == TEXT
    assert not any("\ufffd" in p for p in got)
    # the 4 bytes of the cake: nothing, nothing, nothing, then the whole character
    start = len("Zoë ate ".encode())
    assert got[start : start + 4] == ["", "", "", "🍰"]


def test_byte_level_bpe_stream_equals_decode() -> None:
    bpe = train_tokenizer("bpe", [TEXT, "plain ascii words here"], vocab_size=300)
    ids = bpe.encode(TEXT)
    assert "".join(pieces(TextStream(bpe), ids)) == bpe.decode(ids) == TEXT


def test_unfinished_character_at_the_end_comes_out_as_replacement() -> None:
    tok = ByteTokenizer()
    ids = tok.encode("ok 🍰")[:-2]
    s = TextStream(tok)
    assert "".join(s.push(i) for i in ids) == "ok "  # held back while it might still complete
    assert s.finish() == "\ufffd" and s.text == tok.decode(ids) == "ok \ufffd"


def test_stop_string_cuts_exactly_and_is_never_shown() -> None:
    tok = CharTokenizer(sorted(set("abc STOPxyz.")))
    s = TextStream(tok, stop=["STOP"])
    out = []
    for ch in "abc STOxyz STOP and more":
        out.append(s.push(tok.encode(ch)[0]) if ch in tok.stoi else "")
        assert "STO" not in "".join(out) or "STOx" in "".join(out)
        if s.stopped:
            break
    out.append(s.finish())
    assert "".join(out) == "abc STOxyz " == s.text
    assert s.stopped


def test_stop_strings_across_several_and_first_wins() -> None:
    tok = CharTokenizer(sorted(set("hello world.")))
    s = TextStream(tok, stop=["world", "lo w", "."])
    text = "".join(pieces(s, tok.encode("hello world.")))
    assert text == "hel" and s.stopped


def test_prompt_context_keeps_the_joining_space(shared_data: Path) -> None:
    """SentencePiece-style pieces carry their leading space; decoded alone the first one loses it."""
    tok = Llama2cTokenizer.from_file(shared_data / "llama2_tokenizer" / "tokenizer.bin")
    prompt = [tok.bos_id, *tok.encode("Once upon a")]
    gen = tok.encode("Once upon a time there was")[len(prompt) - 1 :]
    got = "".join(pieces(TextStream(tok, prompt), gen))
    assert got == " time there was"
    assert tok.decode(prompt) + got == "Once upon a time there was"
