"""The HTTP server: OpenAI's routes over one `Backend`, the chat page at `/`, errors as OpenAI's JSON.

    app = create_app(Backend.load("runs/stories15M"), api_key="secret")
    uvicorn.run(app, host="127.0.0.1", port=8000)

Streaming is server-sent events exactly as OpenAI sends them: one `data: {json}` per chunk with the
same id, a `finish_reason` on each choice's last chunk, an optional usage chunk with no choices,
then `data: [DONE]`. A client that goes away cancels its requests, which frees their batch rows.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tinylm.errors import TinyLMError
from tinylm.serve.backend import Backend, Job
from tinylm.serve.chat_template import CHAT_STOP, render_chat
from tinylm.serve.choices import ChatFormat, Choice, Format, TextFormat
from tinylm.serve.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    envelope,
    model_card,
    new_id,
    now,
    parse,
    usage,
)

MAX_BODY = 1 << 20  # bytes; a request body is JSON text, so a megabyte is a very long conversation
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions (chat: fill the context)
OPEN_PATHS = ("/health", "/")  # without the API key: the health probe, and the page (static, no data)


def create_app(backend: Backend, api_key: str | None = None, max_body: int = MAX_BODY) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend.start()
        try:
            yield
        finally:
            backend.close()

    app = FastAPI(title="tinylm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    page = files("tinylm.serve").joinpath("static/index.html").read_text()

    if api_key:
        app.add_middleware(_Authenticate, api_key=api_key)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(backend.name, backend.context_length, now())]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req = parse(CompletionRequest, await _read_body(request, max_body))
        backend.check_model(req.model)
        prompts = [backend.encode(p) for p in req.prompts]
        budgets = [backend.budget(p, req.max_tokens, COMPLETION_DEFAULT_TOKENS) for p in prompts]
        job = await run_in_threadpool(backend.submit, prompts, budgets, req, req.stops, req.logprobs)
        fmt = TextFormat(backend.token_text, req.logprobs is not None)
        return await _respond(request, job, fmt, backend.name, req.stream, req.include_usage)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = parse(ChatRequest, await _read_body(request, max_body))
        backend.check_model(req.model)
        try:
            prompt = render_chat(req.turns, backend.tokenizer)
        except TinyLMError as e:
            raise APIError(400, str(e), param="messages") from None
        budget = backend.budget(prompt, req.max_completion_tokens or req.max_tokens, None)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        job = await run_in_threadpool(backend.submit, [prompt], [budget], req, [*req.stops, *CHAT_STOP], logprobs)
        fmt = ChatFormat(backend.token_text, req.logprobs)
        return await _respond(request, job, fmt, backend.name, req.stream, req.include_usage)

    return app


async def _respond(request: Request, job: Job, fmt: Format, model: str, stream: bool, include_usage: bool) -> Response:
    id, created = new_id(fmt.id_prefix), now()
    if stream:
        chunks = _stream(job, fmt, partial(envelope, id, fmt.chunk_object, model, created), include_usage)
        return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    choices = [Choice() for _ in job.requests]
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        async for i, ev in job.events():
            choices[i].add(ev)
    finally:
        watcher.cancel()
        job.cancel()
    tokens = sum(len(c.tokens) for c in choices)
    body = envelope(id, fmt.object, model, created, [fmt.whole(i, c) for i, c in enumerate(choices)],
                    usage=usage(job.prompt_tokens, tokens))  # fmt: skip
    return JSONResponse(body)


async def _stream(job: Job, fmt: Format, chunk: Callable[..., dict], include_usage: bool) -> AsyncIterator[str]:
    """The SSE lines of a streamed job. Cancelled by Starlette when the client disconnects: the
    `finally` then frees the job's rows."""
    extra = {"usage": None} if include_usage else {}  # OpenAI marks every chunk when usage will follow
    try:
        for i in range(len(job.requests)):
            if (first := fmt.start(i)) is not None:
                yield _sse(chunk([first], **extra))
        choices = [Choice() for _ in job.requests]
        async for i, ev in job.events():
            c, n = choices[i], len(choices[i].tokens)
            c.add(ev)
            if ev.text or (ev.token is not None and fmt.logprobs):
                yield _sse(chunk([fmt.delta(i, ev.text, c.tokens[n:], c.offsets[n:], None)], **extra))
            if ev.finish_reason is not None:
                yield _sse(chunk([fmt.delta(i, "", [], [], ev.finish_reason)], **extra))
        if include_usage:
            yield _sse(chunk([], usage=usage(job.prompt_tokens, sum(len(c.tokens) for c in choices))))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()


class _Authenticate:
    """Every route but OPEN_PATHS answers 401 without `Authorization: Bearer <key>`. Plain ASGI rather
    than `@app.middleware`, which would buffer streamed responses and hide client disconnects."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                e = APIError(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>'",
                             code="invalid_api_key")  # fmt: skip
                await JSONResponse(e.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    """Cancel a non-streamed job whose client has gone (a streamed one is cancelled by Starlette)."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.2)
    job.cancel()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 once it passes `limit` bytes (announced or actually sent)."""
    too_large = APIError(413, f"the request body is larger than {limit} bytes; send a shorter prompt",
                         code="request_too_large")  # fmt: skip
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _api_error(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, APIError)
    return JSONResponse(e.body(), status_code=e.status)


def _http_error(request: Request, e: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) in OpenAI's shape."""
    assert isinstance(e, HTTPException)
    return _api_error(request, APIError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                                        code=str(e.status_code)))  # fmt: skip
