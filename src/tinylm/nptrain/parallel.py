"""Worker processes for the NumPy trainer's data parallelism: with threads > 1 the batch is split
between the main process and threads - 1 workers, each with its own activations and gradients.

Why processes, not threads: a step is thousands of NumPy calls, and between them each thread needs
Python's GIL, so two threads of one process keep waiting for each other. Measured on gpt-micro (half a
batch 8 x 256 each, one BLAS thread): 99 ms alone, 120 ms for each of two threads of one process,
104 ms for each of two processes.

How the processes share the work without copying it: the parameters and every part's gradients live
in shared memory (`shared_zeros`), mapped into the workers, which are forks of the process that built
the model. So a worker reads the parameters the optimizer updated in place, and the main process sums
the gradients a worker wrote. Through a pipe a worker receives only its part of the batch and answers
with the loss.
"""

from __future__ import annotations

import mmap
import multiprocessing
import signal
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from tinylm.blas import set_blas_threads
from tinylm.errors import TinyLMError
from tinylm.nptrain.memory import keep_freed_memory


def shared_zeros(size: int, dtype: np.dtype) -> np.ndarray:
    """A zeroed 1-D array in memory shared with the processes forked after it (an anonymous mmap)."""
    return np.frombuffer(mmap.mmap(-1, max(1, size * dtype.itemsize)), dtype, count=size)


class Workers:
    """`count` forks of this process, worker i running job(i, *args) for each `send(i, *args)`."""

    def __init__(self, count: int, job: Callable[..., Any]):
        context = multiprocessing.get_context("fork")  # the workers start with the model in memory
        self.pipes, self.processes = [], []
        for i in range(1, count + 1):
            ours, theirs = context.Pipe()
            worker = context.Process(target=_serve, args=(i, job, theirs, ours), daemon=True, name=f"nptrain-{i}")
            worker.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(worker)
        # the workers stop when the model is dropped, or when this process ends (their pipes close)
        weakref.finalize(self, _stop, list(self.pipes), list(self.processes))

    def send(self, i: int, *args: Any) -> None:
        try:
            self.pipes[i - 1].send(args)
        except OSError:
            raise _died() from None

    def results(self, workers: list[int]) -> list[Any]:
        """Each worker's answer to its last `send`; waits for all of them, then re-raises an error."""
        try:
            answers = [self.pipes[i - 1].recv() for i in workers]
        except (EOFError, OSError):  # the worker's end of the pipe closed, or was reset
            raise _died() from None
        for ok, value in answers:
            if not ok:
                raise value
        return [value for _, value in answers]


def _died() -> TinyLMError:
    return TinyLMError("a worker process of the NumPy trainer has died (out of memory?); "
                       "train with fewer --threads or a smaller --batch-size")  # fmt: skip


def _serve(i: int, job: Callable[..., Any], pipe, main_end) -> None:
    """A worker's loop: one BLAS thread (the other parts run on the other cores), freed memory kept
    for the next step as the trainer keeps it (tinylm.nptrain.memory), Ctrl-C and SIGTERM left to
    the main process (which finishes the step it is in, with the workers' help, before it stops;
    a worker stops when its pipe closes)."""
    main_end.close()
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    set_blas_threads(1)
    keep_freed_memory()
    while True:
        try:
            args = pipe.recv()
        except EOFError:  # the main process is gone
            return
        if args is None:
            return
        try:
            pipe.send((True, job(i, *args)))
        except Exception as e:  # handed to the main process, which raises it
            pipe.send((False, e))


def _stop(pipes: list, processes: list) -> None:
    for pipe in pipes:
        try:
            pipe.send(None)
            pipe.close()
        except OSError:
            pass
    for process in processes:
        process.join(timeout=1.0)
