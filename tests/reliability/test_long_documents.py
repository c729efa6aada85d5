"""A document of any length (a file without line breaks) streams through `prepare` in bounded pieces:
memory follows the piece and batch limits, not the file."""

from __future__ import annotations

import pytest

import tinylm.data.prepare as prep
import tinylm.data.sources as sources
from tinylm.data.prepare import _batched, prepare
from tinylm.data.sources import SourceStats, read_documents


@pytest.fixture
def small_limits(monkeypatch):
    monkeypatch.setattr(sources, "MAX_DOC_CHARS", 1000)
    monkeypatch.setattr(sources, "CHUNK", 300)  # many chunks per piece: the buffer must not grow past the limit
    monkeypatch.setattr(prep, "BATCH_CHARS", 2500)


@pytest.mark.parametrize("separator", ["blank", "line", "file"])
def test_a_line_without_end_is_cut_into_bounded_pieces(tmp_path, small_limits, separator):
    words = " ".join(f"w{i}" for i in range(4000))  # ~22k characters, no line break
    f = tmp_path / "one.txt"
    f.write_text("short doc\n\n" + words + "\n\nlast doc")
    stats = SourceStats()
    docs = list(read_documents([f], stats, separator))
    assert max(map(len, docs)) <= 1000 and stats.cuts >= 20
    assert " ".join(docs).split() == f.read_text().split()  # cut at spaces: no word lost or split
    if separator != "file":
        assert docs[0] == "short doc" and docs[-1] == "last doc"
    batches = list(_batched(docs, 1024))
    assert all(sum(map(len, b)) <= 2500 for b in batches) and [d for b in batches for d in b] == docs


def test_jsonl_text_is_cut_too(tmp_path, small_limits):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "' + "x" * 2500 + '"}\n')
    stats = SourceStats()
    assert [len(d) for d in read_documents([f], stats)] == [1000, 1000, 500] and stats.cuts == 2


def test_prepare_reports_the_cuts(tmp_path, small_limits):
    f = tmp_path / "one.txt"
    f.write_text("abc " * 5000)
    m = prepare([f], tmp_path / "out", tokenizer="char", workers=0, progress=False)
    assert m.raw["input"]["long_document_cuts"] == 19 and m.raw["clean"]["documents_in"] == 20
