"""`prepare` and `tinylm prepare` end to end: shards hold exactly the framed documents; bad input fails cleanly."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tinylm.cli import main
from tinylm.data.prepare import _is_val, prepare
from tinylm.data.shards import Manifest, TokenShards
from tinylm.errors import TinyLMError
from tinylm.tokenizer import CharTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> tuple[list[str], object]:
    text = (shared_data / "tinystories_v2_head.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in text.split("<|endoftext|>") if s.strip()][:300]
    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    # Two exact duplicates planted: dedup must drop them.
    path.write_text("\n<|endoftext|>\n".join([*stories, stories[3], stories[7]]) + "\n", encoding="utf-8")
    return stories, path


class HugeVocab(CharTokenizer):
    """A tokenizer whose ids need more than 16 bits."""

    @property
    def vocab_size(self) -> int:
        return 70_000


def read_split_docs(out, split: str) -> list[list[int]]:
    """The documents of a split, cut at the EOS separators."""
    ds = TokenShards(out, split)
    tok = ds.tokenizer
    ids = ds.window(0, len(ds)).tolist()
    docs, cur = [], []
    for i in ids:
        cur.append(i)
        if i == tok.eos_id:
            docs.append(cur)
            cur = []
    assert not cur
    return docs


@pytest.mark.parametrize("kind", ["bpe", "char", "sentencepiece", "llama2c-bin"])
def test_shards_hold_framed_documents(corpus, tmp_path, shared_data, kind):
    stories, path = corpus
    spec = shared_data / "llama2_tokenizer" / "tokenizer.bin" if kind == "llama2c-bin" else kind
    out = tmp_path / "out"
    m = prepare([path], out, tokenizer=spec, vocab_size=512, val_fraction=0.1, progress=False)
    assert isinstance(m, Manifest)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["clean"]["exact_duplicates"] == 2 and raw["clean"]["documents_out"] == 300
    assert raw["splits"]["train"]["documents"] + raw["splits"]["val"]["documents"] == 300
    assert raw["splits"]["val"]["documents"] > 0
    tok = load_tokenizer(out / "tokenizer")
    assert tok.kind == raw["tokenizer_kind"]
    got = read_split_docs(out, "train") + read_split_docs(out, "val")
    # Every story appears exactly once, framed as [bos] + tokens + [eos].
    expected = sorted(tok.encode_document(s) for s in stories)
    assert sorted(got) == expected
    if tok.bos_id is not None:
        assert all(d[0] == tok.bos_id for d in got)
    # The split is by a keyed hash of each document's text.
    val = sorted(tok.encode_document(s) for s in stories if _is_val(s, 0.1, (0).to_bytes(8, "little")))
    assert sorted(read_split_docs(out, "val")) == val
    assert len(TokenShards(out, "train")) == raw["splits"]["train"]["tokens"]


def test_split_is_deterministic_and_seeded(corpus, tmp_path):
    _, path = corpus
    a = prepare([path], tmp_path / "a", tokenizer="char", progress=False)
    b = prepare([path], tmp_path / "b", tokenizer="char", progress=False)
    c = prepare([path], tmp_path / "c", tokenizer="char", seed=1, progress=False)
    assert (tmp_path / "a" / "val_000000.bin").read_bytes() == (
        tmp_path / "b" / "val_000000.bin"
    ).read_bytes()
    assert a.raw["splits"] == b.raw["splits"] != c.raw["splits"]


def test_one_document_is_split_by_tokens(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("to be or not to be, that is the question. " * 50)
    m = prepare([f], tmp_path / "o", tokenizer="char", separator="file", val_fraction=0.1, progress=False)
    s = m.raw["splits"]
    assert m.raw["split"]["method"] == "tokens"
    assert s["val"]["tokens"] == round(0.1 * (s["train"]["tokens"] + s["val"]["tokens"]))


def test_windows_longer_than_the_data(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("a tiny corpus\n\nof two docs")
    prepare([f], tmp_path / "t", tokenizer="char", val_fraction=0.0, progress=False)
    ds = TokenShards(tmp_path / "t", "train")
    with pytest.raises(TinyLMError, match=rf"window of 1,024 tokens is longer than the {len(ds)} tokens"):
        ds.batch(np.array([0]), 1024)


def test_bad_input_keeps_previous_output(corpus, tmp_path):
    _, path = corpus
    out = tmp_path / "out"
    prepare([path], out, tokenizer="char", progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(TinyLMError, match="empty corpus"):
        prepare([empty], out, tokenizer="char", progress=False)
    with pytest.raises(TinyLMError, match="do not fit uint16"):
        prepare([path], out, tokenizer=HugeVocab(list("abc")), dtype="uint16", progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary left behind


def test_cli_prepare_and_errors(corpus, tmp_path, capsys):
    _, path = corpus
    out = tmp_path / "cli"
    args = ["prepare", str(path), "--out", str(out), "--tokenizer", "bpe", "--vocab-size", "400"]
    assert main([*args, "--dedup-verify", "estimate", "--dedup-perms", "64"]) == 0
    assert json.loads((out / "manifest.json").read_text())["clean"]["near_dedup"]["verify"] == "estimate"
    capsys.readouterr()
    assert main(args) == 0
    table = capsys.readouterr().out
    assert re.search(r"exact duplicates removed +2\n", table)
    assert "bytes per token" in table and (out / "manifest.json").is_file()
    assert main(["prepare", str(tmp_path / "missing.txt"), "--out", str(out)]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["prepare", str(path), "--out", str(out), "--tokenizer", "nope"]) == 1
    assert "unknown tokenizer 'nope'" in capsys.readouterr().err
    assert main(["prepare", "--dataset", "nope", "--out", str(out)]) == 1
    assert "unknown dataset" in capsys.readouterr().err


def test_pystdlib_dataset(tmp_path):
    from tinylm.data.sources import stdlib_files

    m = prepare(
        dataset="pystdlib", out=tmp_path / "py", max_mb=0.3, tokenizer="bpe", vocab_size=300, progress=False
    )
    assert m.raw["sources"] == ["pystdlib"] and m.raw["tokens"] > 0
    docs = read_split_docs(tmp_path / "py", "train") + read_split_docs(tmp_path / "py", "val")
    tok = load_tokenizer(tmp_path / "py" / "tokenizer")
    first = stdlib_files()[0].read_text(encoding="utf-8").strip()
    assert first in {tok.decode(d) for d in docs}
