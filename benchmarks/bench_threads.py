"""Threads under load: training and decoding tokens/s with tinylm's default thread count, 1 thread and
all physical cores, with and without one competing busy process (a Python loop spinning on one core).

The three thread settings alternate within each repeat, so they see the same machine load. Each
measurement runs in a fresh Python whose thread count is set by `tinylm.threads.use_threads` before
torch starts (as the commands do), so the OpenMP pool is sized once, as it would be for a user. The
"default" row resolves the thread count in that child, with the competitor already running.

python benchmarks/bench_threads.py                       # both loads, train and decode, 3 repeats
python benchmarks/bench_threads.py --repeats 5 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SHAPE = {"family": "llama", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 256}  # the quick start's
VOCAB, BATCH = 2048, 16


def child(kind: str, threads: int | None, seconds: float) -> dict:
    """One measurement in this process: tokens/s of training steps or of greedy decoding for `seconds`."""
    from tinylm.threads import use_threads

    n = use_threads(threads)
    import torch

    from tinylm.model import Model
    from tinylm.train.shapes import build_config

    torch.manual_seed(0)
    model = Model(build_config(VOCAB, **SHAPE))
    T = SHAPE["context_length"]
    if kind == "train":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, VOCAB, (BATCH, T + 1))

        def work() -> int:
            loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return BATCH * T
    else:
        from tinylm.generate.generator import Generator

        gen = Generator.from_model(model.eval())

        def work() -> int:
            return len(gen.generate([1], 64, temperature=0.0, stop_ids=[]).ids)

    work()  # warm up
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tokens += work()
    return {"threads": n, "tok_s": tokens / (time.perf_counter() - start)}


def measure(kind: str, threads: int | None, seconds: float) -> dict:
    job = [sys.executable, __file__, "--child", json.dumps([kind, threads, seconds])]
    out = subprocess.run(job, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    from tinylm.threads import busy_cores, physical_cores

    cores = physical_cores()
    print(f"{cores} physical core(s); busy before starting: {busy_cores(1.0):.1f} core(s) (other processes)")
    print(f"model: {SHAPE} vocab {VOCAB}; train batch {BATCH} x {SHAPE['context_length']}; decode 64 tokens greedy\n")
    print(f"{'competitor':<12}{'work':<8}{'threads':<14}{'tokens/s (min-max over repeats)':>34}")
    for competing in (False, True):
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competing else None
        try:
            time.sleep(0.5 if spin else 0)  # let the competitor show up in /proc/stat
            for kind in ("train", "decode"):
                settings = (("default", None), ("1", 1), (f"all ({cores})", cores))
                runs: dict[str, list[dict]] = {label: [] for label, _ in settings}
                for _ in range(args.repeats):  # alternating, so the three see the same load
                    for label, n in settings:
                        runs[label].append(measure(kind, n, args.seconds))
                for label, n in settings:
                    rates = sorted(r["tok_s"] for r in runs[label])
                    used = sorted({r["threads"] for r in runs[label]})
                    name = f"default={','.join(map(str, used))}" if n is None else label
                    print(f"{'1 busy' if spin else 'none':<12}{kind:<8}{name:<14}"
                          f"{f'{rates[0]:,.0f} - {rates[-1]:,.0f}':>34}", flush=True)  # fmt: skip
        finally:
            if spin:
                spin.kill()
                spin.wait()


if __name__ == "__main__":
    main()
