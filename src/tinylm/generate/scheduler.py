"""Continuous batching: many generations share one engine, each owning a row of its KV cache.

    sched = Scheduler(engine, tokenizer, max_batch=8)
    req = sched.submit(prompt_ids, 50, SamplingParams(temperature=0))
    sched.start()                      # or call sched.step() yourself until it returns False
    for event in req:                  # one Event per token, then a final one with finish_reason
        print(event.text, end="")

Every `step` is one batched decode over every active request (a token each), preceded by one
batched prefill of the requests that join now: queued ones get the lowest free rows, and a request
whose row has filled the context slides its window (its last context/2 tokens are prefilled again,
as nanoGPT recomputes over its last block). Requests leave between steps (finished or cancelled)
and free their rows. A request's tokens depend only on its own row, so interleaved generations give
what each gives alone. Nothing here imports torch: the engine is the torch engine or the NumPy
runtime, through the protocol in `tinylm.generate.loop`.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.generate.loop import Engine, Timing
from tinylm.generate.sampling import Sampler, SamplingParams, top_ids
from tinylm.generate.stream import TextStream
from tinylm.tokenizer.base import Tokenizer


class QueueFull(TinyLMError):
    """More requests are waiting than the scheduler's `max_queue`; retry later."""


@dataclass
class Event:
    """One per generated token, plus a final one (token None) that carries finish_reason."""

    token: int | None
    text: str  # new text (UTF-8-safe; stop strings never leak)
    logprob: float | None  # log-prob of `token` (see Sampler.logprobs), when logprobs were asked for
    top_logprobs: list[tuple[int, float]] | None  # the `logprobs` most likely (token, log-prob), when asked
    finish_reason: str | None  # "stop" | "length" | "cancelled" on the final event, else None


def default_stop_ids(tokenizer: Tokenizer | None) -> list[int]:
    """EOS, and BOS where the tokenizer has one: data prepared with BOS before every document (as
    llama2.c's is) teaches the model to start a new document with it, and run.c stops there."""
    if tokenizer is None:
        return []
    return [i for i in dict.fromkeys((tokenizer.eos_id, tokenizer.bos_id)) if i is not None]


