"""The downloader over real HTTP against a loopback server: cache hit, resume with Range, checksums."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tinylm.data.download import download
from tinylm.errors import TinyLMError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()
STORIES = "\n<|endoftext|>\n".join(
    f"Story {i}: a cat named Tom {i} found {i * 7} red balls." for i in range(40)
)
FILES = {"/file.bin": PAYLOAD, "/stories.txt": STORIES.encode()}


class Handler(http.server.BaseHTTPRequestHandler):
    log: ClassVar[list[str | None]] = []  # the Range header of each request
    honour_range = True

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        Handler.log.append(rng)
        data = FILES.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng and Handler.honour_range else 0
        if start >= len(data):
            self.send_response(416)
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.log, Handler.honour_range = [], True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_then_cache_hit(server, tmp_path):
    dest = tmp_path / "cache" / "file.bin"
    assert download(f"{server}/file.bin", dest, len(PAYLOAD), SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and Handler.log == [None]
    download(f"{server}/file.bin", dest, len(PAYLOAD), SHA, progress=False)
    assert Handler.log == [None]  # served from the cache: no second request
    assert not dest.with_name("file.bin.part").exists()


def test_resume_partial_file_with_range(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:30000])
    download(f"{server}/file.bin", dest, sha256=SHA, progress=False)
    assert Handler.log == ["bytes=30000-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path):
    Handler.honour_range = False
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"garbage" * 10)
    download(f"{server}/file.bin", dest, len(PAYLOAD), SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_partial_file_gets_416(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD)
    download(f"{server}/file.bin", dest, len(PAYLOAD), SHA, progress=False)
    assert Handler.log == [f"bytes={len(PAYLOAD)}-"] and dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(TinyLMError, match="checksum mismatch"):
        download(f"{server}/file.bin", dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not dest.with_name("file.bin.part").exists()
    with pytest.raises(TinyLMError, match="expected 5"):
        download(f"{server}/file.bin", dest, size=5, progress=False)
    # A cached file that no longer verifies is fetched again.
    dest.write_bytes(b"x" * len(PAYLOAD))
    download(f"{server}/file.bin", dest, len(PAYLOAD), SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_and_connection_errors(server, tmp_path):
    with pytest.raises(TinyLMError, match="HTTP 404"):
        download(f"{server}/missing", tmp_path / "m", progress=False)
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TinyLMError, match="cannot download"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "n", progress=False)


def test_named_dataset_downloads_into_the_cache(server, tmp_path, monkeypatch):
    from tinylm.data import download as dl
    from tinylm.data.prepare import prepare

    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        dl.REMOTES, "tinystories", dl.Remote(f"{server}/stories.txt", "stories.txt", len(STORIES))
    )
    m = prepare(
        dataset="tinystories", out=tmp_path / "ts", tokenizer="char", val_fraction=0.1, progress=False
    )
    assert (tmp_path / "cache" / "stories.txt").read_text() == STORIES
    assert m.raw["clean"]["documents_out"] == 40  # split on <|endoftext|>
    prepare(dataset="tinystories", out=tmp_path / "ts", tokenizer="char", progress=False)
    assert Handler.log == [None]  # the second run used the cache
