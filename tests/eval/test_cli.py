"""`tinylm eval` end to end, and bad input as one clear line."""

from __future__ import annotations

import json

import pytest

from tests.eval.conftest import random_checkpoint
from tinylm.cli import main
from tinylm.errors import TinyLMError
from tinylm.eval import evaluate_models
from tinylm.tokenizer import CharTokenizer


@pytest.fixture
def text_file(tmp_path, speeches):
    path = tmp_path / "val.txt"
    path.write_text("\n\n".join(speeches[:80]), encoding="utf-8")
    return path


def test_cli_table_json_and_markdown(tmp_path, text_file, char_tok, capsys):
    random_checkpoint(tmp_path / "a", "llama", char_tok)
    random_checkpoint(tmp_path / "b", "gpt2", char_tok, seed=1)
    argv = ["eval", str(tmp_path / "a"), str(tmp_path / "b"), "--data", str(text_file), "--reference",
            str(tmp_path / "a"), "--protocol", "sliding", "--stride", "16", "--max-tokens", "600", "--quiet",
            "--json", str(tmp_path / "out.json"), "--markdown", str(tmp_path / "out.md")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "protocol: sliding: windows of 32 tokens every 16 tokens over the document stream" in out
    assert "KL (ref || model)" in out and "100.00%" in out
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [r["model"] for r in results] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert [r["tokens"] for r in results] == [600, 600] and results[0]["kl"] == 0 and results[1]["kl"] > 0
    assert (tmp_path / "out.md").read_text().count("\n| ") == 3  # header and two rows
    assert main(["eval", str(tmp_path / "a"), "--data", str(text_file), "--quiet", "--json", "-",
                 "--engine", "numpy", "--max-tokens", "100"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["results"][0]["tokens"] == 100


def test_help_shows_examples_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "tinylm eval runs/a runs/a-q8 --data notes/ --reference runs/a" in out
    assert "100000" in out and "windows (default)" in " ".join(out.split())


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line(tmp_path, text_file, char_tok, capsys):
    random_checkpoint(tmp_path / "m", "llama", char_tok)
    (tmp_path / "empty.txt").write_text("  \n\n ")
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 8)
    m = str(tmp_path / "m")
    assert "no text to evaluate" in _error(capsys, ["eval", m, "--data", str(tmp_path / "empty.txt")])
    assert "binary" in _error(capsys, ["eval", m, "--data", str(tmp_path / "blob.txt")])
    random_checkpoint(tmp_path / "bare", "gpt2", None)
    assert "has no tokenizer" in _error(capsys, ["eval", str(tmp_path / "bare"), "--data", str(text_file)])
    other = CharTokenizer.train(["abc"])
    random_checkpoint(tmp_path / "small", "gpt2", other)
    err = _error(capsys, ["eval", m, "--data", str(text_file), "--reference", str(tmp_path / "small")])
    assert "vocabulary" in err
    assert "unknown protocol" in _error(capsys, ["eval", m, "--data", str(text_file), "--protocol", "chunks"])


def test_in_memory_pairs_and_empty_documents(char_tok):
    from tests.conftest import tiny_llama
    from tinylm.model import Model

    model = Model(tiny_llama(vocab_size=char_tok.vocab_size))
    with pytest.raises(TinyLMError, match="no text to evaluate"):
        evaluate_models([(model, char_tok)], ["", "  "], progress=False)
    [r] = evaluate_models([(model, char_tok, "fresh")], ["First Citizen:\nSpeak."], progress=False)
    assert (r.model, r.tokens) == ("fresh", 21)  # [eos] + 21 characters, the eos context only
