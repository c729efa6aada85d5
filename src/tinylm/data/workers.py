"""An ordered map over worker processes that Ctrl-C, SIGTERM and kill -9 cannot hang.

multiprocessing.Pool shares one locked queue between its workers: a worker killed while holding that lock
(Ctrl-C reaches the whole process group) leaves the main process blocked forever in `terminate()`, and
each dying worker prints a traceback. Here each worker has its own pipe and one batch in flight, nothing
is shared, Ctrl-C is left to the main process, and shutting down is a kill of every worker.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tinylm.errors import TinyLMError


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, init: Callable[..., None],
                initargs: tuple = ()) -> Iterator[Any]:  # fmt: skip
    """`fn(item)` for each item, in order, computed in `workers` processes that each first run `init`."""
    # fork where there is one: spawn would re-import the caller's __main__ (a script without a
    # `if __name__ == "__main__"` guard would start over)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    conns, procs = [], []
    try:
        for _ in range(workers):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(fn, init, initargs, theirs), daemon=True)
            p.start()
            theirs.close()
            conns.append(mine)
            procs.append(p)
        it, in_flight = iter(items), deque()  # the worker of each batch sent, in the order sent
        for w in range(workers):
            if _send(conns[w], it):
                in_flight.append(w)
        while in_flight:
            w = in_flight.popleft()
            try:
                ok, result = conns[w].recv()
            except EOFError:
                raise TinyLMError(f"a worker process died (exit code {procs[w].exitcode}), perhaps out of "
                                  "memory; try fewer --workers") from None  # fmt: skip
            if not ok:
                raise result
            # the worker is idle now, waiting for its next batch (so sending cannot block on a full pipe)
            if _send(conns[w], it):
                in_flight.append(w)
            yield result
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.join()


def _send(conn: Any, it: Iterator[Any]) -> bool:
    for item in it:
        conn.send(item)
        return True
    return False


def _serve(fn: Callable[[Any], Any], init: Callable[..., None], initargs: tuple, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C, then kills us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (not the handler forked from the CLI)
    try:
        init(*initargs)
        while True:
            item = conn.recv()
            try:
                conn.send((True, fn(item)))
            except Exception as e:  # the main process raises it
                conn.send((False, e))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the main process is gone or stopping: leave quietly
