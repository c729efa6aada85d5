"""The one chat template: conversations as the model sees them in training, generation and every export.

    <bos>System: {system}\\n\\nUser: {user}\\n\\nAssistant: {assistant}<eos>User: {user}\\n\\nAssistant:

A tokenizer family shows only in its special tokens: Llama's SentencePiece puts <s> first and ends each
assistant turn with </s>; GPT-2's byte-level BPE has no BOS and ends turns with <|endoftext|>. BOS is
written once, by the template, never again by the tokenizer (a doubled BOS is the classic bug). Every
message is stripped of surrounding whitespace (Jinja's `trim`), and the generation prompt ends right
after "Assistant:", so the model writes the space before its answer as it did in training.

The same constants render token ids here and the Jinja text that Hugging Face (`chat_template` in
tokenizer_config.json) and llama.cpp (`tokenizer.chat_template` in GGUF) render; a test checks that
transformers' `apply_chat_template` on our export gives the ids `render` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tinylm.errors import TinyLMError
from tinylm.formats.vocab import document_start
from tinylm.tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")
TURN = {"system": "System: {}\n\n", "user": "User: {}\n\n", "assistant": "Assistant: {}"}  # assistant: then EOS
GENERATION_PROMPT = "Assistant:"
Message = dict[str, Any]
Piece = str | int  # text, or the id of a special token


def check_messages(messages: Any, where: str = "conversation") -> list[Message]:
    """The messages if they are a well-formed conversation, else one line saying what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise TinyLMError(f"{where}: expected a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise TinyLMError(f"{where}: message {i + 1} must be {{\"role\": one of {'/'.join(ROLES)}, "
                              f"\"content\": text}}, got {str(m)[:80]}")  # fmt: skip
        if m["role"] == "system" and i > 0:
            raise TinyLMError(f"{where}: a system message may only come first (message {i + 1} is one)")
    return messages


def _pieces(tok: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool) -> list[Piece]:
    if tok.eos_id is None:
        raise TinyLMError(f"a {tok.kind} tokenizer without an EOS token cannot end a chat turn; "
                          "use a bpe, sentencepiece, llama2 or gpt2 tokenizer")  # fmt: skip
    out: list[Piece] = [document_start(tok)]  # BOS, or the EOS a document starts after; never None here
    for m in messages:
        out.append(TURN[m["role"]].format(m["content"].strip()))
        if m["role"] == "assistant":
            out.append(tok.eos_id)
    if add_generation_prompt:
        out.append(GENERATION_PROMPT)
    return out


def render(tok: Tokenizer, messages: Sequence[Message], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation; with `add_generation_prompt`, open for the assistant's next turn.
    Text between special tokens is encoded as one string, as a tokenizer does with the rendered text."""
    ids: list[int] = []
    text = ""
    for p in [*_pieces(tok, messages, add_generation_prompt), None]:
        if isinstance(p, str):
            text += p
            continue
        ids += tok.encode(text) if text else []
        text = ""
        if p is not None:
            ids.append(p)
    return ids


def render_for_training(tok: Tokenizer, messages: Sequence[Message]) -> tuple[list[int], list[bool]]:
    """(ids, mask): mask is True on the tokens of each assistant reply and the EOS that ends it, which is
    all the loss is taken on. A reply's tokens are found by rendering the conversation up to its prompt
    and up to its end: both must be prefixes of the whole, else the tokenizer merges text across the
    boundary and the mask would be a guess."""
    ids = render(tok, messages)
    mask = [False] * len(ids)
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt, through = render(tok, messages[:k], True), render(tok, messages[: k + 1])
        if ids[: len(prompt)] != prompt or ids[: len(through)] != through:
            raise TinyLMError(f"the {tok.kind} tokenizer merges the text of reply {k + 1} with the prompt before "
                              "it, so its tokens cannot be told apart; start the reply with a letter")  # fmt: skip
        mask[len(prompt) : len(through)] = [True] * (len(through) - len(prompt))
    return ids, mask


def jinja_template(tok: Tokenizer) -> str:
    """The template above in Jinja, as Hugging Face and llama.cpp render it: their bos_token is our <start>
    (exports declare it so), eos_token our EOS."""
    content = "{{ message['content'] | trim }}"
    turns = "".join(
        f"{'{% if' if i == 0 else '{% elif'} message['role'] == '{role}' %}}{TURN[role].format(content)}"
        + ("{{ eos_token }}" if role == "assistant" else "")
        for i, role in enumerate(ROLES)
    )
    return ("{{ bos_token }}{% for message in messages %}" + turns + "{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}" + GENERATION_PROMPT + "{% endif %}")
