"""How a conversation becomes a prompt: the one chat template, `tinylm.chat` (the same that fine-tuning
trains on and that HF/GGUF exports carry), open for the assistant's reply.

A reply ends at EOS, as the template ends every assistant turn; CHAT_STOP also ends one where a model
not tuned on the template starts the next turn itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinylm.chat import render
from tinylm.tokenizer.base import Tokenizer

CHAT_STOP = ("\nUser:", "\nSystem:")


def render_chat(messages: Sequence[dict[str, str]], tokenizer: Tokenizer) -> list[int]:
    """Token ids of the conversation up to the assistant's cue."""
    return render(tokenizer, messages, add_generation_prompt=True)
