"""The model behind the server: a loaded `Generator` and the scheduler that batches every request.

The scheduler steps in its own thread and hands each request's events to a blocking iterator;
`Job.events` turns those into an asyncio stream for the routes, with one small thread per request
doing the blocking reads (a few dozen requests at most, so threads are cheap and simple here).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.generate import Generator, SamplingParams
from tinylm.generate.scheduler import Event, QueueFull, Request, Scheduler
from tinylm.serve.protocol import APIError


class Job:
    """The requests of one API call: `n` choices per prompt, choice i of the call is request i."""

    def __init__(self, requests: list[Request], prompt_tokens: int):
        self.requests, self.prompt_tokens = requests, prompt_tokens
        self.finished: set[int] = set()

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """(choice index, event) as the scheduler produces them, until every choice has ended."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        for i, req in enumerate(self.requests):
            threading.Thread(target=_pump, args=(req, i, loop, queue), daemon=True).start()
        while len(self.finished) < len(self.requests):
            i, ev = await queue.get()
            if isinstance(ev, BaseException):
                self.cancel()
                raise APIError(500, f"generation failed: {ev}", type="server_error")
            if ev.finish_reason is not None:
                self.finished.add(i)
            yield i, ev

    def cancel(self) -> None:
        """Free the rows of every choice still running (the client has gone or the call failed)."""
        for i, req in enumerate(self.requests):
            if i not in self.finished:
                req.cancel()


def _pump(req: Request, index: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    try:
        for ev in req:
            loop.call_soon_threadsafe(queue.put_nowait, (index, ev))
    except RuntimeError:  # the event loop has closed (server shutting down): nobody is listening
        req.cancel()
    except Exception as e:  # reported to the client as a 500 instead of a stream that never ends
        loop.call_soon_threadsafe(queue.put_nowait, (index, e))


class Backend:
    """A named model and the scheduler every request of the server goes through."""

    def __init__(self, gen: Generator, name: str, max_batch: int = 16, max_queue: int = 256):
        self.gen, self.name = gen, name
        self.tokenizer = gen.tokenizer
        self.context_length = gen.config.context_length
        # a scheduler of our own, with the server's limits; the Generator's is never stepped here, so
        # the two never hand out the same engine rows
        self.scheduler = Scheduler(gen.engine, gen.tokenizer, max_batch=max_batch, max_queue=max_queue)

    @classmethod
    def load(cls, checkpoint: str | Path, *, name: str | None = None, engine: str = "torch",
             device: str = "cpu", max_batch: int = 16, max_queue: int = 256) -> Backend:  # fmt: skip
        """Any checkpoint `Generator.load` reads (float, quantized, with an adapter), named after its
        directory unless `name` is given."""
        gen = Generator.load(checkpoint, engine=engine, device=device)
        if gen.tokenizer is None:
            raise TinyLMError(f"{checkpoint} has no tokenizer, so it cannot serve text; "
                              "save the checkpoint with its tokenizer/")  # fmt: skip
        return cls(gen, name or Path(checkpoint).resolve().name, max_batch, max_queue)

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.close()

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.name:
            raise APIError(404, f"model {model!r} does not exist; this server serves {self.name!r}",
                           param="model", code="model_not_found")  # fmt: skip

    def encode(self, prompt: str | list[int]) -> list[int]:
        try:
            return self.gen.encode(prompt)
        except TinyLMError as e:
            raise APIError(400, str(e), param="prompt") from None

    def budget(self, prompt_ids: Sequence[int], max_tokens: int | None, default: int | None) -> int:
        """New tokens for a prompt: `max_tokens` if the context holds them, else a 400; without it,
        `default` or what the context has left."""
        ctx, n = self.context_length, len(prompt_ids)
        if n >= ctx:
            raise APIError(400, f"the prompt is {n} tokens but the context holds {ctx}; shorten it",
                           param="messages" if default is None else "prompt", code="context_length_exceeded")  # fmt: skip
        if max_tokens is None:
            return ctx - n if default is None else min(default, ctx - n)
        if n + max_tokens > ctx:
            raise APIError(400, f"the prompt ({n} tokens) + max_tokens ({max_tokens}) exceed the context of "
                                f"{ctx}; ask for at most {ctx - n}", param="max_tokens",
                           code="context_length_exceeded")  # fmt: skip
        return max_tokens

    def submit(self, prompts: list[list[int]], budgets: list[int], req: Any, stop: list[str],
               logprobs: int | None) -> Job:  # fmt: skip
        """Queue `req.n` choices of every prompt; a full queue is a 503 and nothing stays queued.
        Choice j draws from the j-th random stream of the seed, as row j of a seeded `tinylm sample`
        batch does, so a seeded request repeats and its choices differ. Blocks for up to one
        scheduler step (the scheduler's lock): call it off the event loop."""
        requests: list[Request] = []
        try:
            params = SamplingParams(req.temperature, req.top_k, req.top_p, req.min_p, req.repetition_penalty, req.seed)
            for ids, budget in zip(prompts, budgets, strict=True):
                requests += [self.scheduler.submit(ids, budget, params, stop=stop, logprobs=logprobs, stream_row=j)
                             for j in range(req.n)]  # fmt: skip
        except (QueueFull, TinyLMError) as e:
            for r in requests:
                r.cancel()
            if isinstance(e, QueueFull):
                raise APIError(503, f"the server is busy ({e}); retry shortly", type="server_error",
                               code="queue_full") from None  # fmt: skip
            raise APIError(400, str(e)) from None
        return Job(requests, sum(map(len, prompts)))

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

