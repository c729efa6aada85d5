"""Where documents come from: text and JSONL files (optionally gzipped), directories, globs, and the
Python standard library's own sources as an offline corpus. Everything streams: a file is read in
1 MiB chunks and split into documents as it goes."""

from __future__ import annotations

import codecs
import glob
import gzip
import itertools
import json
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tinylm.errors import TinyLMError

CHUNK = 1 << 20
# Longer documents (say, a file without line breaks) are cut into pieces of at most this many characters:
# cleaning, tokenizer training and encoding need memory in proportion to the longest text handed over at once.
MAX_DOC_CHARS = 1 << 20
EOT = "<|endoftext|>"
# How a text file is split into documents: a name below, or any other literal string.
SEPARATORS = {
    "auto": None,  # "<|endoftext|>" if the file's first chunk has one, else "blank"
    "blank": r"\r?\n(?:[ \t]*\r?\n)+",  # one or more blank lines
    "line": r"\r?\n",  # one document per line
    "eot": re.escape(EOT),
    "file": None,  # the whole file is one document
}
TEXT_SUFFIXES = {".txt", ".text", ".md", ".jsonl"}
_SKIP_STDLIB = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass
class SourceStats:
    files: int = 0
    bytes: int = 0  # raw bytes read (after gunzip)
    invalid_utf8_bytes: int = 0  # replaced by U+FFFD
    cuts: int = 0  # cuts made in documents longer than MAX_DOC_CHARS


def _looks_binary(sample: bytes) -> bool:
    """NUL bytes, or more than 10% control bytes other than whitespace, in the first chunk."""
    if b"\x00" in sample:
        return True
    control = sum(1 for b in sample if b < 32 and b not in b"\t\n\r\f\v\x1b")
    return control > 0.1 * max(1, len(sample))


class _Decoder:
    """Incremental UTF-8 decoding that replaces invalid bytes and counts them."""

    def __init__(self, stats: SourceStats):
        self.stats = stats
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")

    def __call__(self, data: bytes, final: bool = False) -> str:
        self.stats.bytes += len(data)
        out: list[str] = []
        while True:
            try:
                out.append(self.decoder.decode(data, final))
                return "".join(out)
            except UnicodeDecodeError as e:
                # Decode what came before the bad bytes, count and replace them, go on after them.
                buffered = self.decoder.getstate()[0]
                self.decoder.reset()
                whole = buffered + data
                out.append(whole[: e.start].decode("utf-8"))
                out.append("\ufffd")
                self.stats.invalid_utf8_bytes += e.end - e.start
                data = whole[e.end :]


def _open(path: Path) -> IO[bytes]:
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise TinyLMError(f"{path}: cannot read ({e.strerror}); check the path") from None


def _chunks(path: Path, stats: SourceStats) -> Iterator[str]:
    """Decoded text of `path` in ~1 MiB pieces, refusing binary files."""
    decode = _Decoder(stats)
    with _open(path) as f:
        first = True
        while True:
            try:
                data = f.read(CHUNK)
            except (OSError, EOFError) as e:
                raise TinyLMError(f"{path}: cannot read ({e}); is the file complete?") from None
            if first and _looks_binary(data[:8192]):
                raise TinyLMError(
                    f"{path}: looks like a binary file (NUL or control bytes), not text; remove it from the input"
                )
            first = False
            if not data:
                tail = decode(b"", final=True)
                if tail:
                    yield tail
                return
            yield decode(data)


def _split(chunks: Iterator[str], separator: str, stats: SourceStats) -> Iterator[str]:
    """Documents of a text stream, split by a separator name from SEPARATORS or a literal string, in
    pieces of at most MAX_DOC_CHARS (so the buffer stays bounded however long a document runs)."""
    first = next(chunks, "")
    if separator == "auto":
        separator = "eot" if EOT in first else "blank"
    pattern = None if separator == "file" else re.compile(SEPARATORS.get(separator) or re.escape(separator))
    buf = first
    for chunk in itertools.chain(chunks, [None]):
        buf += chunk or ""
        parts = pattern.split(buf) if pattern is not None else [buf]
        buf = parts.pop() if chunk is not None else ""  # the last part may continue in the next chunk
        if len(buf) > MAX_DOC_CHARS:  # no end in sight: pass on its complete pieces now
            *head, buf = _pieces(buf, stats)
            parts += head
        for p in parts:
            for piece in _pieces(p, stats):
                if piece.strip():
                    yield piece.strip()


