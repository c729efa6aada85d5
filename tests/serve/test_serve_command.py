"""`tinylm serve` as a user starts it: a subprocess that listens, takes its key from the environment,
and says in one line why it cannot start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def tinylm(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinylm", *args], env={**os.environ, "PYTHONPATH": SRC, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_listens_on_loopback_with_the_key_from_the_environment(ckpt: Path) -> None:
    port = free_port()
    proc = tinylm("serve", str(ckpt), "--port", str(port), "--threads", "1", TINYLM_API_KEY="env-key")
    try:
        assert "serving 'tiny' at http://127.0.0.1:" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # up once /health answers
            try:
                assert json.load(urllib.request.urlopen(url + "/health")) == {"status": "ok"}
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        try:
            urllib.request.urlopen(url + "/v1/models")
            raise AssertionError("the API answered without the key")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        req = urllib.request.Request(url + "/v1/models", headers={"Authorization": "Bearer env-key"})
        assert json.load(urllib.request.urlopen(req))["data"][0]["id"] == "tiny"
        assert "<title>tinylm chat</title>" in urllib.request.urlopen(url + "/").read().decode()
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_says_in_one_line_why_it_cannot_start(ckpt: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = tinylm("serve", str(ckpt), "--port", str(taken.getsockname()[1]))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1 and "cannot listen on 127.0.0.1:" in err and "--port" in err
    proc = tinylm("serve", str(tmp_path / "missing"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1 and "missing" in err
