"""Fixtures of the calibrated-quantization tests: a float checkpoint with a tokenizer and calibration text."""

from __future__ import annotations

import string

import pytest

from tests.conftest import tiny_llama
from tinylm.checkpoint import save_checkpoint
from tinylm.cli import main
from tinylm.model import Model
from tinylm.tokenizer.char import CharTokenizer

TEXT = "".join(f"{string.ascii_lowercase[i % 26:]} the cat sat on the mat {i}.\n" for i in range(60))


@pytest.fixture
def text_ckpt(tmp_path):
    tok = CharTokenizer.train([TEXT])
    model = Model(tiny_llama(vocab_size=tok.vocab_size, dim=64, hidden_dim=128, tie_embeddings=False)).eval()
    (tmp_path / "calib.txt").write_text(TEXT)
    return save_checkpoint(tmp_path / "float", model, tok), tmp_path / "calib.txt"


@pytest.fixture
def one_line_error(capsys):
    """Runs the CLI on argv, checks it failed with one line, and returns that line."""

    def run(argv: list[str]) -> str:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err

    return run
