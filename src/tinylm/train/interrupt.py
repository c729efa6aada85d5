"""Stopping a run cleanly: the first Ctrl-C (or SIGTERM) finishes the current step, saves last/ and
stops; a second one aborts. Shared by both trainers (torch-free)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any, Protocol

from tqdm import tqdm


class Stoppable(Protocol):
    stop_requested: bool


@contextlib.contextmanager
def on_interrupt(run: Stoppable, announce: bool = True) -> Iterator[None]:
    """Within the block, a signal sets `run.stop_requested` (the loop checks it after each step)."""

    def handler(signum: int, frame: Any) -> None:
        if run.stop_requested:
            raise KeyboardInterrupt
        run.stop_requested = True
        if announce:
            tqdm.write("stopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    old = {}
    with contextlib.suppress(ValueError):  # not the main thread: no signal handlers
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
