"""Causal attention forward + backward alone: tinylm.small_attention (our C kernel) against
F.scaled_dot_product_attention on the same tensors, alternating in one process, at the attention shapes of
bench_train_cpu.py's models (batch, context, heads, kv heads, head size) and at head size 16: where the model uses
the kernel (tinylm.small_attention.applies) follows from this table. Prints milliseconds per call
(min - median over the rounds) and SDPA's median over ours.

python benchmarks/bench_small_attention.py                      # idle cores, 7 rounds, all shapes
python benchmarks/bench_small_attention.py --threads 1 --rounds 11
python benchmarks/bench_small_attention.py --threads 1 --clock cpu    # this thread's CPU time: steadier on a busy machine
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

SHAPES = {  # name: (B, T, H, KV, hs), as bench_train_cpu.py trains them, and one with head size 16 between
    "stories260K": (32, 256, 8, 4, 8),
    "hs16": (16, 256, 8, 8, 16),
    "quickstart": (16, 128, 4, 4, 32),
    "gpt-micro": (16, 256, 4, 4, 32),
}


def time_shape(name: str, rounds: int, clock: Callable[[], float]) -> str:
    """One table row: both forward + backward calls on the same tensors, alternating."""
    import torch
    import torch.nn.functional as F

    from tinylm.small_attention import small_attention

    B, T, H, KV, hs = SHAPES[name]
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, T, n, hs, requires_grad=True) for n in (H, KV, KV))
    dy = torch.randn(B, T, H, hs)

    def sdpa() -> None:
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=KV != H)  # fmt: skip
        y.transpose(1, 2).backward(dy)

    def ours() -> None:
        small_attention(q, k, v).backward(dy)

    runs: dict[str, Callable[[], None]] = {"SDPA": sdpa, "ours": ours}
    times: dict[str, list[float]] = {key: [] for key in runs}
    for f in runs.values():
        f()  # warm-up: first-call allocations
    for _ in range(rounds):
        for key, f in runs.items():
            t0 = clock()
            f()
            times[key].append(1e3 * (clock() - t0))
    med = {key: statistics.median(t) for key, t in times.items()}
    cells = "".join(f"{f'{min(t):.1f} - {med[key]:.1f}':>16}" for key, t in times.items())
    return f"{name:<12}{SHAPES[name]!s:<22}{cells}{med['SDPA'] / med['ours']:>10.2f}x"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    p.add_argument("--rounds", type=int, default=7, help="alternations of the two")
    p.add_argument("--threads", type=int, default=None, help="as tinylm's --threads (default: idle cores)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: the main thread's CPU time, not counting time the OS gave to other processes "
                   "(one thread only: other threads' work is not in it)")  # fmt: skip
    args = p.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu counts this thread's CPU time only; use it with --threads 1")
    from tinylm.threads import busy_cores, use_threads

    threads = use_threads(args.threads)
    from tinylm.small_attention import library

    if library() is None:
        raise SystemExit("the attention kernel did not build (no C compiler?)")
    print(f"{threads} thread(s); other processes kept {busy_cores(1.0):.1f} core(s) busy at start")
    print(f"{'shape':<12}{'(B, T, H, KV, hs)':<22}{'SDPA ms':>16}{'ours ms':>16}{'SDPA/ours':>11}")
    for name in args.shapes.split(","):
        print(time_shape(name, args.rounds, time.thread_time if args.clock == "cpu" else time.perf_counter))


if __name__ == "__main__":
    main()
