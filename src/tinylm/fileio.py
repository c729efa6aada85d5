"""Atomic writes: a crash never leaves a half-written file where a good one stood."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        _remove_stale(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise os_error(e, path) from None
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the permissions a plain open() would
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as e:
        if (oe := as_os_error(e)) is None:
            raise
        raise os_error(oe, _blame(oe, path, tmp)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces `path` as a whole.

    Crash-safe at every instant: the temporary directory is fsynced and renamed to `.NAME.new` (complete
    from then on), then `path` -> `.NAME.old`, `.NAME.new` -> `path`, and `.NAME.old` is removed. Whatever
    a crash leaves, `recover_dir` (run by the next save, by a resuming run, and by readers that find `path`
    missing) puts the newest complete directory back at `path`. A reader that finds `path` never changes
    it: a live writer may be between its renames.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise os_error(e, path) from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private
        yield tmp
        mask = _umask()
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.chmod(f, 0o666 & ~mask)  # some writers (safetensors) create private files
        _fsync_dir(tmp)
        os.replace(tmp, _aside(path, "new"))
        try:
            _fsync_dir(path.parent)
            _promote(path)
        except BaseException:
            _roll_back(path)
            raise
    except Exception as e:
        if (oe := as_os_error(e)) is None:
            raise
        raise os_error(oe, _blame(oe, path, tmp)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _aside(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}")


def _promote(path: Path) -> None:
    """`.NAME.new` (complete) becomes `path`; the replaced directory is removed only once it is gone."""
    new, old = _aside(path, "new"), _aside(path, "old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)  # a complete `path` exists, so this older copy is not needed
        os.replace(path, old)
    os.replace(new, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _roll_back(path: Path) -> None:
    """After a failed swap, put things back as they were before the save (best effort: where a rename
    fails again, the complete directories stay for `recover_dir`)."""
    new, old = _aside(path, "new"), _aside(path, "old")
    with contextlib.suppress(OSError):
        if old.is_dir() and not path.exists():
            os.replace(old, path)
        if path.exists() or not old.exists():
            shutil.rmtree(new)


def recover_dir(path: str | os.PathLike[str]) -> Path:
    """Finish whatever swap of `path` a crash interrupted, so that `path` holds the newest complete
    directory, and remove temporary directories and files left beside it by dead processes."""
    path = Path(path)
    new, old = _aside(path, "new"), _aside(path, "old")
    try:
        if new.is_dir():
            _promote(path)
        elif old.is_dir() and not path.exists():
            os.replace(old, path)
            _fsync_dir(path.parent)
        elif old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    except FileNotFoundError:
        pass  # another process finished the same recovery first
    _remove_stale(path)
    return path


def pending_dir(path: str | os.PathLike[str]) -> Path | None:
    """The complete `.NAME.new` a crash left beside an existing `path` (which `recover_dir` would promote)."""
    new = _aside(Path(path), "new")
    return new if new.is_dir() else None


def _remove_stale(path: Path) -> None:
    """Temporaries are named .NAME.<pid>.<random>.tmp: those of processes that are gone are garbage."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there; assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


# What the user can do about each operating-system error while writing.
_FIXES = {
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "choose a location you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a location you can write to, or fix its permissions"),
    errno.ENOSPC: ("no space left on device", "free some space or choose another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another disk"),
    errno.EISDIR: ("is a directory", "give a file path, not a folder"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
}


def _blame(e: OSError, path: Path, tmp: Path) -> str | os.PathLike[str]:
    """The path to name for an error while writing `path` through `tmp`: `path`, unless the error is
    about another file (say, an input read while writing)."""
    name = e.filename
    if name is None or str(name).startswith(str(tmp)) or Path(name).name.startswith(f".{path.name}."):
        return path
    return name


class DiskError(TinyLMError):
    """An OSError as one line; keeps it, so an enclosing atomic write can name its own path instead."""

    def __init__(self, message: str, cause: OSError):
        super().__init__(message)
        self.cause = cause


def as_os_error(e: BaseException) -> OSError | None:
    """`e` as an OSError, also when a library wrapped one (safetensors' Rust writer reports "(os error 28)")."""
    if isinstance(e, OSError):
        return e
    if isinstance(e, DiskError):
        return e.cause
    m = re.search(r"\(os error (\d+)\)", str(e))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def os_error(e: OSError, path: str | os.PathLike[str] | None = None) -> DiskError:
    """An operating-system error as one line naming the path (ours, not a temporary's) and the fix."""
    what, fix = _FIXES.get(e.errno or 0, (e.strerror or str(e), "check the path and the disk"))
    where = path if path is not None else e.filename
    cause = OSError(e.errno, e.strerror, None if where is None else str(where))
    return DiskError(f"{where}: {what}; {fix}" if where is not None else f"{what}; {fix}", cause)
