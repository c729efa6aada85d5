"""What `tinylm chat` talks to: a checkpoint in this process, or any OpenAI-compatible server.

Both stream a reply to a whole conversation and raise `ContextFull` when the conversation leaves no
room for one, so the terminal loop can drop the oldest turns and try again. The HTTP side is plain
`urllib` with its own server-sent-events parsing: no client library, no extra dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.serve.chat_template import CHAT_STOP, render_chat

Messages = Sequence[dict[str, str]]


class ContextFull(TinyLMError):
    """The conversation is too long for the model's context (with room for a reply)."""


class LocalChat:
    """A checkpoint loaded here (any checkpoint `Generator.load` reads)."""

    def __init__(self, gen: Any, name: str):
        if gen.tokenizer is None:
            raise TinyLMError("this checkpoint has no tokenizer, so it cannot chat; save it with its tokenizer/")
        self.gen, self.name = gen, name
        self.context_length: int | None = gen.config.context_length

    def stream(self, messages: Messages, max_tokens: int, temperature: float) -> Iterator[str]:
        ids = render_chat(messages, self.gen.tokenizer)
        room = self.context_length - len(ids)
        if room < min(max_tokens, self.context_length // 4):  # too little room left for a useful reply
            raise ContextFull(f"the conversation ({len(ids)} tokens) fills the context of {self.context_length}")
        yield from self.gen.stream(ids, min(max_tokens, room), temperature=temperature, stop=CHAT_STOP)


class RemoteChat:
    """An OpenAI-compatible server at `url` (with or without the trailing /v1)."""

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None, timeout: float = 600):
        self.base = url.rstrip("/").removesuffix("/v1") + "/v1"
        self.api_key, self.timeout = api_key, timeout
        cards = self._request("GET", "/models")["data"]
        if not cards:
            raise TinyLMError(f"{self.base}/models lists no model; is this the right server?")
        card = next((c for c in cards if c["id"] == model), None) if model else cards[0]
        if card is None:
            raise TinyLMError(f"the server has no model {model!r}; it has: {', '.join(c['id'] for c in cards)}")
        self.name: str = card["id"]
        self.context_length = card.get("context_length")  # tinylm's servers say; others may not

    def stream(self, messages: Messages, max_tokens: int, temperature: float) -> Iterator[str]:
        """The reply, cut after `max_tokens` pieces (servers send a piece per token). max_tokens is not
        sent: we cannot count the prompt's tokens here, and a server refuses a max_tokens past its
        context where it would rather just end the reply there."""
        body = {"model": self.name, "messages": list(messages), "temperature": temperature, "stream": True}
        pieces = 0
        with self._open("POST", "/chat/completions", body) as resp:  # leaving closes it: the server stops
            for data in _sse_data(resp):
                if data == "[DONE]" or pieces >= max_tokens:
                    return
                for choice in json.loads(data).get("choices") or []:
                    if piece := (choice.get("delta") or {}).get("content"):
                        pieces += 1
                        yield piece

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as resp:
            return json.load(resp)

    def _open(self, method: str, path: str, body: Any) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise _http_error(e, self.base + path) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TinyLMError(f"cannot reach {self.base}: {reason}; is the server running?") from None


def _http_error(e: urllib.error.HTTPError, url: str) -> TinyLMError:
    """An OpenAI-shaped error answer as one line; a context overflow as ContextFull."""
    try:
        err = json.load(e).get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    message = err.get("message") or e.reason
    if err.get("code") == "context_length_exceeded":
        return ContextFull(message)
    hint = "; pass --api-key or set TINYLM_API_KEY" if e.code == 401 else ""
    return TinyLMError(f"{url} answered {e.code}: {message}{hint}")


def _sse_data(lines: Any) -> Iterator[str]:
    """The `data:` payloads of a server-sent-events byte stream, one per event (multi-line data joined)."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)
