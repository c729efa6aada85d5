"""A tiny served model: a random checkpoint with a character tokenizer, behind a real uvicorn server
on a free loopback port, and the official `openai` client pointed at it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import tiny_llama
from tests.generate.conftest import _one_thread, random_model  # noqa: F401 (_one_thread: autouse here too)
from tinylm.checkpoint import save_checkpoint
from tinylm.generate import Generator
from tinylm.tokenizer import CharTokenizer

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")

from tinylm.serve.app import create_app  # noqa: E402
from tinylm.serve.backend import Backend  # noqa: E402

TOK = CharTokenizer(list(" \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?:'"))
CFG = tiny_llama(vocab_size=TOK.vocab_size, context_length=96)
MODEL = "tiny"


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("serve") / MODEL, random_model(CFG, seed=3), TOK)


class Throttled:
    """An engine whose every call waits for `gate` (when given) and then `delay` seconds: makes
    generations last long enough to disconnect or stop mid-way, or holds them to fill the queue."""

    def __init__(self, engine, delay: float = 0.0, gate: threading.Event | None = None):
        self._engine, self._delay, self._gate = engine, delay, gate

    def __getattr__(self, name: str):
        attr = getattr(self._engine, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self._gate is not None:
                self._gate.wait()
            time.sleep(self._delay)
            return attr(*args, **kwargs)

        return call


def backend(ckpt: Path, delay: float = 0.0, gate: threading.Event | None = None, **options) -> Backend:
    """The checkpoint as the server loads it, its engine throttled when asked."""
    if not (delay or gate):
        return Backend.load(ckpt, **options)
    gen = Generator.load(ckpt)
    return Backend(Generator(Throttled(gen.engine, delay, gate), gen.tokenizer), MODEL, **options)


@contextmanager
def serving(backend: Backend, api_key: str | None = None) -> Iterator[str]:
    """`backend` behind a real uvicorn server on a free 127.0.0.1 port, in a thread; yields its URL."""
    app = create_app(backend, api_key=api_key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url(ckpt: Path) -> Iterator[str]:
    with serving(backend(ckpt, max_batch=8)) as u:
        yield u


@pytest.fixture
def client(url: str):
    openai = pytest.importorskip("openai", reason="the test extra's openai client is not installed")
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
