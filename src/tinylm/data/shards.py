"""Token shards in llm.c's format, written streaming and read back through a memory map.

A shard is a 256 x int32 header (magic 20240520, version, token count, zeros) followed by the tokens:
uint16 for version 1 (llm.c's own), uint32 for version 2 (vocabularies over 65,535 ids).
A shard directory holds `{split}_{index:06d}.bin` files plus `manifest.json` (see `prepare.py`).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.fileio import atomic_path

MAGIC = 20240520
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
VERSIONS = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
MANIFEST = "manifest.json"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The narrowest shard dtype that holds every id of a vocabulary."""
    if vocab_size <= 1 << 16:
        return VERSIONS[1]
    if vocab_size <= 1 << 32:
        return VERSIONS[2]
    raise TinyLMError(
        f"a vocabulary of {vocab_size:,} ids does not fit uint32 token shards; use a smaller one"
    )


def _version_of(dtype: np.dtype) -> int:
    for v, d in VERSIONS.items():
        if np.dtype(dtype) == d:
            return v
    raise TinyLMError(f"token shards store uint16 or uint32, not {np.dtype(dtype)}")


def _check_fits(tokens: np.ndarray, dtype: np.dtype) -> None:
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(dtype).max):
        raise TinyLMError(
            f"token id {int(tokens.max()):,} does not fit {dtype.name} shards; "
            "use a smaller vocabulary or uint32 shards"
        )


def write_shard(path: str | Path, tokens: np.ndarray, dtype: np.dtype | str = "<u2") -> None:
    """Write one complete shard atomically. Ids must fit `dtype` (checked)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    tokens = np.asarray(tokens)
    _check_fits(tokens, dtype)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, _version_of(dtype), tokens.size)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(dtype, copy=False).tobytes())


def read_header(path: str | Path) -> tuple[np.dtype, int]:
    """(token dtype, token count) of a shard, after checking magic, version and file size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise TinyLMError(
            f"{path}: cannot read token shard ({e.strerror}); run `tinylm prepare` again"
        ) from None
    if len(raw) < HEADER_BYTES:
        raise TinyLMError(
            f"{path}: truncated token shard ({size} bytes, header alone is {HEADER_BYTES}); re-run prepare"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise TinyLMError(f"{path}: bad magic {int(header[0])} (expected {MAGIC}); not a token shard")
    dtype = VERSIONS.get(int(header[1]))
    if dtype is None:
        raise TinyLMError(f"{path}: unsupported shard version {int(header[1])}; known: {sorted(VERSIONS)}")
    count = int(header[2])
    expected = HEADER_BYTES + count * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise TinyLMError(
            f"{path}: {what}: header says {count:,} tokens ({expected:,} bytes) but the file has {size:,} bytes; re-run prepare"
        )
    return dtype, count


def read_shard(path: str | Path) -> np.ndarray:
    """A shard's tokens as a read-only memory map."""
    dtype, count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))


class ShardWriter:
    """Append token arrays; tokens stream straight to disk, a new shard every `shard_tokens` tokens.

    Shards are `{directory}/{split}_{index:06d}.bin`, written in place: write into a temporary
    directory (`tinylm.fileio.atomic_dir`) for an all-or-nothing result. `close()` returns the list of
    (file name, token count).
    """

    def __init__(
        self, directory: str | Path, split: str, dtype: np.dtype | str, shard_tokens: int = 100_000_000
    ):
        self.directory, self.split = Path(directory), split
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.version = _version_of(self.dtype)
        self.shard_tokens = shard_tokens
        self.shards: list[tuple[str, int]] = []
        self.tokens = 0
        self._file: BinaryIO | None = None
        self._fill = 0

    def add(self, tokens: np.ndarray | list[int]) -> None:
        tokens = np.asarray(tokens)
        _check_fits(tokens, self.dtype)
        while tokens.size:
            if self._file is None:
                self._open()
            n = min(tokens.size, self.shard_tokens - self._fill)
            self._file.write(tokens[:n].astype(self.dtype, copy=False).tobytes())  # type: ignore[union-attr]
            self._fill += n
            tokens = tokens[n:]
            if self._fill == self.shard_tokens:
                self._finish()

    def _open(self) -> None:
        name = f"{self.split}_{len(self.shards):06d}.bin"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self.directory / name, "wb")  # noqa: SIM115 -- spans many add() calls; closed in _finish
        self._file.write(bytes(HEADER_BYTES))  # the real header goes in once the count is known
        self.shards.append((name, 0))

    def _finish(self) -> None:
        assert self._file is not None
        header = np.zeros(HEADER_INTS, dtype="<i4")
        header[:3] = (MAGIC, self.version, self._fill)
        self._file.seek(0)
        self._file.write(header.tobytes())
        self._file.close()
        self.shards[-1] = (self.shards[-1][0], self._fill)
        self.tokens += self._fill
        self._file, self._fill = None, 0

    def close(self) -> list[tuple[str, int]]:
        if self._file is None and not self.shards:
            self._open()  # an empty split still gets one (empty) shard, so readers find it
        if self._file is not None:
            self._finish()
        return self.shards


