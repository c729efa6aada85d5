"""One process at a time per run folder: `<run>/.lock` is held (an OS file lock, released by the
kernel when its owner exits or is killed) and names the owner's pid for the error message."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.fileio import os_error

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # run folder -> times this process entered it (re-entrant: session, then trainer)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Own `folder` for the duration; another process gets one line naming the owner's pid. A lock file
    left by a process that died is simply taken over (its OS lock went with it)."""
    folder = Path(folder).resolve()
    if folder in _held:
        _held[folder] += 1
        try:
            yield
        finally:
            _held[folder] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise os_error(e, folder) from None
    try:
        if not _try_lock(fd):
            os.lseek(fd, 0, os.SEEK_SET)
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            raise TinyLMError(f"{folder} is in use by another tinylm process (pid {owner}); wait for it to "
                              "finish, stop it, or choose another --out")  # fmt: skip
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[folder] = 1
        try:
            yield
        finally:
            del _held[folder]
    finally:
        os.close(fd)  # releases the OS lock


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
