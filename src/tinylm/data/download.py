"""Named public files and a resumable, verified downloader (stdlib urllib only).

Files land in the cache directory (`$TINYLM_CACHE`, else `~/.cache/tinylm`). A partial download is
kept as `<name>.part` and resumed with an HTTP Range request; a finished one is checked against its
known size and sha256 before it is renamed into place, so the cache never holds a bad file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from tinylm.errors import TinyLMError


@dataclass(frozen=True)
class Remote:
    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None


_HF_TINYSTORIES = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
_RAW_GITHUB = "https://raw.githubusercontent.com/"
REMOTES = {
    "tinystories": Remote(_HF_TINYSTORIES + "TinyStoriesV2-GPT4-valid.txt", "TinyStoriesV2-GPT4-valid.txt"),
    "tinystories-train": Remote(
        _HF_TINYSTORIES + "TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-train.txt"
    ),
    "shakespeare": Remote(
        _RAW_GITHUB + "karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "tinyshakespeare.txt",
        1115394,
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    "llama2-tokenizer": Remote(
        _RAW_GITHUB + "karpathy/llama2.c/master/tokenizer.model",
        "llama2_tokenizer.model",
        499723,
        "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("TINYLM_CACHE") or Path.home() / ".cache" / "tinylm")


def fetch(name: str, progress: bool = True) -> Path:
    """The cached path of a named remote file (see REMOTES), downloading it first if needed."""
    remote = REMOTES.get(name)
    if remote is None:
        raise TinyLMError(f"unknown download {name!r}; known: {', '.join(REMOTES)}")
    return download(remote.url, cache_dir() / remote.filename, remote.size, remote.sha256, progress)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, size: int | None, sha256: str | None, url: str) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        path.unlink()
        raise TinyLMError(f"{url}: downloaded {actual:,} bytes, expected {size:,}; run again to retry")
    if sha256 is not None and _sha256(path) != sha256:
        path.unlink()
        raise TinyLMError(f"{url}: checksum mismatch (sha256 is not {sha256[:12]}…); run again to retry")


def download(
    url: str, dest: str | Path, size: int | None = None, sha256: str | None = None, progress: bool = True
) -> Path:
    """Download `url` to `dest` unless it is already there and verifies; resume a partial download."""
    dest = Path(dest)
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        if sha256 is None or _sha256(dest) == sha256:
            return dest  # cache hit
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "tinylm"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the partial file is complete
            response = None
        else:
            raise TinyLMError(f"{url}: HTTP {e.code} {e.reason}; check the URL or try later") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TinyLMError(
            f"cannot download {url} ({reason}); check the connection, or put the file at {dest}"
        ) from None
    if response is not None:
        with response:
            if have and response.status != 206:
                have = 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else size
            bar = tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
                leave=False,
            )
            try:
                with open(part, "ab" if have else "wb") as f:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        f.write(block)
                        bar.update(len(block))
            except (OSError, http.client.HTTPException) as e:
                raise TinyLMError(f"{url}: download interrupted ({e}); run again to resume") from None
            finally:
                bar.close()
        if size is None and total is not None and part.stat().st_size != total:
            raise TinyLMError(f"{url}: got {part.stat().st_size:,} of {total:,} bytes; run again to resume")
    _verify(part, size, sha256, url)
    os.replace(part, dest)
    return dest
