"""The tokenizer of an imported model: llm.c's tokenizer file, the one --tokenizer names, the one beside
the model file.

llm.c's tokenizer (`gpt2_tokenizer.bin`): 256 x int32 header (magic 20240328, version 2, vocab size, EOT id),
then per token a uint8 length and that many bytes. llm.c only decodes with it; importing rebuilds a
byte-level BPE from the token order (a token's rank is its id, as in tiktoken).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.formats.common import BinFile
from tinylm.formats.vocab import byte_bpe_from_ranks, byte_bpe_tokenizer, token_bytes
from tinylm.tokenizer import Tokenizer, load_tokenizer

TOKENIZER_MAGIC = 20240328
HEADER_INTS = 256  # llm.c's model and tokenizer files both start with 256 int32s
HEADER_BYTES = 4 * HEADER_INTS
SPECIAL = re.compile(rb"<\|[A-Za-z0-9_]+\|>")


def tokenizer_file(tok: Tokenizer) -> bytes:
    tokens = token_bytes(tok)
    too_long = next((i for i, t in enumerate(tokens) if len(t) > 255), None)
    if too_long is not None:
        raise TinyLMError(
            f"token {too_long} is {len(tokens[too_long])} bytes; llm.c's tokenizer file holds at most 255"
        )
    head = np.zeros(HEADER_INTS, "<i4")
    head[:4] = (TOKENIZER_MAGIC, 2, len(tokens), tok.eos_id if tok.eos_id is not None else -1)
    return head.tobytes() + b"".join(struct.pack("<B", len(t)) + t for t in tokens)


def read_tokenizer(path: Path) -> Tokenizer:
    f = BinFile(path)
    magic, version, n, eot = (int(x) for x in f.array(0, "<i4", 4))
    if magic != TOKENIZER_MAGIC or version not in (1, 2):
        raise TinyLMError(f"{path}: not an llm.c tokenizer file (magic {magic}, version {version})")
    if not 0 < n <= 1 << 24:
        raise TinyLMError(f"{path}: header says {n} tokens; not a valid llm.c tokenizer file")
    data = f.data
    tokens, pos = [], HEADER_BYTES
    for i in range(n):
        if pos >= f.size or pos + 1 + int(data[pos]) > f.size:
            raise TinyLMError(f"{path}: truncated in token {i} of {n}; re-export it")
        length = int(data[pos])
        tokens.append(bytes(data[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    if pos != f.size:
        raise TinyLMError(
            f"{path}: {f.size - pos} bytes after the last of {n} tokens; not a valid llm.c tokenizer file"
        )
    eos = eot if version == 2 and 0 <= eot < n else None
    # the file marks no special tokens but EOT; GPT-2-style tokenizers spell theirs <|name|>
    specials = {i for i, t in enumerate(tokens) if SPECIAL.fullmatch(t)} | (
        {eos} if eos is not None else set()
    )
    bos = next((i for i in specials if tokens[i] == b"<|startoftext|>"), None)
    try:
        return byte_bpe_tokenizer(byte_bpe_from_ranks(tokens, specials, bos, eos))
    except TinyLMError as e:
        raise TinyLMError(f"{path}: {e}") from None


def load_given_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer a user names with --tokenizer: anything `load_tokenizer` reads, or llm.c's file."""
    if path.is_file():
        with open(path, "rb") as f:
            if int.from_bytes(f.read(4), "little") == TOKENIZER_MAGIC:
                return read_tokenizer(path)
    return load_tokenizer(path)


def tokenizer_for_import(model_path: Path, given: Path | None, filename: str, read: Callable[[Path], Tokenizer],
                         vocab_size: int) -> tuple[Tokenizer | None, list[str]]:  # fmt: skip
    """The tokenizer for an imported model: the one given with --tokenizer, else `filename` beside the model
    when its vocabulary fits; with notes saying which (or why none)."""
    if given is not None:
        return load_given_tokenizer(given), []
    beside = model_path.parent / filename
    if not beside.is_file():
        return None, [f"no {filename} beside the model; imported without a tokenizer (give one with --tokenizer)"]
    tok = read(beside)
    if tok.vocab_size != vocab_size:
        return None, [f"ignored {beside}: {tok.vocab_size} tokens, the model has {vocab_size}; "
                      "give the right one with --tokenizer"]  # fmt: skip
    return tok, [f"tokenizer: {beside}"]
