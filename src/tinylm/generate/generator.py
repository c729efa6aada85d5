"""Prompts in, completions out: tokenizing, context limits, stop tokens and strings, streaming.

`Generator` wraps an engine (the torch engine or the NumPy runtime) and the tokenizer, and is what
the CLI, the quickstart and a server call. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.generate.loop import Engine, Timing
from tinylm.generate.sampling import SamplingParams
from tinylm.generate.scheduler import Scheduler
from tinylm.tokenizer.base import Tokenizer

ENGINES = ("torch", "numpy")
# `--engine auto` (pick_engine): the NumPy runtime decodes small models on the CPU faster than the torch
# engine, whose per-token Python and dispatch cost does not shrink with the model. Measured (batch 1, decode;
# benchmarks/bench_engine_auto.py and the quiet-machine table of `benchmarks/bench_quantize.py`): fp32 NumPy
# was faster at every size up to stories110M (48.6 vs 38.7 tok/s quiet); packed q8_0/q4_0 weights NumPy at
# stories15M (383 vs 260) but torch at stories110M (37 vs 47). Larger models were not measured: torch.
NUMPY_MAX_PARAMS = 120_000_000  # float weights
NUMPY_MAX_PARAMS_QUANTIZED = 50_000_000
Prompt = str | Sequence[int]


@dataclass
class Completion:
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # generated ids; a stop token that ended it is left out
    text: str | None = None  # None without a tokenizer; cut before a stop string
    finish_reason: str = "length"  # "stop": a stop token or string; "length": max_new_tokens reached;
    # "cancelled": the generation was abandoned before it ended


class Generation:
    """A batch of prompts run on the generator's scheduler; iterate it for (row, token or None, new
    text) events, then read `completions` and `timing`. A token of None is the final text of a row,
    given when it ends. Its requests are submitted when iteration starts, so generations started at
    different times interleave on one scheduler (each steps it; every request advances)."""

    def __init__(self, gen: Generator, prompts: list[list[int]], max_new_tokens: int, params: SamplingParams,
                 stop: Sequence[str], stop_ids: Sequence[int] | None):  # fmt: skip
        self.gen, self.prompts, self.max_new_tokens = gen, prompts, max_new_tokens
        self.params, self.stop, self.stop_ids = params, stop, stop_ids
        self.completions = [Completion(prompt_ids=p) for p in prompts]
        self.timing = Timing()

    def __iter__(self) -> Iterator[tuple[int, int | None, str]]:
        sched = self.gen.scheduler
        reqs = [sched.submit(p, self.max_new_tokens, self.params, stop=self.stop, stop_ids=self.stop_ids,
                             stream_row=i) for i, p in enumerate(self.prompts)]  # fmt: skip
        for c, r in zip(self.completions, reqs, strict=True):
            c.ids = r.ids  # the same list: it grows as the request generates
        before = replace(sched.timing)
        running = set(range(len(reqs)))
        try:
            while running:
                sched.step()
                for i in sorted(running):
                    for event in reqs[i].events():
                        if event.finish_reason is not None:
                            c, r = self.completions[i], reqs[i]
                            c.text, c.finish_reason = r.text, r.finish_reason
                            running.discard(i)
                        if event.token is not None or event.text:
                            yield i, event.token, event.text
        finally:  # also when the consumer stops early: give the rows back
            for r in reqs:
                r.cancel()
            self.timing = sched.timing.since(before)


class Generator:
    """A loaded model ready to generate text: an engine plus its tokenizer (optional), and the scheduler
    that runs every generation on them (at most `max_batch` rows at once; more prompts wait their turn)."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer | None = None, max_batch: int = 16):
        self.engine = engine
        self.tokenizer = tokenizer
        self.config: ModelConfig = engine.config
        # no queue limit: a batch of prompts is submitted whole and waits for free rows
        self.scheduler = Scheduler(engine, tokenizer, max_batch=max_batch, max_queue=2**62)

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
        """Encoded prompts that fit the context, and how many new tokens to generate. A generation
        longer than the context slides its window (see tinylm.generate.scheduler), so only the prompt
        itself must fit; by default the completion fills the context up to its last position (the
        last new token is never fed back, so it needs no position)."""
        ctx, n = self.config.context_length, max_new_tokens
        if n is not None and n < 1:
            raise TinyLMError(f"max new tokens must be at least 1, got {n}")
        ids = [self.encode(p) for p in prompts]
        if not all(ids):
            raise TinyLMError("the prompt is empty and there is no BOS or EOS token to start from; "
                              "give some prompt text or token ids")  # fmt: skip
        for i, p in enumerate(ids):
            if len(p) <= ctx:
                continue
            if not truncate:
                raise TinyLMError(f"the prompt is {len(p)} tokens but the context holds {ctx}; "
                                  "shorten it or pass --truncate to keep its end")  # fmt: skip
            # keep the end of the prompt, which the continuation follows: all of it that leaves room
            # for the new tokens without sliding, but at least half the context
            ids[i] = p[-max(ctx - n + 1 if n else 0, ctx // 2) :]
        return ids, n or ctx - max(map(len, ids)) + 1

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
        `stop_ids` defaults to the tokenizer's EOS and BOS (see scheduler.default_stop_ids)."""
        single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], int | np.integer))
        batch: Sequence[Prompt] = [prompts] if single else prompts  # type: ignore[list-item]
        if len(batch) == 0:
            raise TinyLMError("no prompts given")
        params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, seed)
        ids, n = self._prompts(batch, max_new_tokens, truncate)
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


def pick_engine(checkpoint: str | Path, device: str = "cpu", compile: bool = False) -> str:
    """The engine "auto" means for this checkpoint (see `engine_for`)."""
    from tinylm.config import read_config

    if device != "cpu" or compile:
        return "torch"
    return engine_for(*read_config(checkpoint))


def engine_for(cfg: ModelConfig, transforms: dict[str, Any]) -> str:
    """For a CPU decode: the NumPy runtime up to NUMPY_MAX_PARAMS parameters (NUMPY_MAX_PARAMS_QUANTIZED with
    quantized weights), else torch; torch too for what NumPy does not run (adapters, w8a8)."""
    quantized = transforms.get("quantization", {}).get("kind")
    if set(transforms) - {"quantization"} or quantized == "w8a8":
        return "torch"
    limit = NUMPY_MAX_PARAMS_QUANTIZED if quantized else NUMPY_MAX_PARAMS
    return "numpy" if cfg.num_params() <= limit else "torch"
