"""`tinylm export` and `tinylm import` from the command line."""

from __future__ import annotations

from tests.conftest import tiny_llama
from tests.formats.conftest import save
from tinylm.cli import main
from tinylm.formats import FORMATS


def test_formats_table(capsys):
    assert main(["export", "--formats"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["format", "families", "GQA"]
    for name in FORMATS:
        assert any(line.startswith(name + " ") for line in out.splitlines())


def test_export_then_import(tmp_path, capsys, sp_tok):
    save(tmp_path / "ckpt", tiny_llama(vocab_size=sp_tok.vocab_size), sp_tok)
    out = tmp_path / "q.bin"
    assert (
        main(["export", str(tmp_path / "ckpt"), "--to", "llama2c", "--version", "2", "--out", str(out)]) == 0
    )
    assert capsys.readouterr().out.split() == ["wrote", str(out), "wrote", str(tmp_path / "tokenizer.bin")]
    assert main(["import", str(out), "--out", str(tmp_path / "back")]) == 0
    captured = capsys.readouterr()
    assert "imported llama2c" in captured.out and "tokenizer: llama2c" in captured.out
    assert "note: tokenizer:" in captured.err


def test_mistakes_are_one_line(tmp_path, capsys):
    save(tmp_path / "ckpt", tiny_llama())
    cases = [
        (["export", str(tmp_path / "ckpt"), "--to", "hf"], "missing --out"),
        (
            ["export", str(tmp_path / "ckpt"), "--to", "hf", "--out", "x", "--quant", "q8_0"],
            "--quant does not apply to --to hf",
        ),
        (
            ["export", str(tmp_path / "ckpt"), "--to", "llmc", "--out", str(tmp_path / "m.bin")],
            "llm.c cannot hold this model",
        ),
        (
            ["import", str(tmp_path / "ckpt" / "model.safetensors"), "--out", str(tmp_path / "o")],
            "not a format tinylm imports",
        ),
        (["import", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")], "no such file or folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"tinylm {argv[0]}: error: ") and message in err and err.count("\n") == 1
