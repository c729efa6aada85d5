"""llm.c-format token shards: header, exact contents, windows across shard boundaries, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from tinylm.data.shards import (
    HEADER_BYTES,
    MAGIC,
    ShardWriter,
    TokenShards,
    dtype_for_vocab,
    read_header,
    read_shard,
    write_shard,
)
from tinylm.errors import TinyLMError


def test_header_and_contents_exact(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 65536, size=1000)
    write_shard(tmp_path / "a.bin", tokens, "uint16")
    raw = (tmp_path / "a.bin").read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], "<i4")
    assert (header[0], header[1], header[2]) == (MAGIC, 1, 1000) and not header[3:].any()
    assert len(raw) == HEADER_BYTES + 2000
    assert np.array_equal(read_shard(tmp_path / "a.bin"), tokens)
    big = np.array([0, 70000, 2**32 - 1])
    write_shard(tmp_path / "b.bin", big, "uint32")
    assert read_header(tmp_path / "b.bin") == (np.dtype("<u4"), 3)
    assert np.array_equal(read_shard(tmp_path / "b.bin"), big)


def test_dtype_for_vocab():
    assert dtype_for_vocab(65536) == np.dtype("<u2")
    assert dtype_for_vocab(65537) == np.dtype("<u4")


def test_writer_splits_and_reader_spans_boundaries(tmp_path):
    w = ShardWriter(tmp_path, "train", "uint16", shard_tokens=100)
    data = np.arange(1234) % 50000
    for chunk in np.array_split(data, 7):
        w.add(chunk)
    shards = w.close()
    assert [n for _, n in shards] == [100] * 12 + [34]
    ds = TokenShards(tmp_path, "train")  # no manifest: finds train_*.bin
    assert len(ds) == 1234
    assert np.array_equal(ds.window(95, 110), data[95:205])
    assert np.array_equal(ds.window(0, 1234), data)
    b = ds.batch([0, 99, 1200], 30)
    assert b.shape == (3, 30) and b.dtype == np.int64
    assert np.array_equal(b[1], data[99:129])
    with pytest.raises(TinyLMError, match=r"window of 2,000 tokens is longer than the 1,234 tokens"):
        ds.window(0, 2000)
    with pytest.raises(IndexError):
        ds.window(1230, 10)
    rng = np.random.default_rng(0)
    w = ds.random_windows(50, 64, rng)
    assert w.shape == (50, 64)
    assert all(np.array_equal(row, data[row[0] : row[0] + 64]) for row in w)  # data[i] == i here


def test_ids_that_do_not_fit_the_dtype(tmp_path):
    w = ShardWriter(tmp_path, "train", "uint16")
    with pytest.raises(TinyLMError, match="does not fit uint16"):
        w.add(np.array([1, 70000]))
    with pytest.raises(TinyLMError, match="does not fit"):
        write_shard(tmp_path / "x.bin", np.array([70000]), "uint16")


def test_bad_files_are_one_clear_error(tmp_path):
    write_shard(tmp_path / "train_000000.bin", np.arange(100), "uint16")
    raw = (tmp_path / "train_000000.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-10])
    with pytest.raises(TinyLMError, match=r"truncated: header says 100 tokens"):
        read_header(tmp_path / "cut.bin")
    (tmp_path / "magic.bin").write_bytes(b"\x01\x02\x03\x04" + raw[4:])
    with pytest.raises(TinyLMError, match="bad magic"):
        read_header(tmp_path / "magic.bin")
    (tmp_path / "tiny.bin").write_bytes(raw[:100])
    with pytest.raises(TinyLMError, match="truncated token shard"):
        read_header(tmp_path / "tiny.bin")
    with pytest.raises(TinyLMError, match="no val shards"):
        TokenShards(tmp_path, "val")
