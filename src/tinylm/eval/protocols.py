"""How a text becomes scored windows. Three named protocols, each a rule for cutting token lists into
model inputs and saying which positions of each input count:

  windows    the documents, framed as `tinylm prepare` frames them ([bos] + tokens + [eos]), are one
             stream cut into non-overlapping windows of the context length. Each window is one model
             input and scores its own next-token predictions (labels = inputs, as Hugging Face does), so
             the first token of every window is context only and never scored.
  sliding    the same stream, with windows starting every `stride` tokens; a window scores only the
             tokens no earlier window scored, each with up to context - 1 tokens before it. stride ==
             context is exactly `windows`; a smaller stride gives every scored token more context.
  documents  each document on its own, never crossing a boundary: [bos] + tokens (the eos id stands in
             for a tokenizer without bos, as the stream puts the previous document's eos there), cut as
             `sliding` with `stride`. The end-of-document token is not scored, so every scored token is
             text: the protocol to compare models with different tokenizers.

Bits per byte count, for each window, the UTF-8 bytes of the text its scored tokens add: the decoded
text of the scored run together with the token before it, minus the decoded text of that one token
(that token keeps a SentencePiece word's leading space in the count). Special tokens add no bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tinylm.errors import TinyLMError

PROTOCOLS = ("windows", "sliding", "documents")


@dataclass(frozen=True)
class Protocol:
    name: str = "windows"
    context: int | None = None  # window length in tokens; None: each model's context length
    stride: int | None = None  # sliding/documents: tokens between window starts; None: the context

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise TinyLMError(f"unknown protocol {self.name!r}; choose one of: {', '.join(PROTOCOLS)}")
        if self.context is not None and self.context < 2:
            raise TinyLMError(f"--context {self.context}: a window needs at least 2 tokens")
        if self.stride is not None and self.stride < 1:
            raise TinyLMError(f"--stride {self.stride}: must be at least 1")
        if self.name == "windows" and self.stride is not None:
            raise TinyLMError("the windows protocol has no stride; use --protocol sliding --stride N")

    def window_length(self, model_context: int) -> int:
        if self.context is not None and self.context > model_context:
            raise TinyLMError(
                f"--context {self.context} is longer than the model's context ({model_context}); use a shorter one"
            )
        return self.context or model_context

    def step(self, length: int) -> int:
        stride = self.stride or length
        if stride > length:
            raise TinyLMError(f"--stride {stride} is longer than the window ({length}); use at most {length}")
        return stride

    def describe(self, length: int | None = None) -> str:
        ctx = str(length or self.context or "model context")
        if self.name == "windows":
            return f"windows: non-overlapping windows of {ctx} tokens over the document stream"
        return f"{self.name}: windows of {ctx} tokens every {self.stride or ctx} tokens" + (
            ", each document on its own" if self.name == "documents" else " over the document stream"
        )


@dataclass(frozen=True)
class Window:
    start: int  # first input token, an index into the token list
    end: int  # one past the last input token
    first: int  # first scored target (targets first..end-1 are predicted from positions first-1..end-2)


def cut(n: int, length: int, stride: int) -> Iterator[Window]:
    """Windows over a list of `n` tokens: inputs [start, start + length) every `stride` tokens, each
    scoring the targets no earlier window scored (token 0 has no context and is never scored)."""
    scored_to, start = 1, 0
    while scored_to < n:
        end = min(start + length, n)
        first = max(scored_to, start + 1)
        if first < end:
            yield Window(start, end, first)
        scored_to = end
        start += stride
