"""Scoring one model under a protocol: tokenize, cut windows, run batches, collect per-token numbers.

Per scored position: the loss -log p(target) in nats; with a reference model, KL(ref || model) =
sum_v p_ref(v) (log p_ref(v) - log p_model(v)) over the vocabulary (the direction llama-perplexity
reports) and whether both models' most likely tokens agree. All in float32 on the model's device;
sums and statistics in float64 on the CPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from tinylm.eval.models import Scored
from tinylm.eval.protocols import Protocol, Window, cut
from tinylm.tokenizer import Tokenizer

ENCODE_DOCS = 256  # documents tokenized at once


@dataclass
class Scores:
    """Per-position numbers of one model, in window order (window w scores w.end - w.first of them)."""

    windows: list[tuple[int, Window]]  # (token list index, window)
    losses: np.ndarray  # (N,) nats
    nbytes: int  # UTF-8 bytes the scored tokens spell (see protocols.py)
    kl: np.ndarray | None = None  # (N,) nats
    agree: np.ndarray | None = None  # (N,) bool


def token_lists(tok: Tokenizer, docs: Iterable[str], protocol: Protocol, budget: int | None) -> list[np.ndarray]:
    """The token lists the protocol cuts: one stream of framed documents, or one list per document.
    With a `budget` of scored tokens, reading stops once there is enough (a window scores at least
    half its tokens, so twice the budget always suffices)."""
    from tinylm.data.prepare import encode_framed

    want = None if budget is None else 2 * budget + 2
    have, out = 0, []
    if protocol.name == "documents":
        start = [tok.bos_id if tok.bos_id is not None else tok.eos_id]
        for doc in docs:
            out.append(np.array([s for s in start if s is not None] + tok.encode(doc), dtype=np.int64))
            have += out[-1].size - 1
            if want is not None and have >= want:
                break
        return out
    docs = iter(docs)
    while batch := list(itertools.islice(docs, ENCODE_DOCS)):
        out.append(encode_framed(tok, batch)[0].astype(np.int64))
        have += out[-1].size
        if want is not None and have >= want:
            break
    return [np.concatenate(out)] if out else []


def plan(lists: list[np.ndarray], length: int, stride: int, budget: int | None) -> list[tuple[int, Window]]:
    """Every window of every list, in order; the last one shortened so no more than `budget` are scored."""
    out: list[tuple[int, Window]] = []
    left = budget
    for i, ids in enumerate(lists):
        for w in cut(ids.size, length, stride):
            if left is not None:
                if left <= 0:
                    return out
                w = Window(w.start, min(w.end, w.first + left), w.first)
                left -= w.end - w.first
            out.append((i, w))
    return out


def window_bytes(tok: Tokenizer, ids: np.ndarray, w: Window) -> int:
    """UTF-8 bytes of the text the window's scored tokens add after the token before them."""
    before = len(tok.decode(ids[w.first - 1 : w.first].tolist()).encode("utf-8"))
    return max(0, len(tok.decode(ids[w.first - 1 : w.end].tolist()).encode("utf-8")) - before)


@torch.inference_mode()
def score_batch(model: Scored, reference: Scored | None, lists: list[np.ndarray],
                batch: list[tuple[int, Window]]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """Losses (and KL, top-1 agreement) of a batch of windows, right-padded to the longest (a causal
    model's earlier positions never see the padding)."""
    L = max(w.end - w.start for _, w in batch)
    idx = np.zeros((len(batch), L), np.int64)
    targets = np.full((len(batch), L), -1, np.int64)  # target of each input position, -1: not scored
    for b, (i, w) in enumerate(batch):
        ids = lists[i]
        idx[b, : w.end - w.start] = ids[w.start : w.end]
        targets[b, w.first - 1 - w.start : w.end - 1 - w.start] = ids[w.first : w.end]
    mask = torch.from_numpy(targets >= 0).to(model.device)
    t = torch.from_numpy(targets).to(model.device).clamp(min=0)
    logp = log_probs(model.logits(idx))  # (B, L, vocab)
    losses = -logp.gather(-1, t[..., None])[..., 0][mask]  # (N,)
    if reference is None:
        return losses, None, None
    ref = log_probs(reference.logits(idx).to(model.device))  # (B, L, vocab)
    kl = (ref.exp() * (ref - logp)).sum(-1)[mask]
    return losses, kl, (ref.argmax(-1) == logp.argmax(-1))[mask]


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax in place: (B, T, vocab) logits can be the largest tensor of the whole evaluation."""
    return logits.sub_(logits.logsumexp(-1, keepdim=True))


def score(model: Scored, docs: Iterable[str], protocol: Protocol, reference: Scored | None = None,
          batch_size: int = 8, max_tokens: int | None = None, progress: bool = True) -> Scores:  # fmt: skip
    """Every scored position of `docs` under `protocol` for one model."""
    length = protocol.window_length(model.context_length)
    if reference is not None:
        protocol.window_length(reference.context_length)  # the reference must hold the windows too
    lists = token_lists(model.tokenizer, docs, protocol, max_tokens)
    windows = plan(lists, length, protocol.step(length), max_tokens)
    total = sum(w.end - w.first for _, w in windows)
    parts: list[list[torch.Tensor]] = [[], [], []]
    with tqdm(total=total, unit="tok", unit_scale=True, desc=model.name, disable=not progress, leave=False) as bar:
        for k in range(0, len(windows), batch_size):
            batch = windows[k : k + batch_size]
            for part, x in zip(parts, score_batch(model, reference, lists, batch), strict=True):
                if x is not None:
                    part.append(x.double().cpu())
            bar.update(sum(w.end - w.first for _, w in batch))
    losses, kl, agree = (torch.cat(p).numpy() if p else None for p in parts)
    nbytes = sum(window_bytes(model.tokenizer, lists[i], w) for i, w in windows)
    return Scores(windows, losses if losses is not None else np.zeros(0), nbytes, kl,
                  None if agree is None else agree.astype(bool))  # fmt: skip