@dataclass
class Manifest:
    """What `prepare` wrote: read with `Manifest.load(dir)`; `raw` keeps every field of manifest.json."""

    directory: Path
    raw: dict[str, Any]

    @classmethod
    def load(cls, directory: str | Path) -> Manifest:
        directory = Path(directory)
        path = directory / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TinyLMError(
                f"{directory}: no {MANIFEST}; prepare the data first with `tinylm prepare`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TinyLMError(f"{path}: not valid JSON ({e}); re-run `tinylm prepare`") from None
        return cls(directory, raw)

    @property
    def tokenizer_dir(self) -> Path:
        return self.directory / self.raw.get("tokenizer", "tokenizer")

    @property
    def vocab_size(self) -> int:
        return int(self.raw["vocab_size"])

    def tokens(self, split: str) -> int:
        return int(self.raw["splits"][split]["tokens"])

    def shard_files(self, split: str) -> list[Path]:
        splits = self.raw.get("splits", {})
        if split not in splits:
            raise TinyLMError(f"{self.directory}: no {split!r} split; it has: {', '.join(splits) or 'none'}")
        return [self.directory / s["file"] for s in splits[split]["shards"]]


class TokenShards:
    """All shards of one split as one long token sequence, memory-mapped.

    `len()` is the total token count; `window(start, length)` and `batch(starts, length)` read
    contiguous windows, spanning shard boundaries where needed.
    """

    def __init__(self, directory: str | Path, split: str = "train"):
        self.directory = Path(directory)
        self.split = split
        if (self.directory / MANIFEST).is_file():
            self.manifest: Manifest | None = Manifest.load(self.directory)
            files = self.manifest.shard_files(split)
        else:  # a bare directory of shards (e.g. llm.c's own)
            self.manifest = None
            files = sorted(self.directory.glob(f"*{split}_*.bin"))
            if not files:
                raise TinyLMError(
                    f"{self.directory}: no {split} shards and no {MANIFEST}; run `tinylm prepare` first"
                )
        self.files = files
        self.arrays = [read_shard(f) for f in files]
        self.offsets = np.cumsum([0] + [a.size for a in self.arrays]).tolist()
        self.dtype = self.arrays[0].dtype if self.arrays else VERSIONS[1]

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def tokenizer(self) -> Any:
        from tinylm.tokenizer import load_tokenizer

        if self.manifest is None:
            raise TinyLMError(f"{self.directory}: no {MANIFEST}, so no tokenizer is known for these shards")
        return load_tokenizer(self.manifest.tokenizer_dir)

    def _check(self, start: int, length: int) -> None:
        if length > len(self):
            raise TinyLMError(
                f"{self.directory} ({self.split}): a window of {length:,} tokens is longer than the "
                f"{len(self):,} tokens of data; use a shorter sequence length or more data"
            )
        if start < 0 or start + length > len(self):
            raise IndexError(f"window [{start}, {start + length}) is outside 0..{len(self)}")

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64."""
        self._check(start, length)
        out = np.empty(length, dtype=np.int64)
        i = bisect_right(self.offsets, start) - 1
        filled = 0
        while filled < length:
            a = self.arrays[i]
            lo = start + filled - self.offsets[i]
            n = min(length - filled, a.size - lo)
            out[filled : filled + n] = a[lo : lo + n]
            filled += n
            i += 1
        return out

    def batch(self, starts: np.ndarray | list[int], length: int) -> np.ndarray:
        """A (len(starts), length) int64 array of windows."""
        if len(starts) == 0:
            return np.empty((0, length), np.int64)
        return np.stack([self.window(int(s), length) for s in starts])

    def random_windows(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """`n` windows of `length` tokens at uniformly random starts, as an (n, length) int64 array."""
        self._check(0, length)
        return self.batch(rng.integers(0, len(self) - length + 1, size=n), length)
