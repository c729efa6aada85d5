"""The decode kernels alone (quantize/kernels.c), one thread: float32 activations (matmul_q8 / matmul_q4)
against int8 activations (matmul_a8) on the same quantized matrices, in weight bytes read per second.

Matrices of stories110M's shapes (768 x 768, 2048 x 768 gate/up, 768 x 2048 down) fit the L2 cache; a
tall one (12288 x 768) comes from the L3 cache or memory. The two modes take turns within each round and
the table gives the fastest of the rounds, timed by this thread's CPU time (steadier than the wall clock
on a shared machine). The C functions are called directly, so Python's per-call cost is left out.

python benchmarks/bench_kernels.py
python benchmarks/bench_kernels.py --shapes 768x2048,12288x768 --schemes q4_0 --rounds 9
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tinylm.quantize import kernels, schemes


def calls(w, x: np.ndarray, y: np.ndarray, lib) -> dict:
    """The kernel call of each activation mode, for one quantized matrix w (m, n) and one row x."""
    n, m = x.shape[1], y.shape[1]
    q, scale, mins, lut = w.addresses
    xsum = np.empty(n // w.group, dtype=np.float32)
    py, px, pxsum = y.ctypes.data, x.ctypes.data, xsum.ctypes.data
    if w.bits == 8:
        fp32 = lambda: lib.matmul_q8(py, px, q, scale, 1, n, m, w.group, 1)  # noqa: E731
    else:
        fp32 = lambda: lib.matmul_q4(py, px, q, scale, mins, lut, w.offset, pxsum, 1, n, m, w.group, 1)  # noqa: E731
    q8, q4 = (q, None) if w.bits == 8 else (None, q)
    int8 = lambda: lib.matmul_a8(py, px, q8, q4, scale, mins, int(w.offset), 1, n, m, w.group, 1)  # noqa: E731
    return {"float32": fp32, "int8": int8}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--shapes", default="768x768,2048x768,768x2048,12288x768", help="rows x columns, comma-separated"
    )
    p.add_argument("--schemes", default="q8_0,q4_0,int8,int4")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    lib = kernels.library()
    if lib is None:
        raise SystemExit("no C compiler here (or TINYLM_KERNELS=numpy): nothing to measure")
    rng = np.random.default_rng(0)
    print(f"{'scheme':<7}{'matrix':>12}{'MB':>7}{'float32 acts':>22}{'int8 acts':>22}{'ratio':>7}")
    for scheme in args.schemes.split(","):
        mod = schemes.get_scheme(scheme)
        for shape in args.shapes.split(","):
            m, n = map(int, shape.split("x"))
            group = schemes.tensor_group(scheme, "w", (m, n), mod.GROUP)
            w = mod.form(mod.quantize(rng.normal(0, 1, (m, n)).astype(np.float32), group), group)
            x, y = rng.normal(0, 1, (1, n)).astype(np.float32), np.empty((1, m), dtype=np.float32)
            nbytes = w.q.nbytes + w.scale.nbytes + (0 if w.mins is None else w.mins.nbytes)
            repeats = max(3, int(2e8 / nbytes))  # ~0.2 GB read per timing
            best = {}
            for _ in range(args.rounds):
                for mode, call in calls(w, x, y, lib).items():
                    call()
                    start = time.thread_time()
                    for _ in range(repeats):
                        call()
                    best[mode] = min(best.get(mode, np.inf), (time.thread_time() - start) / repeats)
            cells = "".join(f"{best[k] * 1e6:>10.1f} us {nbytes / best[k] / 1e9:>5.1f} GB/s" for k in best)
            print(
                f"{scheme:<7}{shape:>12}{nbytes / 1e6:>7.2f}{cells}{best['float32'] / best['int8']:>7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
