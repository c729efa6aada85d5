"""Character-level language modelling on one text file (nanoGPT's shakespeare_char, minGPT's CharDataset):
every distinct character is a token, the first 90% of the text trains and the last 10% validates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.tokenizer import CharTokenizer
from tinylm.train.batches import TokenWindows
from tinylm.train.trainer import TrainData


def char_data(path: str | Path, context: int, val_fraction: float = 0.1) -> TrainData:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TinyLMError(f"{path}: cannot read as UTF-8 text ({e}); give a text file") from None
    tok = CharTokenizer.train([text])
    ids = np.array(tok.encode(text), dtype=np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32)
    cut = int(len(ids) * (1 - val_fraction))
    return TrainData(
        TokenWindows(ids[:cut], context, f"{path} (first {1 - val_fraction:.0%})"),
        TokenWindows(ids[cut:], context, f"{path} (last {val_fraction:.0%}, validation)"),
        tok,
        path.name,
    )
