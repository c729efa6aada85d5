"""Calibration for GPTQ and SmoothQuant: token sequences cut from text, and statistics of what each
Linear layer sees on them, gathered with forward hooks while the model runs.

Per layer we keep only what the methods need, accumulated batch by batch (never the activations
themselves, which would be samples x seq_len x width floats per layer):
  hessian  X^T X over every input row x (in, in), float64   (GPTQ)
  absmax   max |x_i| per input channel (in,)                  (SmoothQuant)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer

SAMPLES = 128
BATCH = 8  # sequences per forward pass while calibrating


def calibration_tokens(spec: str, tokenizer: Tokenizer, vocab_size: int, samples: int, seq_len: int) -> torch.Tensor:
    """`samples` sequences of `seq_len` tokens (N, L), consecutive windows of the framed documents of
    `spec` (a text file, folder, glob, dataset name, or a prepared shard folder's train split),
    tokenized by the model's own tokenizer. Fewer when the text runs out (at least one)."""
    from tinylm.eval.data import load_documents
    from tinylm.eval.protocols import Protocol
    from tinylm.eval.scoring import token_lists

    if samples < 1 or seq_len < 2:
        raise TinyLMError(f"--samples ({samples}) must be at least 1 and --seq-len ({seq_len}) at least 2")
    if tokenizer.vocab_size > vocab_size:
        raise TinyLMError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {vocab_size}; "
                          "they do not belong together: calibrate with the checkpoint's own tokenizer")  # fmt: skip
    docs = load_documents(spec, split="train")
    # token_lists stops reading at twice its budget: ask for half of what the windows need
    stream = np.concatenate(token_lists(tokenizer, docs, Protocol(), samples * seq_len // 2 + 1) or [np.zeros(0)])
    n = min(samples, stream.size // seq_len)
    if n == 0:
        raise TinyLMError(f"calibration text {spec} has {stream.size} tokens, fewer than one sequence of "
                          f"--seq-len {seq_len}; give more text or a smaller --seq-len")  # fmt: skip
    return torch.from_numpy(stream[: n * seq_len].astype(np.int64)).view(n, seq_len)


@dataclass
class InputStats:
    """What one Linear layer's inputs looked like over the calibration set."""

    hessian: torch.Tensor | None = None  # (in, in) float64, sum of x x^T
    absmax: torch.Tensor | None = None  # (in,) float32
    rows: int = 0
    _want: tuple[bool, bool] = field(default=(True, True), repr=False)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()  # (rows, in)
        self.rows += x.shape[0]
        if self._want[0]:
            xtx = (x.T @ x).double()
            self.hessian = xtx if self.hessian is None else self.hessian + xtx
        if self._want[1]:
            m = x.abs().amax(dim=0)
            self.absmax = m if self.absmax is None else torch.maximum(self.absmax, m)


@contextmanager
def recording(layers: dict[str, nn.Module], hessian: bool = True, absmax: bool = True) -> Iterator[dict[str, InputStats]]:
    """Within the block, every call of the named layers adds its input to that layer's InputStats."""
    stats = {name: InputStats(_want=(hessian, absmax)) for name in layers}
    handles = [m.register_forward_pre_hook(lambda _m, args, s=stats[n]: s.add(args[0])) for n, m in layers.items()]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


class _Caught(Exception):
    pass


def first_block_inputs(model: nn.Module, tokens: torch.Tensor, progress: bool = True) -> tuple[torch.Tensor, tuple]:
    """The residual stream entering layers[0] for every sequence (N, L, C), and the other arguments
    the blocks take (the rotary tables): the model's own forward runs until the first block is called."""
    caught: list[tuple] = []

    def catch(_module: nn.Module, args: tuple) -> None:
        caught.append(args)
        raise _Caught

    handle = model.layers[0].register_forward_pre_hook(catch)
    try:
        for batch in tokens.split(BATCH):
            with suppress(_Caught):
                model(batch)
    finally:
        handle.remove()
    return torch.cat([a[0] for a in caught]), tuple(caught[0][1:])


def linear_layers(module: nn.Module, prefix: str, skip: list[str]) -> dict[str, nn.Linear]:
    """The nn.Linear layers inside `module`, by their name in the model, but those `skip` names."""
    from tinylm.quantize.schemes import is_kept

    out = {}
    for name, m in module.named_modules():
        full = f"{prefix}.{name}" if name else prefix
        if isinstance(m, nn.Linear) and not is_kept(full, skip):
            out[full] = m
    return out


def whole_model_stats(model: nn.Module, tokens: torch.Tensor, layers: dict[str, nn.Module],
                      hessian: bool, absmax: bool, desc: str = "calibrating") -> dict[str, InputStats]:  # fmt: skip
    """One pass of the (float) model over the calibration sequences, recording the named layers."""
    from tqdm import tqdm

    with torch.inference_mode(), recording(layers, hessian, absmax) as stats:
        for batch in tqdm(tokens.split(BATCH), desc=desc, unit="batch", leave=False):
            model(batch)
    return stats
