"""A few sampled continuations after training, through the generation engine."""

from __future__ import annotations

from collections.abc import Sequence

from tinylm.model import Model
from tinylm.tokenizer import Tokenizer


def sample_texts(model: Model, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int = 100,
                 temperature: float = 0.8, top_k: int | None = 40, seed: int = 0) -> list[str]:  # fmt: skip
    from tinylm.generate import Generator

    n = min(max_new_tokens, model.config.context_length - 1 - max(len(tokenizer.encode(p)) for p in prompts) - 1)
    gen = Generator.from_model(model.eval(), tokenizer)
    done = gen.generate(list(prompts), n, temperature=temperature, top_k=top_k, seed=seed)
    return [p + (c.text or "") for p, c in zip(prompts, done, strict=True)]  # type: ignore[union-attr]


def print_samples(model: Model, tokenizer: Tokenizer | None, prompts: Sequence[str], **options) -> None:
    if tokenizer is None:
        return
    for i, text in enumerate(sample_texts(model, tokenizer, prompts, **options), 1):
        print(f"--- sample {i} ---\n{text.strip()}")