def _pieces(doc: str, stats: SourceStats) -> list[str]:
    """`doc` in pieces of at most MAX_DOC_CHARS, each cut after a space or line break near its end if
    there is one (else mid-word)."""
    pieces, start = [], 0
    while len(doc) - start > MAX_DOC_CHARS:
        end = start + MAX_DOC_CHARS
        space = max(doc.rfind(" ", end - MAX_DOC_CHARS // 10, end), doc.rfind("\n", end - MAX_DOC_CHARS // 10, end))
        end = space + 1 if space > start else end
        pieces.append(doc[start:end])
        start = end
        stats.cuts += 1
    pieces.append(doc[start:])
    return pieces


def _lines(chunks: Iterator[str]) -> Iterator[str]:
    buf = ""
    for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split("\n")
        yield from lines
    if buf:
        yield buf


def _jsonl(path: Path, chunks: Iterator[str], field: str) -> Iterator[str]:
    for lineno, line in enumerate(_lines(chunks), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TinyLMError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line") from None
        text = obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise TinyLMError(f"{path}:{lineno}: no string field {field!r}; pick the field with --text-field")
        if text.strip():
            yield text


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named by `inputs`: files as given, directories searched recursively for text/JSONL
    (and their .gz), glob patterns expanded; sorted within each input so the order is reproducible."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and Path(f.name.removesuffix(".gz")).suffix in TEXT_SUFFIXES
            )
            if not found:
                raise TinyLMError(f"{p}: directory has no .txt/.md/.jsonl files (or .gz of them)")
            files.extend(found)
        elif glob.has_magic(str(item)):
            found = sorted(Path(f) for f in glob.glob(str(item), recursive=True) if Path(f).is_file())
            if not found:
                raise TinyLMError(f"{item}: no files match this pattern")
            files.extend(found)
        else:
            raise TinyLMError(f"{item}: no such file or directory")
    return files


def read_documents(
    files: Iterable[Path], stats: SourceStats, separator: str = "auto", text_field: str = "text"
) -> Iterator[str]:
    """Documents of `files` in order; `.jsonl` (optionally `.gz`) read `text_field`, other files split by `separator`."""
    for path in files:
        stats.files += 1
        chunks = _chunks(path, stats)
        if Path(path.name.removesuffix(".gz")).suffix == ".jsonl":
            for text in _jsonl(path, chunks, text_field):
                yield from _pieces(text, stats)
        else:
            yield from _split(chunks, separator, stats)


def pydoc_file(cache: Path) -> Path:
    """This interpreter's English help text as one file, a document per topic: the language reference
    pages that `help("if")` shows (`pydoc_data.topics`, about half a megabyte of prose with code
    examples), written under `cache` once per Python version. Prose to learn, with nothing to download."""
    import sys

    from tinylm.fileio import write_text

    path = cache / f"pydoc_topics_{sys.version_info.major}.{sys.version_info.minor}.txt"
    if not path.is_file():
        try:
            from pydoc_data.topics import topics
        except ImportError:
            raise TinyLMError("this Python has no pydoc_data (its help text); use another --dataset") from None
        write_text(path, "".join(f"{text.strip()}\n{EOT}\n" for _, text in sorted(topics.items())))
    return path


def stdlib_files(max_mb: float | None = None) -> list[Path]:
    """The running interpreter's standard-library `.py` files (no tests, no site-packages), sorted,
    up to `max_mb` megabytes: a real text corpus on every machine, with nothing to download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        f for f in root.rglob("*.py") if not _SKIP_STDLIB.intersection(f.relative_to(root).parts[:-1])
    )
    if not files:
        raise TinyLMError(
            f"{root}: no standard-library sources found on this interpreter; use another --dataset"
        )
    if max_mb is None:
        return files
    budget, picked = max_mb * 1e6, []
    for f in files:
        size = f.stat().st_size
        if budget - size < 0 and picked:
            break
        picked.append(f)
        budget -= size
    return picked
