"""Matrix products for decoding: our C kernels (kernels.c), compiled on first use, or NumPy.

The C files (kernels.c, and decode.c, which includes it: the NumPy runtime's whole decode step) are
compiled with the system `cc` (-O3 -march=native -fopenmp) into one library in the cache directory
($TINYLM_CACHE/kernels, named by a hash of the sources, flags and CPU, so a shared home directory on
another CPU compiles its own) and loaded with ctypes: no build step at install, no dependency, and
the speed does not hang on which BLAS a wheel picked. `matmul` multiplies by quantized matrices
(Forms) and by float32 ones (the output head kept in float, float checkpoints in the NumPy runtime).
Without a compiler (or with TINYLM_KERNELS=numpy) it falls back to NumPy: dequantize, then multiply —
same numbers up to float32 rounding, far slower. With float32 activations, batches larger than
SMALL_BATCH (prefill) also take that route, since there a float matrix product's arithmetic, not
reading the weights, is the cost. With int8 activations the integer kernel stays ahead up to INT8_ROWS
rows (stories110M prefill, 2 threads, this Xeon: 64-token prompts 2.4x (q8_0) and 5x (q4_0) faster than
dequantize-then-BLAS; at 128 tokens q8_0 is faster dequantized and q4_0 still 1.4x faster through the
kernel; at 256 both are faster dequantized).

Activations: the NumPy runtime rounds them to int8 in blocks of 32 by default (as llama.cpp does for
q8_0 and q4_0) and multiplies with integer dot products (8-bit weights, q4_0 and int4; nf4 keeps
float32): 1.25-1.4x faster decode on stories110M (one thread), at the cost of the activations'
rounding error (about 0.5/127 of each block's largest value). float32 activations give exactly the
numbers of a float model holding the dequantized weights; they are what `matmul` does unless asked,
and the torch engine's default. TINYLM_ACTIVATIONS=float32 or int8 sets both engines.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from tinylm.errors import TinyLMError
from tinylm.quantize.blocks import LINEAR, Form

SOURCE = Path(__file__).with_name("decode.c")  # what cc compiles: the decode step, which includes kernels.c
SOURCES = (SOURCE.with_name("kernels.c"), SOURCE)
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp")
SMALL_BATCH = 8
INT8_ROWS = 64  # up to this many activation rows the int8 kernel beats dequantize-then-BLAS (see above)
ACTIVATIONS = ("int8", "float32")
_float_p = ctypes.POINTER(ctypes.c_float)


def _cpu() -> str:
    """What -march=native depends on: the CPU's model and flags where Linux says them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return "".join(line for line in text.splitlines()[:30] if line.startswith(("model name", "flags")))


def compile_library(out: Path, flags: tuple[str, ...] = FLAGS, source: Path = SOURCE) -> bool:
    """Build `source` into the library at `out` (atomically: a crash leaves no half-written file);
    False if we cannot."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        for attempt in (flags, tuple(f for f in flags if f != "-fopenmp")):  # OpenMP is optional
            done = subprocess.run(["cc", *attempt, "-o", tmp, str(source)], capture_output=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, out)
                return True
        return False
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_library(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.matmul_q8.argtypes = [p, p, p, p, i, i, i, i, i]
    lib.matmul_q4.argtypes = [p, p, p, p, p, p, f, p, i, i, i, i, i]
    lib.quantize_act.argtypes = [p, p, p, i]
    lib.matmul_a8.argtypes = [p] * 6 + [i] * 6
    lib.matmul_a8.restype = ctypes.c_int
    lib.matmul_f32.argtypes = [p, p, p, i, i, i, i]
    lib.attend_one.argtypes = [p] * 5 + [i] * 5 + [f, i]
    lib.decode_step.argtypes = [p] * 4 + [i] * 4 + [p, i]
    lib.decode_scratch_bytes.argtypes = [p, i]
    lib.decode_scratch_bytes.restype = ctypes.c_size_t
    for fn in (lib.matmul_q8, lib.matmul_q4, lib.quantize_act, lib.matmul_f32, lib.attend_one, lib.decode_step):
        fn.restype = None
    return lib


def built(name: str, main: Path, sources: tuple[Path, ...] = (), flags: tuple[str, ...] = FLAGS) -> Path | None:
    """`main` compiled with `flags` into the cache directory as {name}_{hash}.so, the hash of its sources
    (`sources`, else `main` alone), the flags and this CPU; built on first use. None where it cannot be
    built (no compiler, a missing source file) or must not be (TINYLM_KERNELS=numpy: NumPy alone)."""
    from tinylm.data.download import cache_dir

    if os.environ.get("TINYLM_KERNELS") == "numpy":
        return None
    try:
        text = b"".join(source.read_bytes() for source in sources or (main,))
        key = hashlib.sha256(text + " ".join(flags).encode() + _cpu().encode()).hexdigest()[:16]
        path = cache_dir() / "kernels" / f"{name}_{key}.so"
        return path if path.is_file() or compile_library(path, flags, main) else None
    except OSError:
        return None


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (no compiler, TINYLM_KERNELS=numpy, or a failed build)."""
    path = built("tinylm_quant", SOURCE, SOURCES)
    try:
        if path is None:
            return None
        with briefly_spinning_threads():
            return load_library(path)
    except OSError:
        return None


