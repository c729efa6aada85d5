"""`tinylm chat`: talk to a checkpoint (or to any OpenAI-compatible server) in the terminal."""

from __future__ import annotations

import argparse

from tinylm.threads import add_threads_argument, use_threads

NAME = "chat"
ORDER = 55
HELP = "Chat with a checkpoint in the terminal, or with any OpenAI-compatible server (--url)."
EXAMPLES = """
  tinylm chat runs/chat-model
  tinylm chat runs/chat-model --temperature 0.7 --max-tokens 300 --system "You are terse."
  tinylm chat --url http://127.0.0.1:8000            # a `tinylm serve`, llama-server, vLLM, Ollama…
  inside: /reset forgets the conversation, /system TEXT sets the system message, /quit (or Ctrl-D) leaves,
          Ctrl-C stops a reply
"""
HELP_LINE = "/reset forgets the conversation · /system TEXT sets the system message · /quit leaves · Ctrl-C stops a reply"


def add_arguments(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument("checkpoint", nargs="?", help="checkpoint directory (or use --url)")
    p.add_argument("--url", help="an OpenAI-compatible server instead of a checkpoint, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key", default=os.environ.get("TINYLM_API_KEY"), help="for --url (default: $TINYLM_API_KEY)")
    p.add_argument("--model", default=None, help="for --url: which of the server's models (default: its first)")
    p.add_argument("--system", default=None, help="the system message to start with")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)")
    p.add_argument("--max-tokens", type=int, default=200, help="longest reply in tokens (default 200)")
    p.add_argument("--engine", default="torch", help="torch (default) or numpy, for a checkpoint")
    p.add_argument("--device", default="cpu", help="torch engine device: cpu or cuda (default cpu)")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    from tinylm.errors import TinyLMError

    if (args.checkpoint is None) == (args.url is None):
        raise TinyLMError("give a checkpoint directory or --url of a server (one of them)")
    if args.max_tokens < 1:
        raise TinyLMError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    talk(_open(args), args)
    return 0


def _open(args: argparse.Namespace):
    from pathlib import Path

    from tinylm.serve.conversation import LocalChat, RemoteChat

    if args.url:
        return RemoteChat(args.url, args.api_key, args.model)
    use_threads(args.threads)  # both engines: torch's pool, and the BLAS pool under NumPy
    from tinylm.generate import Generator

    gen = Generator.load(args.checkpoint, engine=args.engine, device=args.device)
    return LocalChat(gen, Path(args.checkpoint).resolve().name)


def talk(chat, args: argparse.Namespace) -> None:
    """The read-reply loop: each turn sends the whole conversation (system message first)."""
    context = f", context {chat.context_length} tokens" if chat.context_length else ""
    print(f"chatting with {chat.name}{context}\n{HELP_LINE}")
    system, turns = args.system, []
    while True:
        try:
            line = input("\nyou> ").strip()
        except EOFError:
            print()
            return
        except KeyboardInterrupt:  # at the prompt, Ctrl-C just clears the line
            print()
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            turns = []
            print("(conversation forgotten)")
            continue
        if line.startswith("/system"):
            system = line.removeprefix("/system").strip() or None
            print(f"(system message: {system})" if system else "(system message removed)")
            continue
        if line:
            turns.append({"role": "user", "content": line})
            turns = reply(chat, system, turns, args)


def reply(chat, system: str | None, turns: list[dict[str, str]], args: argparse.Namespace) -> list[dict[str, str]]:
    """Stream the assistant's reply to `turns`; return the turns to keep (the oldest dropped while the
    conversation does not fit the context, the reply appended)."""
    from tinylm.serve.conversation import ContextFull

    while True:
        head = [{"role": "system", "content": system}] if system else []
        print("bot> ", end="", flush=True)
        text = ""
        try:
            for piece in chat.stream(head + turns, args.max_tokens, args.temperature):
                piece = piece if text else piece.lstrip()  # the template leaves a space after the cue
                text += piece
                print(piece, end="", flush=True)
        except ContextFull as e:
            if len(turns) <= 1:
                print(f"\r(your message does not fit: {e}; send a shorter one or /system a shorter system message)")
                return []
            turns = turns[2:] if turns[1]["role"] == "assistant" else turns[1:]
            print(f"\r(dropped the oldest turn to stay within the context: {e})")
            continue
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        print()
        return [*turns, {"role": "assistant", "content": text}] if text else turns
