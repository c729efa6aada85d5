"""--threads: one helper sets torch and the OpenMP/BLAS environment alike; the default backs off when busy."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tinylm import threads
from tinylm.cli import build_parser
from tinylm.errors import TinyLMError


@pytest.fixture(autouse=True)
def _restore(monkeypatch):
    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_use_threads_sets_torch_and_env():
    assert threads.use_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert all(threads.os.environ[v] == "1" for v in threads.ENV_VARS)
    with pytest.raises(TinyLMError, match="at least 1"):
        threads.use_threads(0)


def test_default_backs_off_for_busy_cores(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.2)
    assert threads.default_threads() == 4
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.1)
    assert threads.default_threads() == 3
    monkeypatch.setattr(threads, "busy_cores", lambda: 9.0)  # an overloaded machine still gets one thread
    assert threads.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting wins
    assert threads.default_threads() == 2


def test_busy_cores_sees_a_spinning_process():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert threads.busy_cores(window=0.5) >= 0.5 * threads.physical_cores() / (threads.os.cpu_count() or 1)
    finally:
        spin.kill()
        spin.wait()


@pytest.mark.parametrize("argv", [["train"], ["task", "addition"], ["task", "charlm", "--data", "x"], ["plan"],
                                  ["sample", "ck"], ["eval", "ck", "--data", "x"], ["quickstart"],
                                  ["quantize", "ck", "--scheme", "int8", "--out", "o"], ["distill"], ["finetune", "ck", "--data", "x"],
                                  ["export", "ck", "--to", "gguf", "--out", "m.gguf"], ["import", "m.gguf", "--out", "o"],
                                  ["chat", "ck"], ["serve", "ck"]])  # fmt: skip
def test_every_computing_command_takes_threads(argv):
    assert build_parser().parse_args([*argv, "--threads", "3"]).threads == 3


def test_threads_is_the_shared_option_everywhere():
    """One option, one help text: a command that adds its own --threads (bench's is a list to sweep) shows up here."""
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    shared = argparse.ArgumentParser()
    threads.add_threads_argument(shared)
    help_text = next(a.help for a in shared._actions if "--threads" in a.option_strings)
    own = {name for name, sub in commands.items() for a in sub._actions
           if "--threads" in a.option_strings and a.help != help_text}  # fmt: skip
    assert own == {"bench"}
