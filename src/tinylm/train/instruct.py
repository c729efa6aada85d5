"""Instruction and chat data: `.jsonl` conversations rendered by the one chat template (tinylm.chat) into
training rows whose targets are -1 except on the assistant's replies and their EOS.

A line is {"messages": [{"role": ..., "content": ...}, ...]} or {"prompt": ..., "completion": ...} (one
user turn and one reply); other keys are kept for tasks (story-words keeps its "words"). A malformed line
is reported with its number: `on_error="stop"` raises at the first, "skip" leaves them out and says
which. A conversation longer than the context is dropped or truncated to it, and the count is reported.
Since the targets hold the mask, the plain next-token objective trains on the replies only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tinylm.chat import Message, check_messages, render_for_training
from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer
from tinylm.train.batches import Examples

ON_ERROR = ("stop", "skip")
TOO_LONG = ("drop", "truncate")


@dataclass
class Record:
    line: int  # 1-based line number in its file
    messages: list[Message]
    extra: dict[str, Any] = field(default_factory=dict)  # the line's other keys


def parse_line(text: str) -> tuple[list[Message], dict[str, Any]]:
    """(messages, other keys) of one JSONL line, or ValueError naming what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    if "messages" in obj:
        messages, rest = obj["messages"], {k: v for k, v in obj.items() if k != "messages"}
    elif isinstance(obj.get("prompt"), str) and isinstance(obj.get("completion"), str):
        messages = [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
        rest = {k: v for k, v in obj.items() if k not in ("prompt", "completion")}
    else:
        raise ValueError('expected "messages" (a list of {"role", "content"}) or "prompt" and "completion" strings')
    try:
        check_messages(messages, "messages")
    except TinyLMError as e:
        raise ValueError(str(e)) from None
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant message, so nothing to learn from")
    return messages, rest


def no_such_file(path: str | Path) -> TinyLMError:
    return TinyLMError(f"{path}: no such file; give a .jsonl file of conversations")


def read_jsonl(path: str | Path, on_error: str = "stop", quiet: bool = False) -> list[Record]:
    """Every conversation of a JSONL file (blank lines ignored)."""
    path = Path(path)
    if on_error not in ON_ERROR:
        raise TinyLMError(f"--on-error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise no_such_file(path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{path}: cannot read it as UTF-8 text ({e})") from None
    records, bad = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(Record(n, *parse_line(line)))
        except ValueError as e:
            if on_error == "stop":
                raise TinyLMError(f"{path}:{n}: {e}; fix the line or pass --on-error skip") from None
            bad.append(f"{n} ({e})")
    if bad and not quiet:
        print(f"warning: {path}: skipped {len(bad)} malformed line(s): {'; '.join(bad[:5])}"
              + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""), file=sys.stderr)  # fmt: skip
    if not records:
        raise TinyLMError(f"{path}: no usable conversation in the file")
    return records


def encode(records: list[Record], tok: Tokenizer, context: int, too_long: str = "drop",
           quiet: bool = False, name: str = "data") -> Examples:  # fmt: skip
    """Training rows (N, T) with T the longest conversation that fits `context` (inputs are the rendered
    ids minus the last, targets the ids shifted by one and -1 where the loss does not look)."""
    if too_long not in TOO_LONG:
        raise TinyLMError(f"--too-long must be one of {', '.join(TOO_LONG)}, got {too_long!r}")
    rows, long = [], []
    for r in records:
        ids, mask = render_for_training(tok, r.messages)
        if len(ids) - 1 > context:
            long.append(r.line)
            if too_long == "drop":
                continue
            ids, mask = ids[: context + 1], mask[: context + 1]
            if not any(mask[1:]):
                continue  # truncation cut every reply: nothing left to learn
        rows.append((ids, mask))
    if long and not quiet:
        what = "dropped" if too_long == "drop" else "truncated to their first tokens"
        print(f"note: {name}: {len(long)} of {len(records)} conversation(s) are longer than the context of {context} "
              f"tokens (line {', '.join(map(str, long[:5]))}{' ...' if len(long) > 5 else ''}): {what}"
              + (" (--too-long truncate keeps their start)" if too_long == "drop" else ""), file=sys.stderr)  # fmt: skip
    if not rows:
        raise TinyLMError(f"{name}: every conversation is longer than the context of {context} tokens; "
                          "use --too-long truncate or a model with a longer context")  # fmt: skip
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), T), tok.eos_id or 0, dtype=torch.long)  # padding: any id, never scored
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        t = torch.tensor(ids)
        x[i, : len(ids) - 1] = t[:-1]
        y[i, : len(ids) - 1] = torch.where(torch.tensor(mask[1:]), t[1:], -1)
    return Conversations(x, y)


class Conversations(Examples):
    """Rows padded to the longest conversation, each batch cut after its last scored position: a causal
    model's loss on a position does not depend on the positions after it, so a batch of short
    conversations does not pay for the longest one."""

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().get(rows)
        scored = (y != -1).any(0).nonzero()
        end = int(scored[-1]) + 1 if len(scored) else 1
        return x[:, :end].contiguous(), y[:, :end].contiguous()  # a compiled step guards on strides too


def split(records: list[Record], val_frac: float = 0.05, seed: int = 1337) -> tuple[list[Record], list[Record]]:
    """(train, validation): a fixed random share (at least one conversation, at most 500) held out."""
    if not 0 < val_frac < 1:
        raise TinyLMError(f"--val-frac must be between 0 and 1, got {val_frac}")
    if len(records) < 2:
        raise TinyLMError("at least 2 conversations are needed (one is held out for validation)")
    n_val = min(500, max(1, round(len(records) * val_frac)))
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    return [records[i] for i in sorted(order[n_val:])], [records[i] for i in sorted(order[:n_val])]