class Request:
    """One generation: a row of the KV cache while it runs. Iterate it for its Events (blocking,
    from any thread) while something steps the scheduler."""

    def __init__(self, id: str, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler, stream_row: int,
                 stop_ids: set[int], text: TextStream | None, logprobs: int | None):  # fmt: skip
        self.id, self.prompt_ids, self.max_new_tokens = id, prompt_ids, max_new_tokens
        self.ids: list[int] = []  # generated so far; a stop token that ended it is left out
        self.finish_reason: str | None = None
        self.sampler, self.stream_row, self.stop_ids = sampler, stream_row, stop_ids
        self.stream, self.logprobs = text, logprobs
        self.row: int | None = None  # the cache row, while it has one
        self.fed = 0  # tokens in its cache row: where the next one goes
        self.cancelled = False
        self._events: queue.Queue[Event] = queue.Queue()

    @property
    def text(self) -> str | None:
        """The completion text so far (cut before a stop string); None without a tokenizer."""
        return self.stream.text if self.stream is not None else None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """Stop generating: the request frees its row before the next step and ends with "cancelled"."""
        self.cancelled = True

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self._events.get()
            yield event
            if event.finish_reason is not None:
                return

    def events(self) -> list[Event]:
        """The events produced since the last call, without waiting."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out


class Scheduler:
    def __init__(self, engine: Engine, tokenizer: Tokenizer | None = None, max_batch: int = 16,
                 max_queue: int = 256):  # fmt: skip
        if max_batch < 1:
            raise TinyLMError(f"max batch must be at least 1, got {max_batch}")
        self.engine, self.tokenizer = engine, tokenizer
        self.config = engine.config
        self.max_batch, self.max_queue = max_batch, max_queue
        self.queue: deque[Request] = deque()
        self.active: dict[int, Request] = {}  # cache row -> request
        self.timing = Timing()
        self._ids = itertools.count()
        self._lock = threading.Condition()  # guards the queue, the rows and the engine
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, prompt_ids: Sequence[int], max_new_tokens: int, params: SamplingParams, *,
               stop: Sequence[str] = (), stop_ids: Sequence[int] | None = None, logprobs: int | None = None,
               stream_row: int = 0) -> Request:  # fmt: skip
        """Queue a generation of up to `max_new_tokens` tokens after `prompt_ids`. `stop_ids` defaults to
        EOS and BOS (see default_stop_ids); `logprobs` asks for that many top log-probs per token;
        `stream_row` picks the seed's random stream (row i of a seeded batch draws from stream i)."""
        prompt = [int(i) for i in prompt_ids]
        ctx, vocab = self.config.context_length, self.config.vocab_size
        if not prompt:
            raise TinyLMError("every prompt needs at least one token")
        if len(prompt) > ctx:
            raise TinyLMError(f"the prompt is {len(prompt)} tokens but the context holds {ctx}; shorten it")
        if not all(0 <= i < vocab for i in prompt):
            raise TinyLMError(f"token id {next(i for i in prompt if not 0 <= i < vocab)} is outside the "
                              f"vocabulary (0..{vocab - 1})")  # fmt: skip
        if max_new_tokens < 1:
            raise TinyLMError(f"max new tokens must be at least 1, got {max_new_tokens}")
        if stop and self.tokenizer is None:
            raise TinyLMError("stop strings need a tokenizer to decode the text; use stop token ids instead")
        if logprobs is not None and not 0 <= logprobs <= self.config.vocab_size:
            raise TinyLMError(f"logprobs must be between 0 and the vocabulary size, got {logprobs}")
        stops = set(default_stop_ids(self.tokenizer) if stop_ids is None else stop_ids)
        text = TextStream(self.tokenizer, prompt, stop) if self.tokenizer is not None else None
        sampler = Sampler(params, rows=stream_row + 1)
        with self._lock:
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"{len(self.queue)} requests are already waiting; retry later")
            req = Request(f"gen-{next(self._ids)}", prompt, max_new_tokens, sampler, stream_row, stops, text, logprobs)
            self.queue.append(req)
            self._lock.notify_all()
        return req

    def step(self) -> bool:
        """Admit waiting requests, then advance every active one by a token, in one batched prefill and
        one batched decode. Returns False when there was nothing to do."""
        with self._lock:
            self._drop_cancelled()
            if not self.active and not self.queue:
                return False
            decoding = [r for r in self.active.values() if r.fed < self.config.context_length]
            sliding = [r for r in self.active.values() if r.fed >= self.config.context_length]
            joining = []
            free = sorted(set(range(self.max_batch)) - set(self.active))
            while self.queue and free:
                req = self.queue.popleft()
                req.row = free.pop(0)
                self.active[req.row] = req
                joining.append(req)
            self._prefill(joining + sliding)
            self._decode(decoding)
            return True

    def _drop_cancelled(self) -> None:
        for req in [r for r in self.queue if r.cancelled]:
            self.queue.remove(req)
            self._finish(req, "cancelled")
        for req in [r for r in self.active.values() if r.cancelled]:
            self._finish(req, "cancelled")

    def _prefill(self, reqs: list[Request]) -> None:
        """Run prompts (or, for a row whose context is full, the last context/2 tokens) into the rows."""
        if not reqs:
            return
        start = time.perf_counter()
        half = self.config.context_length // 2
        windows = [r.prompt_ids if r.fed == 0 else (r.prompt_ids + r.ids)[-half:] for r in reqs]
        logits = self.engine.prefill([r.row for r in reqs], windows)
        self.timing.prefill_s += time.perf_counter() - start
        self.timing.prompt_tokens += sum(map(len, windows))
        for r, w, row in zip(reqs, windows, logits, strict=True):
            r.fed = len(w)
            self._advance(r, row)

    def _decode(self, reqs: list[Request]) -> None:
        """Feed each request its last token and take the next one."""
        if not reqs:
            return
        start = time.perf_counter()
        logits = self.engine.decode([r.row for r in reqs], np.array([r.ids[-1] for r in reqs], dtype=np.int64))
        for r, row in zip(reqs, logits, strict=True):
            r.fed += 1
            self._advance(r, row)
        self.timing.decode_s += time.perf_counter() - start
        self.timing.new_tokens += len(reqs)

    def _advance(self, req: Request, logits: np.ndarray) -> None:
        """Pick the request's next token from its logits (vocab,) and give out its event."""
        history = np.array(req.prompt_ids + req.ids) if req.sampler.params.repetition_penalty != 1 else ()
        token = req.sampler.sample(logits, req.stream_row, history)
        logprob, top = None, None
        if req.logprobs is not None:
            lp = req.sampler.logprobs(logits, history)
            logprob = float(lp[token])
            top = [(int(i), float(lp[i])) for i in top_ids(lp, req.logprobs)] if req.logprobs else []
        if token in req.stop_ids:
            self._finish(req, "stop")
            return
        req.ids.append(token)
        piece = req.stream.push(token) if req.stream is not None else ""
        req._events.put(Event(token, piece, logprob, top, None))
        if req.stream is not None and req.stream.stopped:
            self._finish(req, "stop")
        elif len(req.ids) >= req.max_new_tokens:
            self._finish(req, "length")

    def _finish(self, req: Request, reason: str) -> None:
        """End a request: free its row and give out the rest of its text with the reason."""
        if req.row is not None:
            del self.active[req.row]
            req.row = None
        req.finish_reason = reason
        rest = req.stream.finish() if req.stream is not None else ""
        req._events.put(Event(None, rest, None, None, reason))

    # ---- a background thread that steps while there is work (for servers)

    def start(self) -> None:
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="tinylm-scheduler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closing and not self.queue and not self.active:
                    self._lock.wait()
                if self._closing:
                    return
            self.step()

    def close(self) -> None:
        """Stop the background thread and end every unfinished request as "cancelled"."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for req in [*self.queue, *self.active.values()]:
                self._finish(req, "cancelled")
            self.queue.clear()
