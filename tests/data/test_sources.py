"""Every source kind, and bad input as one clear error."""

from __future__ import annotations

import gzip
import json

import pytest

from tinylm.data.sources import SourceStats, expand_inputs, read_documents, stdlib_files
from tinylm.errors import TinyLMError


def docs_of(paths, **kw) -> list[str]:
    return list(read_documents(expand_inputs(paths), SourceStats(), **kw))


def test_txt_separators(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one\ntwo lines\n\n\nthree\r\n  \r\nfour <|endoftext|> five\n")
    assert docs_of([f], separator="blank") == ["one\ntwo lines", "three", "four <|endoftext|> five"]
    assert docs_of([f], separator="line") == ["one", "two lines", "three", "four <|endoftext|> five"]
    assert docs_of([f], separator="eot") == ["one\ntwo lines\n\n\nthree\r\n  \r\nfour", "five"]
    assert docs_of([f], separator="auto")[-1] == "five"  # <|endoftext|> present: split on it
    assert docs_of([f], separator="file") == [f.read_bytes().decode().strip()]
    assert docs_of([f], separator="two") == ["one", "lines\n\n\nthree\r\n  \r\nfour <|endoftext|> five"]


def test_separator_across_chunk_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr("tinylm.data.sources.CHUNK", 7)  # separators and UTF-8 characters straddle chunks
    f = tmp_path / "a.txt"
    stories = ["Tiny story número uno.", "Second 😀 story.", "Third."]
    f.write_text("\n<|endoftext|>\n".join(stories), encoding="utf-8")
    assert docs_of([f], separator="eot") == stories


def test_directories_jsonl_and_gz(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.jsonl").write_text('{"text": "alpha"}\n\n{"text": "beta", "id": 2}\n')
    with gzip.open(tmp_path / "d" / "sub" / "b.txt.gz", "wt") as g:
        g.write("gamma\n\ndelta\n")
    with gzip.open(tmp_path / "d" / "c.jsonl.gz", "wt") as g:
        g.write(json.dumps({"text": "epsilon"}) + "\n")
    (tmp_path / "d" / "skip.bin").write_bytes(b"\x00\x01")  # not a text extension: ignored in directories
    (tmp_path / "d" / ".hidden.txt").write_text("hidden")
    assert docs_of([tmp_path / "d"]) == ["alpha", "beta", "epsilon", "gamma", "delta"]


def test_jsonl_other_field_and_globs(tmp_path):
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as g:
        g.write(json.dumps({"content": "epsilon"}) + "\n")
    assert docs_of([tmp_path / "c.jsonl.gz"], text_field="content") == ["epsilon"]
    (tmp_path / "x1.txt").write_text("x one")
    (tmp_path / "x2.txt").write_text("x two")
    assert docs_of([str(tmp_path / "x*.txt")]) == ["x one", "x two"]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"caf\xe9 ok\n\nfine \xff\xfe text")
    stats = SourceStats()
    docs = list(read_documents([f], stats))
    assert docs == ["caf\ufffd ok", "fine \ufffd\ufffd text"]
    assert stats.invalid_utf8_bytes == 3 and stats.bytes == f.stat().st_size


def test_pystdlib_is_deterministic_and_bounded():
    files = stdlib_files(max_mb=0.5)
    assert files == stdlib_files(max_mb=0.5) and files
    assert not any(p in f.parts for f in files for p in ("test", "tests", "site-packages"))
    assert sum(f.stat().st_size for f in files) <= 0.5e6 or len(files) == 1
    docs = list(read_documents(files[:3], SourceStats(), separator="file"))
    assert len(docs) <= 3 and all(isinstance(d, str) for d in docs)


def test_bad_inputs(tmp_path):
    with pytest.raises(TinyLMError, match="no such file"):
        expand_inputs([tmp_path / "missing.txt"])
    with pytest.raises(TinyLMError, match="no files match"):
        expand_inputs([str(tmp_path / "*.nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinyLMError, match="directory has no"):
        expand_inputs([tmp_path / "empty"])
    binary = tmp_path / "model.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(TinyLMError, match="binary file"):
        docs_of([binary])
    j = tmp_path / "data.jsonl"
    j.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(TinyLMError, match=r"data.jsonl:2: no string field 'text'"):
        docs_of([j])
    j.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(TinyLMError, match=r"data.jsonl:2: not valid JSON"):
        docs_of([j])
