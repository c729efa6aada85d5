"""The teacher: any checkpoint tinylm loads (trained, imported, quantized, with adapters), checked
against the student (same tokenizer, a context long enough) and run live: batched, without gradients,
in eval mode, under the trainer's autocast, compiled when the student is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tinylm.checkpoint import TOKENIZER_DIR, load_checkpoint, weights_hash
from tinylm.config import ModelConfig, read_config
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.tokenizer import Tokenizer, load_tokenizer, tokenizer_hash


@dataclass
class TeacherInfo:
    """What identifies a teacher, read without loading its weights (a cache needs no more)."""

    path: Path
    config: ModelConfig
    tokenizer: Tokenizer | None

    @classmethod
    def read(cls, path: str | Path) -> TeacherInfo:
        path = Path(path)
        if not path.is_dir():
            raise TinyLMError(f"--teacher {path}: no such checkpoint directory; give a `tinylm train`/`import` output")
        cfg, _ = read_config(path)
        tok = load_tokenizer(path / TOKENIZER_DIR) if (path / TOKENIZER_DIR).is_dir() else None
        return cls(path, cfg, tok)

    def weights(self) -> str:
        return weights_hash(self.path)


def common_vocab(teacher: TeacherInfo, student: ModelConfig, student_tok: Tokenizer | None) -> int:
    """The vocabulary teacher and student share: the tokenizer's. Rows beyond it in either model (padding,
    e.g. 50304 for GPT-2's 50257 tokens) are sliced off both before comparing distributions."""
    t_tok, where = teacher.tokenizer, f"the teacher {teacher.path}"
    if t_tok is None or student_tok is None:
        if t_tok is None and student_tok is None and teacher.config.vocab_size == student.vocab_size:
            return student.vocab_size  # bare token ids on both sides: only the sizes can be compared
        which = where if t_tok is None else "the student's data"
        raise TinyLMError(f"{which} has no tokenizer, so the two vocabularies cannot be compared; attach one "
                          "(checkpoints keep it in tokenizer/, prepared data beside the shards)")  # fmt: skip
    if tokenizer_hash(t_tok) != tokenizer_hash(student_tok):
        raise TinyLMError(f"{where} and the student use different tokenizers ({t_tok.kind}, {t_tok.vocab_size:,} "
                          f"tokens vs {student_tok.kind}, {student_tok.vocab_size:,}); distillation compares them "
                          f"token by token: prepare the data with --tokenizer "
                          f"{teacher.path / TOKENIZER_DIR}")  # fmt: skip
    return t_tok.vocab_size


def check_context(teacher: TeacherInfo, seq_len: int) -> None:
    if teacher.config.context_length < seq_len:
        raise TinyLMError(f"the teacher {teacher.path} reads at most {teacher.config.context_length} tokens but the "
                          f"student trains on sequences of {seq_len}; use --context {teacher.config.context_length} "
                          "or less")  # fmt: skip


class LiveTeacher:
    """Teacher logits for a batch, computed on the fly: (B, T) ids -> (B, T, vocab) logits."""

    def __init__(self, model: Model, vocab: int, compile: bool = False):
        self.model, self.vocab = model.eval().requires_grad_(False), vocab
        self.device = next(model.parameters()).device
        self.forward: torch.nn.Module = torch.compile(self.model) if compile else self.model  # type: ignore[assignment]

    @classmethod
    def load(cls, info: TeacherInfo, vocab: int, compile: bool = False) -> LiveTeacher:
        return cls(load_checkpoint(info.path).model, vocab, compile)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.device != x.device:  # follow the student to its device, once
            self.model.to(x.device)
            self.device = x.device
        return self.forward(x)[..., : self.vocab]
