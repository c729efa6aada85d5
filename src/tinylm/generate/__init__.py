"""Text generation: a torch engine with a static KV cache, shared NumPy sampling, streaming, and a
scheduler that batches many generations continuously (each owns a row of the cache).

    from tinylm.generate import Generator, generate
    gen = Generator.load("runs/stories15M")                 # or engine="numpy"
    print(gen.generate("Once upon a time", 50, temperature=0).text)
    for piece in gen.stream("Once upon a time", 50, seed=1):
        print(piece, end="", flush=True)

Importing this package does not import torch (the NumPy runtime relies on that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinylm.generate.generator import ENGINES, Completion, Generation, Generator, Prompt
from tinylm.generate.loop import Engine, Timing, generate_ids
from tinylm.generate.sampling import Sampler, SamplingParams
from tinylm.generate.scheduler import Event, QueueFull, Request, Scheduler
from tinylm.generate.stream import TextStream


def generate(model: str | Path | Any, prompt: Prompt, max_new_tokens: int | None = None, *,
             engine: str = "torch", tokenizer: Any = None, **options: Any) -> str:  # fmt: skip
    """The completion text of `prompt` from a checkpoint directory or an in-memory Model (greedy
    with temperature=0; sampling options as `Generator.start`). Loads the model on every call:
    keep a `Generator` to generate many times."""
    if isinstance(model, str | Path):
        gen = Generator.load(model, engine=engine)
    else:
        gen = Generator.from_model(model, tokenizer)
    completion = gen.generate(prompt, max_new_tokens, **options)
    return completion.text if completion.text is not None else " ".join(map(str, completion.ids))  # type: ignore[union-attr]


__all__ = [
    "ENGINES",
    "Completion",
    "Engine",
    "Event",
    "Generation",
    "Generator",
    "QueueFull",
    "Request",
    "Sampler",
    "SamplingParams",
    "Scheduler",
    "TextStream",
    "Timing",
    "generate",
    "generate_ids",
]
