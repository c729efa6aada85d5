"""Prompts in, completions out: tokenizing, context limits, stop tokens and strings, streaming.

`Generator` wraps an engine (the torch engine or the NumPy runtime) and the tokenizer, and is what
the CLI, the quickstart and a server call. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.generate.loop import Engine, Timing, generate_ids
from tinylm.generate.sampling import Sampler, SamplingParams
from tinylm.generate.stream import TextStream
from tinylm.tokenizer.base import Tokenizer

ENGINES = ("torch", "numpy")
Prompt = str | Sequence[int]


@dataclass
class Completion:
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # generated ids; a stop token that ended it is left out
    text: str | None = None  # None without a tokenizer; cut before a stop string
    finish_reason: str = "length"  # "stop": a stop token or string; "length": max_new_tokens reached


class Generation:
    """One batched generation; iterate it for (row, token or None, new text) events, then read
    `completions` and `timing`. A token of None is the final text of a row, given when it ends."""

    def __init__(self, gen: Generator, prompts: list[list[int]], max_new_tokens: int, params: SamplingParams,
                 stop: Sequence[str], stop_ids: Sequence[int]):  # fmt: skip
        self.gen, self.prompts, self.max_new_tokens = gen, prompts, max_new_tokens
        self.sampler = Sampler(params, rows=len(prompts))
        self.stop_ids = set(stop_ids)
        self.completions = [Completion(prompt_ids=p) for p in prompts]
        tok = gen.tokenizer
        self.streams = [TextStream(tok, p, stop) for p in prompts] if tok is not None else None
        self.timing = Timing()

    def __iter__(self) -> Iterator[tuple[int, int | None, str]]:
        done = np.zeros(len(self.prompts), dtype=bool)
        steps = generate_ids(self.gen.engine, self.prompts, self.max_new_tokens, self.sampler, self.stop_ids,
                             done=done, timing=self.timing)  # fmt: skip
        for tokens in steps:
            for row, token in enumerate(tokens.tolist()):
                if token < 0:
                    continue
                c = self.completions[row]
                if token in self.stop_ids:
                    c.finish_reason = "stop"
                    yield from self._finish(row)
                    continue
                c.ids.append(token)
                piece = ""
                if self.streams is not None:
                    s = self.streams[row]
                    piece = s.push(token)
                    if s.stopped:
                        done[row], c.finish_reason = True, "stop"
                yield row, token, piece
                if done[row]:
                    yield from self._finish(row)
        for row, c in enumerate(self.completions):
            if c.text is None and self.streams is not None:
                yield from self._finish(row)

    def _finish(self, row: int) -> Iterator[tuple[int, int | None, str]]:
        if self.streams is None:
            return
        s = self.streams[row]
        self.completions[row].text = s.text
        rest = s.finish()
        if rest:
            yield row, None, rest


class Generator:
    """A loaded model ready to generate text: an engine plus its tokenizer (optional)."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer | None = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.config: ModelConfig = engine.config

    @classmethod
    def load(cls, checkpoint: str | Path, engine: str = "torch", device: str = "cpu",
             compile: bool = False) -> Generator:  # fmt: skip
        """Load a checkpoint directory into the torch engine (on `device`) or the NumPy runtime."""
        if engine not in ENGINES:
            raise TinyLMError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
        if engine == "numpy":
            from tinylm.runtime import NumpyModel

            model = NumpyModel.from_checkpoint(checkpoint)
            return cls(model, model.tokenizer)
        from tinylm.checkpoint import load_checkpoint
        from tinylm.generate.engine import TorchEngine

        ckpt = load_checkpoint(checkpoint, device=device)
        return cls(TorchEngine(ckpt.model, compile=compile, transpose_weights=True), ckpt.tokenizer)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Tokenizer | None = None, compile: bool = False) -> Generator:
        """Wrap an in-memory `tinylm.model.Model` (e.g. right after training) in the torch engine."""
        from tinylm.generate.engine import TorchEngine

        return cls(TorchEngine(model, compile=compile), tokenizer)

    # ---- prompts

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: text is encoded after the document-start token (BOS, or the EOS that
        separates documents when the tokenizer has no BOS); id lists are taken as they are. An empty
        prompt is just the start token."""
        tok = self.tokenizer
        start = None if tok is None else tok.bos_id if tok.bos_id is not None else tok.eos_id
        if isinstance(prompt, str):
            if tok is None:
                raise TinyLMError("this checkpoint has no tokenizer, so text prompts cannot be encoded; "
                                  "pass token ids instead (--ids)")  # fmt: skip
            ids = tok.encode(prompt)
            return ids if start is None else [start, *ids]
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise TinyLMError(
                f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})"
            )
        return ids or ([] if start is None else [start])

    def _prompts(self, prompts: Sequence[Prompt], max_new_tokens: int | None,
                 truncate: bool) -> tuple[list[list[int]], int]:  # fmt: skip
        """Encoded prompts that fit the context with room for the new tokens, and how many those are."""
        ctx, n = self.config.context_length, max_new_tokens
        if n is not None and not 1 <= n < ctx:
            raise TinyLMError(
                f"max new tokens must be between 1 and {ctx - 1} (the context is {ctx}), got {n}"
            )
        ids = [self.encode(p) for p in prompts]
        if not all(ids):
            raise TinyLMError("the prompt is empty and there is no BOS or EOS token to start from; "
                              "give some prompt text or token ids")  # fmt: skip
        budget = ctx - (n or 1)  # the longest prompt that leaves room for the new tokens
        for i, p in enumerate(ids):
            if len(p) <= budget:
                continue
            if truncate:  # keep the end of the prompt: it is what the continuation follows
                ids[i] = p[-(ctx - n if n else ctx // 2) :]
            elif n is None or len(p) >= ctx:
                raise TinyLMError(f"the prompt is {len(p)} tokens but the context holds {ctx}; "
                                  "shorten it or pass --truncate to keep its end")  # fmt: skip
            else:
                raise TinyLMError(f"the prompt ({len(p)} tokens) + {n} new tokens exceed the context of {ctx}; "
                                  f"ask for at most {ctx - len(p)} new tokens, shorten the prompt "
                                  "or pass --truncate")  # fmt: skip
        return ids, n or ctx - max(map(len, ids))

    # ---- generation

    def start(
        self,
        prompts: Prompt | Sequence[Prompt],
        max_new_tokens: int | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        stop_ids: Sequence[int] | None = None,
        truncate: bool = False,
    ) -> Generation:
        """A batched generation, ready to iterate (see `Generation`). `prompts` is one prompt or a list
        of them; a prompt is text or a list of token ids. `max_new_tokens` None fills the context.
        `stop_ids` defaults to the tokenizer's EOS."""
        single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int | np.integer))
        batch: Sequence[Prompt] = [prompts] if single else prompts  # type: ignore[list-item]
        if len(batch) == 0:
            raise TinyLMError("no prompts given")
        params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, seed)
        ids, n = self._prompts(batch, max_new_tokens, truncate)
        if stop_ids is None:
            eos = self.tokenizer.eos_id if self.tokenizer is not None else None
            stop_ids = [eos] if eos is not None else []
        if stop and self.tokenizer is None:
            raise TinyLMError("stop strings need a tokenizer to decode the text; use stop token ids instead")
        return Generation(self, ids, n, params, stop, stop_ids)

    def generate(self, prompts: Prompt | Sequence[Prompt], max_new_tokens: int | None = None,
                 **options: Any) -> Completion | list[Completion]:  # fmt: skip
        """Completions of one prompt (a Completion) or of a list of prompts (a list, in order)."""
        run = self.start(prompts, max_new_tokens, **options)
        for _ in run:
            pass
        single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int | np.integer))
        return run.completions[0] if single else run.completions

    def stream(self, prompt: Prompt, max_new_tokens: int | None = None, **options: Any) -> Iterator[str]:
        """The completion of one prompt as text pieces, each ending on a whole character."""
        if self.tokenizer is None:
            raise TinyLMError("streaming text needs a tokenizer; this model has none")
        for _, _, piece in self.start(prompt, max_new_tokens, **options):
            if piece:
                yield piece
