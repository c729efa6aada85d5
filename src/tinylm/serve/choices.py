"""Scheduler events as OpenAI choices: the text-completion shape and the chat shape.

Both routes run the same loop over a job's events (`tinylm.serve.app`); a format only says how one
choice looks whole (non-streaming) or as a streamed delta, and how its log-probabilities are laid out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinylm.generate.scheduler import Event


@dataclass
class Choice:
    """One choice as its events arrive: the text, the token events, where each token's text starts."""

    text: str = ""
    tokens: list[Event] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, ev: Event) -> None:
        if ev.token is not None:
            self.tokens.append(ev)
            self.offsets.append(len(self.text))
        self.text += ev.text
        self.finish_reason = ev.finish_reason or self.finish_reason


class TextFormat:
    """/v1/completions: choices carry `text`; logprobs as parallel lists (the legacy layout)."""

    object, chunk_object, id_prefix = "text_completion", "text_completion", "cmpl"

    def __init__(self, token_text: Callable[[int], str], logprobs: bool):
        self.token_text, self.logprobs = token_text, logprobs

    def start(self, index: int) -> dict[str, Any] | None:
        return None  # text completions have no opening chunk

    def delta(self, index: int, text: str, tokens: list[Event], offsets: list[int],
              finish: str | None) -> dict[str, Any]:  # fmt: skip
        return {"index": index, "text": text, "logprobs": self._logprobs(tokens, offsets), "finish_reason": finish}

    def whole(self, index: int, c: Choice) -> dict[str, Any]:
        return self.delta(index, c.text, c.tokens, c.offsets, c.finish_reason)

    def _logprobs(self, tokens: list[Event], offsets: list[int]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        top = [{self.token_text(t): lp for t, lp in ev.top_logprobs or []} for ev in tokens]
        return {"tokens": [self.token_text(ev.token) for ev in tokens],
                "token_logprobs": [ev.logprob for ev in tokens], "top_logprobs": top, "text_offset": offsets}  # fmt: skip


class ChatFormat:
    """/v1/chat/completions: a `message` whole, `delta`s streamed (the first one names the role)."""

    object, chunk_object, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def __init__(self, token_text: Callable[[int], str], logprobs: bool):
        self.token_text, self.logprobs = token_text, logprobs

    def start(self, index: int) -> dict[str, Any] | None:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def delta(self, index: int, text: str, tokens: list[Event], offsets: list[int],
              finish: str | None) -> dict[str, Any]:  # fmt: skip
        delta = {"content": text} if text or tokens else {}
        return {"index": index, "delta": delta, "logprobs": self._logprobs(tokens), "finish_reason": finish}

    def whole(self, index: int, c: Choice) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": c.text},
                "logprobs": self._logprobs(c.tokens), "finish_reason": c.finish_reason}  # fmt: skip

    def _logprobs(self, tokens: list[Event]) -> dict[str, Any] | None:
        if not self.logprobs or not tokens:
            return None
        return {"content": [{**self._entry(ev.token, ev.logprob),
                             "top_logprobs": [self._entry(t, lp) for t, lp in ev.top_logprobs or []]}
                            for ev in tokens]}  # fmt: skip

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        text = self.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


Format = TextFormat | ChatFormat
