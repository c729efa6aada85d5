"""CPU threads for every command that computes: one `--threads` option and one default.

Why a default of our own: PyTorch's (and OpenBLAS's) OpenMP threads spin-wait between parallel regions. On
a laptop where another process keeps a core busy, a pool sized to all cores fights it for every core and a
training step can get several times slower than with fewer threads. So the default is the physical cores
that are idle right now (measured over a short window at start), at least 1.

Torch-free: commands call `use_threads` before importing torch or NumPy, so the OpenMP and BLAS pools
read the same count from the environment when they start; a torch or NumPy (OpenBLAS, `tinylm.blas`)
already imported is told directly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_FRAMEWORK_THREADS")


def add_threads_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch, OpenMP and BLAS (default: OMP_NUM_THREADS if set, else the "
                        "physical cores idle at start, at least 1: a busy core makes spinning threads crawl)")  # fmt: skip


def use_threads(n: int | None) -> int:
    """Use `n` threads (None: `default_threads()`) everywhere; returns the count in use."""
    from tinylm.errors import TinyLMError

    if n is not None and n < 1:
        raise TinyLMError(f"--threads must be at least 1, not {n}")
    n = n or default_threads()
    for var in ENV_VARS:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "numpy" in sys.modules:  # its OpenBLAS read the variables when it loaded: tell it directly
        from tinylm.blas import set_blas_threads

        set_blas_threads(n)
    return n


def default_threads() -> int:
    """OMP_NUM_THREADS when the user set it, else the physical cores minus the cores busy now."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, physical_cores() - round(busy_cores()))


def physical_cores() -> int:
    """Cores this process may run on, counting hyperthread siblings once (Linux); else the CPU count."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    siblings = set()
    for cpu in allowed:
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        siblings.add(f.read_text().strip() if f.is_file() else str(cpu))
    return max(1, len(siblings))


def busy_cores(window: float = 0.1) -> float:
    """How many logical CPUs other processes keep busy: from /proc/stat over `window` seconds (we sleep
    meanwhile, so none of it is ours), else the 1-minute load average, else 0."""
    try:
        a = _cpu_times()
        time.sleep(window)
        b = _cpu_times()
    except OSError:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    total = sum(b) - sum(a)
    idle = (b[3] + b[4]) - (a[3] + a[4])  # idle + iowait
    cpus = os.cpu_count() or 1
    busy = cpus * (1 - idle / total) if total > 0 else 0.0
    # logical -> physical: two busy hyperthreads of one core occupy one core
    return busy * physical_cores() / cpus


def _cpu_times() -> list[int]:
    with open("/proc/stat", encoding="ascii") as f:
        return [int(x) for x in f.readline().split()[1:]]