@contextlib.contextmanager
def briefly_spinning_threads() -> Iterator[None]:
    """Load a kernel library with GOMP_SPINCOUNT=20000 (unless the user set it or OMP_WAIT_POLICY), for this
    load only.

    The system libgomp our kernels link reads the variable once, when it loads. A decode token waits at
    ~50-130 points (barriers between the stages of the C decode step, or the ends of as many parallel
    kernel calls on the Python path): threads that go to sleep at each (OMP_WAIT_POLICY=passive) pay a
    wakeup each and halved decode on a quiet machine (stories15M fp32, NumPy runtime, 2 threads, measured
    with a call per product: 174-181 vs 320-434 tok/s), while threads that spin for long (libgomp's
    default, or active) hold a core that torch's or BLAS's threads, or another process, need. A short
    spin keeps the threads awake within a token and lets them sleep between tokens and under load. It is restored after
    the load so that processes started later, whose torch reads it too, are not changed."""
    given = os.environ.get("GOMP_SPINCOUNT")
    if given is None and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = "20000"
    try:
        yield
    finally:
        if given is None:
            os.environ.pop("GOMP_SPINCOUNT", None)


def default_threads() -> int:
    """OMP_NUM_THREADS when set (as BLAS libraries read it), else every core this process may use."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def activations_from_env(default: str) -> str:
    """TINYLM_ACTIVATIONS (int8 or float32) where set, else `default`: how an engine rounds activations."""
    mode = os.environ.get("TINYLM_ACTIVATIONS") or default
    if mode not in ACTIVATIONS:
        raise TinyLMError(f"TINYLM_ACTIVATIONS={mode!r} is not an activation mode; set int8 or float32")
    return mode


def in_large_pages(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Copies of `arrays`, side by side (64-byte aligned) in one block of memory that Linux backs with
    2 MiB pages where it can (transparent huge pages, asked for with madvise before the copy touches it).

    A decode token reads every weight once, so with 4 KiB pages every 4 KiB of weights costs a TLB miss
    and a page walk (in a virtual machine, a walk of two page tables). NumPy asks for large pages only
    for arrays of 4 MiB or more, and a checkpoint read from a file gets none: streaming a matrix with one
    core of this Xeon (a KVM guest), 4 KiB pages vs 2 MiB ones: 22 vs 26 GB/s where it fits the L3
    cache (60 MB), 8.6 vs 15 GB/s where it does not (240 MB). Elsewhere the copies are ordinary memory."""
    sizes = [-(-a.nbytes // 64) * 64 for a in arrays]
    if not sizes:
        return []
    memory, at, out = _large_page_block(sum(sizes)), 0, []
    for a, size in zip(arrays, sizes, strict=True):
        copy = memory[at : at + a.nbytes].view(a.dtype).reshape(a.shape)
        copy[...] = a
        out.append(copy)
        at += size
    return out


def _large_page_block(size: int) -> np.ndarray:
    """`size` bytes of private anonymous memory (Linux aligns a large block to 2 MiB), asked to be backed by
    large pages; ordinary memory where there is no such mmap or madvise."""
    try:
        block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # private: shared is shmem
    except (AttributeError, TypeError, OSError):  # Windows' mmap, or no memory map
        return np.empty(size, dtype=np.uint8)
    with contextlib.suppress(AttributeError, OSError):  # no madvise, or no transparent huge pages
        block.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(block, dtype=np.uint8)


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def matmul(x: np.ndarray, w: Form | np.ndarray, threads: int | None = None, out: np.ndarray | None = None,
           activations: str = "float32") -> np.ndarray:  # fmt: skip
    """x (B, n) float32 @ w.T -> (B, m) float32, w a quantized or a float32 (m, n) matrix; `activations`
    "int8" rounds x first where the form allows it (takes_int8_activations)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    B, n = x.shape
    m = w.shape[0]
    lib = library()
    kind = product_kind(w, activations)
    if lib is None or B > (INT8_ROWS if kind == "int8" else SMALL_BATCH):
        return np.matmul(x, (w if isinstance(w, np.ndarray) else w.dequantize()).T, out=out)
    y = out if out is not None else np.empty((B, m), dtype=np.float32)
    threads = threads or default_threads()
    if isinstance(w, np.ndarray):
        lib.matmul_f32(_ptr(y), _ptr(x), _ptr(np.ascontiguousarray(w, dtype=np.float32)), B, n, m, threads)
        return y
    q, scale, mins, lut = w.addresses  # a 4-bit form without a table (LINEAR): the kernel converts nibbles
    if kind == "int8":
        q8, q4 = (q, None) if w.bits == 8 else (None, q)
        if lib.matmul_a8(_ptr(y), _ptr(x), q8, q4, scale, mins, int(w.offset), B, n, m, w.group, threads):
            raise MemoryError("kernels: no memory for the rounded activations")
    elif kind == "q8":
        lib.matmul_q8(_ptr(y), _ptr(x), q, scale, B, n, m, w.group, threads)
    else:
        xsum = np.empty(B * (n // w.group), dtype=np.float32)
        lib.matmul_q4(_ptr(y), _ptr(x), q, scale, mins, lut, w.offset, _ptr(xsum), B, n, m, w.group, threads)
    return y


def product_kind(w: object, activations: str) -> str | None:
    """How the C kernels multiply rows by w: "f32" (a float32 matrix), "int8" (activations rounded to
    int8 first), "q8" or "q4" (an 8- or 4-bit form, float32 activations); None: not a matrix of ours."""
    if isinstance(w, np.ndarray):
        return "f32"
    if not isinstance(w, Form):
        return None
    if activations == "int8" and takes_int8_activations(w):
        return "int8"
    return "q8" if w.bits == 8 else "q4"


def takes_int8_activations(w: Form) -> bool:
    """Whether matmul_a8 multiplies this form: 8-bit, or 4-bit without a table and with a whole-number
    offset (q4_0, int4); groups of 32, or a multiple of 64 or the whole row (a 512-bit step's two blocks
    share one scale)."""
    n = w.shape[1]
    integer = w.bits == 8 or (w.lut is LINEAR and float(w.offset).is_integer())
    return integer and n % 32 == 0 and (w.group == 32 or w.group % 64 == 0 or w.group == n)


def attend_one(q: np.ndarray, k: np.ndarray, v: np.ndarray, n: int, scale: float,
               threads: int | None = None) -> np.ndarray | None:  # fmt: skip
    """Attention of one token: q (H, hs) against the first n positions of one cache row's keys and
    values (KV, context, hs), all float32 and contiguous -> (H, hs), heads split over `threads`; None
    without the C kernels."""
    lib = library()
    if lib is None:
        return None
    H, hs = q.shape
    y = np.empty((H, hs), dtype=np.float32)
    scores = np.empty((H, n), dtype=np.float32)
    lib.attend_one(_ptr(y), _ptr(q), _ptr(k), _ptr(v), _ptr(scores), H, k.shape[0], k.shape[1], hs, n, scale,
                   threads or default_threads())  # fmt: skip
    return y


def quantize_activations(x: np.ndarray, lib: ctypes.CDLL) -> tuple[np.ndarray, np.ndarray]:
    """x (B, n) float32 rounded to int8 in blocks of 32: (values (B, n), scales (B, n / 32))."""
    xq = np.empty(x.shape, dtype=np.int8)
    xd = np.empty((x.shape[0], x.shape[1] // 32), dtype=np.float32)
    lib.quantize_act(_ptr(xq), _ptr(xd), _ptr(x), x.size)
    return xq, xd
