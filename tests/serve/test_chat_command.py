"""`tinylm chat` in a real pseudo-terminal: replies stream, /reset and /system work, the oldest turns
are dropped to fit the context, Ctrl-C stops a reply and the chat goes on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import TOK, backend, serving
from tinylm.generate import Generator
from tinylm.serve.chat_template import CHAT_STOP, render_chat

pexpect = pytest.importorskip("pexpect", reason="the test extra's pexpect is not installed")
SRC = str(Path(__file__).resolve().parents[2] / "src")


def spawn(*args: str):
    env = {**os.environ, "PYTHONPATH": SRC, "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "tinylm", "chat", *args], env=env, encoding="utf-8", timeout=60)
    child.expect("chatting with ")
    return child


def said(child) -> str:
    """What the chat printed up to its next prompt (terminal newlines undone)."""
    child.expect(r"\r\nyou> ")
    return child.before.replace("\r\n", "\n")


def test_local_chat_streams_resets_sets_system_and_drops_old_turns(ckpt: Path) -> None:
    gen = Generator.load(ckpt)
    child = spawn(str(ckpt), "--temperature", "0", "--max-tokens", "20", "--threads", "1")
    child.expect("you> ")
    child.sendline("Hi there")
    want = gen.generate(render_chat([{"role": "user", "content": "Hi there"}], TOK), 20, temperature=0, stop=CHAT_STOP)
    assert said(child).endswith(f"bot> {want.text.lstrip()}\n")

    child.sendline("/reset")
    assert "(conversation forgotten)" in said(child)
    child.sendline("Hi there")  # forgotten: the same first-turn reply again
    assert said(child).endswith(f"bot> {want.text.lstrip()}\n")

    child.sendline("/system Be kind.")
    assert "(system message: Be kind.)" in said(child)
    child.sendline("Tell me a story about a big blue sky")  # with the turns before, past the context of 96
    assert "(dropped the oldest turn to stay within the context" in said(child)
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_remote_chat_ctrl_c_stops_a_reply_and_the_chat_goes_on(ckpt: Path) -> None:
    with serving(backend(ckpt, delay=0.05), api_key="k") as url:  # ~4 s a reply: time to interrupt it
        child = spawn("--url", url, "--api-key", "k", "--max-tokens", "80", "--temperature", "0")
        child.expect("you> ")
        child.sendline("Hello")
        child.expect("bot> .")  # the reply has started streaming
        child.sendintr()
        assert "[stopped]" in said(child)
        child.sendline("/reset")
        assert "(conversation forgotten)" in said(child)
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0


def test_remote_chat_without_the_key_says_so_in_one_line(ckpt: Path, capsys) -> None:
    from tinylm.cli import main

    with serving(backend(ckpt), api_key="k") as url:
        assert main(["chat", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "answered 401" in err and "--api-key" in err
