"""Text from a growing list of generated token ids, given out piece by piece.

A token can end in the middle of a UTF-8 character, and a stop string can span tokens, so the text
of the newest token alone is not safe to print. Instead the whole completion is decoded again after
every token and only its stable prefix is given out: never a trailing U+FFFD (an unfinished
character), never the start of what may become a stop string. Decoding together with the last few
prompt tokens keeps the joining space that SentencePiece-style tokenizers attach to a word's start.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinylm.tokenizer.base import Tokenizer

CONTEXT_TOKENS = 4  # prompt tokens decoded along with the completion (enough to settle its first piece)


class TextStream:
    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = (), stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.context = list(prompt_ids[-CONTEXT_TOKENS:])
        self.context_text = tokenizer.decode(self.context).rstrip("\ufffd")
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""  # the completion so far, cut before a stop string once one appears
        self.stopped = False  # a stop string appeared
        self.sent = 0  # characters of `text` already given out

    def _decode(self) -> str:
        full = self.tokenizer.decode(self.context + self.ids)
        if full.startswith(self.context_text):
            return full[len(self.context_text) :]
        return self.tokenizer.decode(self.ids)

    def push(self, token: int) -> str:
        """Add one generated token; return the text that became stable ('' if none)."""
        self.ids.append(int(token))
        text = self._decode()
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self.finish()
        self.text = text
        stable = len(text.rstrip("\ufffd"))
        stable -= max((_overlap(text[:stable], s) for s in self.stop), default=0)
        if stable <= self.sent:
            return ""
        piece, self.sent = text[self.sent : stable], stable
        return piece

    def finish(self) -> str:
        """The rest of the text, once generation has ended."""
        piece, self.sent = self.text[self.sent :], len(self.text)
        return piece


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a proper start of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
