"""How a conversation becomes a prompt, until the shared template (`tinylm.chat`) is on main.

Plain text turns ("System: …", "User: …", "Assistant: …", one per line) that any tokenizer can encode,
ending with "Assistant:" for the model to continue. A reply ends where the model starts the next
turn (CHAT_STOP) or at EOS. Everything that renders chat goes through `render_chat`, so switching to
the shared template is a change here only.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinylm.tokenizer.base import Tokenizer

ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
CHAT_STOP = ("\nUser:", "\nSystem:")


def render_chat(messages: Sequence[dict[str, str]], tokenizer: Tokenizer) -> list[int]:
    """Token ids of the conversation, from the document-start token (BOS, or EOS where the tokenizer
    has no BOS, as prompts elsewhere) up to the assistant's cue."""
    text = "".join(f"{ROLES[m['role']]}: {m['content']}\n" for m in messages) + "Assistant:"
    start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    ids = tokenizer.encode(text)
    return ids if start is None else [start, *ids]
