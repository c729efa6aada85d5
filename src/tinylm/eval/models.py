"""The models being scored, behind one call: token ids (B, T) in, logits (B, T, vocab) out.

Checkpoints load through the normal paths (`tinylm.checkpoint.load_checkpoint` for torch,
`tinylm.runtime.NumpyModel.from_checkpoint` for NumPy), so every checkpoint tinylm can load, with
whatever transforms its config declares, is evaluated the same way. In-memory models are accepted
too: a `(model, tokenizer)` pair, where the model is a torch `Model` or a `NumpyModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinylm.errors import TinyLMError
from tinylm.tokenizer import Tokenizer

ENGINES = ("torch", "numpy")
# a checkpoint directory, or (model, tokenizer) / (model, tokenizer, name) in memory
ModelSpec = str | Path | tuple[Any, Tokenizer | None] | tuple[Any, Tokenizer | None, str]


@dataclass
class Scored:
    """One model ready to score: its name in the table, tokenizer and shape facts."""

    name: str
    model: Any  # a torch Model (in eval mode, on `device`) or a NumpyModel
    tokenizer: Tokenizer
    device: torch.device

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def context_length(self) -> int:
        return self.model.config.context_length

    def logits(self, idx: np.ndarray) -> torch.Tensor:
        """float32 logits (B, T, vocab) on `device` for token ids idx (B, T)."""
        if isinstance(self.model, torch.nn.Module):
            with torch.inference_mode():
                return self.model(torch.from_numpy(idx).to(self.device)).float()
        return torch.from_numpy(self.model.logits(idx)).to(self.device)


def load_model(spec: ModelSpec, engine: str = "torch", device: str = "cpu", name: str = "model") -> Scored:
    """A checkpoint path or an in-memory (model, tokenizer[, name]) tuple, ready to score; `name` names
    an in-memory model that brings none. An in-memory torch model is put in eval mode on `device`."""
    if engine not in ENGINES:
        raise TinyLMError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if engine == "numpy" and device != "cpu":
        raise TinyLMError(f"the numpy engine runs on the CPU only, not {device!r}; use --engine torch")
    dev = _device(device)
    if isinstance(spec, tuple):
        model, tok, name = (*spec, name)[:3]
        if isinstance(model, torch.nn.Module):
            model = model.eval().to(dev)
    elif engine == "numpy":
        from tinylm.runtime import NumpyModel

        model = NumpyModel.from_checkpoint(spec)
        tok, name = model.tokenizer, str(spec)
    else:
        from tinylm.checkpoint import load_checkpoint

        ckpt = load_checkpoint(spec, device=dev)
        model, tok, name = ckpt.model, ckpt.tokenizer, str(spec)
    if tok is None:
        raise TinyLMError(f"{name}: has no tokenizer, so text cannot be tokenized for it; "
                          "attach one (e.g. `tinylm import ... --tokenizer PATH`) and evaluate again")  # fmt: skip
    if tok.vocab_size > model.config.vocab_size:
        raise TinyLMError(f"{name}: tokenizer has {tok.vocab_size} tokens but the model only "
                          f"{model.config.vocab_size}; they do not belong together")  # fmt: skip
    return Scored(str(name), model, tok, dev)


def _device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TinyLMError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return dev
