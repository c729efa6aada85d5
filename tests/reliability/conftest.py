"""Helpers for the fault-injection suite: run the CLI in-process and check that its output is one line."""

from __future__ import annotations

import pytest

from tinylm.cli import main


@pytest.fixture
def one_line(capsys):
    """`one_line(argv, *words)`: run `tinylm argv`, expect exit 1 and a single error line holding `words`."""

    def check(argv: list[str], *words: str) -> str:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert code == 1, err
        assert "Traceback" not in err and "\n" not in err, err
        for w in words:
            assert w in err, err
        return err

    return check
