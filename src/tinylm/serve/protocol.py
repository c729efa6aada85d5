"""The OpenAI API's shapes: request bodies (validated strictly) and the JSON that goes back.

Requests are parsed with pydantic in strict mode, so a field of the wrong type ("temperature": "hot",
"max_tokens": "10") is a 400 rather than a silent coercion. Unknown fields are ignored, as clients
send many optional ones; fields we recognise but cannot honour are a 400 naming them, never ignored.
Responses are plain dicts built here, so every route answers in the same shape.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# top_logprobs beyond this are refused (as OpenAI does); each costs a sort per token
MAX_TOP_LOGPROBS = 20


class APIError(Exception):
    """An error answered as OpenAI's error JSON with `status`."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """What the two generation routes share."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # tinylm's own sampling knobs, under the names vLLM and llama.cpp's server accept
    top_k: int | None = Field(None, ge=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _supported(self) -> SamplingRequest:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported by this server; use repetition_penalty (> 1 "
                                 "discourages repeats) or leave it at 0")  # fmt: skip
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by this server; leave it out")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop takes at most 4 strings")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop or [] if s]

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _completion_supported(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("echo is not supported by this server; leave it out")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported by this server; leave it out")
        if self.best_of not in (None, self.n):
            raise ValueError("best_of is not supported by this server; use n")
        if self.prompt == [] or self.prompt == [[]]:
            raise ValueError("prompt is empty; give text or token ids")
        return self

    @property
    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts (one string or id list each)."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _chat_supported(self) -> ChatRequest:
        if self.tools:
            raise ValueError("tools are not supported by this server; leave them out")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def turns(self) -> list[dict[str, str]]:
        """The conversation as {"role", "content"} dicts ("developer" is the newer name of "system")."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in self.messages]


def parse(model: type[BaseModel], body: bytes) -> Any:
    """A request model from a JSON body; a malformed body or a bad field is a 400 naming it."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        if err["type"] == "json_invalid":
            raise APIError(400, f"the request body is not valid JSON: {err['msg']}") from None
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_branch(p))
        msg = err["msg"].removeprefix("Value error, ")
        raise APIError(400, f"{loc}: {msg}" if loc else msg, param=loc or None) from None


def _is_union_branch(part: Any) -> bool:
    """pydantic names the union member it tried in the error location ('str', 'list[int]'); drop it."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)


# ---- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def envelope(id: str, object: str, model: str, created: int, choices: list[dict[str, Any]],
             usage: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    out = {"id": id, "object": object, "created": created, "model": model, "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


def model_card(name: str, context_length: int, created: int) -> dict[str, Any]:
    # context_length is ours (OpenAI's card has none); clients such as `tinylm chat --url` read it
    return {"id": name, "object": "model", "created": created, "owned_by": "tinylm", "context_length": context_length}


def now() -> int:
    return int(time.time())
