"""Training tokens/s of small models on the CPU: tinylm's trainer against a plain nanoGPT-style loop, where a
step's time goes, and the model FLOPs utilisation against this CPU's measured matmul peak.

For each shape, in one process and alternating in chunks of steps (so every variant sees the same machine load):
- nanoGPT fp32:      the baseline, written here as nanoGPT's train.py does it: random windows stacked from the
                     token array, model forward, F.cross_entropy, backward, clip 1.0, AdamW (two weight-decay
                     groups, the default multi-tensor kernel on CPU), zero_grad; eager and fp32, attention by
                     F.scaled_dot_product_attention as nanoGPT's model;
- tinylm eager:      tinylm's own training step (tinylm.train.trainer) with --no-compile and its other defaults:
                     precision auto (bf16 autocast on CPUs with native bf16), fused AdamW, batches gathered ahead;
- tinylm (default):  the same step compiled, as `tinylm train` runs a run of 5 minutes or 1000 steps and more;
                     small heads attend through tinylm.small_attention (our C kernel);
- tinylm fp32:       the default with --precision fp32 (what precision auto picks on CPUs without native bf16):
                     the output head and cross-entropy fused (tinylm.head_loss);
- tinylm SDPA:       the default attending by SDPA (as TINYLM_ATTENTION=sdpa), for the kernel's share (--no-sdpa
                     skips it).
Warm-up (compilation included) is reported and not counted. Same model init, shape, batch and token data.

MFU: model FLOPs per token (6 x matmul parameters + 12 x layers x context x dim for attention, as nanoGPT and
PaLM count them) x tokens/s, over this CPU's peak measured here with a large torch.mm at the same threads,
in fp32 and in bf16. The step breakdown profiles the baseline: matmul, attention, other kernels and the
optimizer by their own time, the rest of the wall clock is Python, autograd and kernel launches; data is
the batch gathering, timed on its own.
- llm.c:             llm.c's CPU trainer (train_gpt2.c, -Ofast -fopenmp), given --llmc DIR (a checkout of
                     github.com/karpathy/llm.c), on the GPT-2 shapes only: same shape, batch, initial weights
                     and token data; its own per-step timings (benchmarks/reference_programs.py says how).

python benchmarks/bench_train_cpu.py                                  # all shapes, 3 rounds of 10 steps
python benchmarks/bench_train_cpu.py --shapes quickstart --rounds 5 --steps 20 --threads 1
python benchmarks/bench_train_cpu.py --shapes gpt-micro --llmc ~/src/llm.c     # with llm.c's trainer beside
python benchmarks/bench_train_cpu.py --threads 1 --clock cpu --no-sdpa  # busy machine: CPU time of the one thread
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from reference_programs import LlmC

SHAPES = {  # name: (model shape, vocab, batch, context)
    "stories260K": ({"preset": "stories260K"}, 512, 32, 256),
    "quickstart": ({"family": "llama", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 128}, 1024, 16, 128),
    "gpt-micro": ({"preset": "gpt-micro"}, 4096, 16, 256),
}
TOKENS = 1_000_000  # random token ids: throughput does not depend on what they say
clock = time.perf_counter  # what the steps are timed by: --clock cpu makes it this thread's CPU time


@contextlib.contextmanager
def attention(kernel: bool) -> Any:
    """Small heads attend through tinylm's kernel (kernel=True) or SDPA while a variant steps: compiled variants
    retrace when this changes (torch.compile guards on it), eager ones choose at every step."""
    from tinylm import small_attention

    given, small_attention.enabled = small_attention.enabled, kernel
    try:
        yield
    finally:
        small_attention.enabled = given


def model_config(shape: str) -> Any:
    from tinylm.train.shapes import build_config

    kw, vocab, _, T = SHAPES[shape]
    return build_config(vocab, **{**kw, "context_length": T})


class NanoGPT:
    """The baseline loop, in nanoGPT's train.py manner."""

    def __init__(self, shape: str, tokens: Any):
        import torch

        from tinylm.model import Model

        _, _, self.B, self.T = SHAPES[shape]
        self.tokens = tokens
        torch.manual_seed(0)
        self.model = Model(model_config(shape))
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # fmt: skip
        self.opt = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95))

    def get_batch(self) -> tuple[Any, Any]:
        import numpy as np
        import torch

        ix = torch.randint(len(self.tokens) - self.T, (self.B,))
        x = torch.stack([torch.from_numpy(self.tokens[i : i + self.T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(self.tokens[i + 1 : i + 1 + self.T].astype(np.int64)) for i in ix])
        return x, y

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        x, y = self.get_batch()
        with attention(kernel=False):
            logits = self.model(x)  # (B, T, vocab)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class TinyLM:
    """tinylm's training step (the trainer's own setup and step function), compiled or not."""

    def __init__(self, shape: str, tokens: Any, compile: bool, kernel: bool = True, precision: str = "auto"):
        import torch

        from tinylm.train import TrainConfig, TrainData, distributed
        from tinylm.train.batches import TokenWindows
        from tinylm.train.trainer import _setup

        _, _, self.B, self.T = SHAPES[shape]
        self.kernel = kernel
        self.tmp = tempfile.TemporaryDirectory()
        cfg = TrainConfig(out_dir=self.tmp.name, batch_size=self.B, compile=compile, device="cpu", eval_batches=1,
                          seed=0, precision=precision)  # fmt: skip
        data = TrainData(TokenWindows(tokens, self.T), TokenWindows(tokens[: 4 * self.T], self.T))
        self.run = _setup(cfg, data, model_config(shape), None, False, distributed.from_env(), torch.device("cpu"),
                          quiet=True)  # fmt: skip

    def step(self) -> None:
        from tinylm.train.trainer import _optimizer_step

        with attention(self.kernel):
            _optimizer_step(self.run)


def timed(loop: Any, steps: int) -> float:
    t0 = clock()
    for _ in range(steps):
        loop.step()
    return clock() - t0


def peak_flops(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of an n x n x n torch.mm over a few tries (after one warm-up)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(timed_call(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def timed_call(f: Any) -> float:
    t0 = clock()
    f()
    return clock() - t0


def flops_per_token(shape: str) -> float:
    import torch

    from tinylm.model import Model

    cfg = model_config(shape)
    with torch.device("meta"):
        model = Model(cfg)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * matmul + 12 * cfg.n_layers * SHAPES[shape][3] * cfg.dim


def breakdown(loop: NanoGPT, steps: int = 3) -> str:
    """Where the baseline's step time goes (see the module docstring)."""
    from torch.profiler import profile

    t0 = time.perf_counter()
    for _ in range(steps):
        loop.get_batch()
    data = time.perf_counter() - t0
    with profile() as prof:  # the profiler's times are wall clock: so is this, whatever --clock says
        t0 = time.perf_counter()
        for _ in range(steps):
            loop.step()
        wall = time.perf_counter() - t0
    kinds = {"matmul": 0.0, "attention": 0.0, "optimizer": 0.0, "other kernels": 0.0}
    calls = 0
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        calls += e.count
        name = e.key[6:]
        kind = ("matmul" if name in ("mm", "addmm", "bmm") else "attention" if "scaled_dot_product" in name
                else "optimizer" if name.startswith(("_foreach", "_fused_adam")) else "other kernels")  # fmt: skip
        kinds[kind] += e.self_cpu_time_total / 1e6
    kinds["data"] = data
    kinds["Python/autograd/launch"] = max(0.0, wall - sum(kinds.values()))
    return ", ".join(f"{k} {v / wall:.0%}" for k, v in kinds.items()) + f"; {calls // steps:,} kernel calls per step"


def run_shape(shape: str, args: argparse.Namespace, peaks: dict[str, float], tokens: Any) -> None:
    import torch

    from tinylm.formats.common import is_gpt2

    # every compiled variant of every shape compiles the same objective function, and torch.compile stops
    # compiling a function after 8 versions (it ran gpt-micro's last variant eagerly): a fresh start per shape
    torch._dynamo.reset()
    t0 = time.perf_counter()
    loops: dict[str, Any] = {"nanoGPT fp32": NanoGPT(shape, tokens)}
    timed(loops["nanoGPT fp32"], 2)
    warmup = {"nanoGPT fp32": time.perf_counter() - t0}  # wall seconds, whatever --clock says
    variants = [("tinylm eager", False, True, "auto")]
    if not args.no_compile:
        variants += [("tinylm (default)", True, True, "auto"), ("tinylm fp32", True, True, "fp32")]
        variants += [] if args.no_sdpa else [("tinylm SDPA", True, False, "auto")]
    for name, compile, kernel, precision in variants:
        t0 = time.perf_counter()
        loops[name] = TinyLM(shape, tokens, compile, kernel, precision)
        timed(loops[name], 2)
        warmup[name] = time.perf_counter() - t0
    if args.llmc and is_gpt2(model_config(shape)):
        t0 = time.perf_counter()
        loops["llm.c"] = llmc_baseline(shape, tokens, args)
        warmup["llm.c"] = time.perf_counter() - t0  # compiling it and writing its files
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            rates[name].append(rate(loop, args.steps))
    median = {name: sorted(r)[len(r) // 2] for name, r in rates.items()}
    base, fpt = median["nanoGPT fp32"], flops_per_token(shape)
    for name, r in rates.items():
        mfu = " ".join(f"{median[name] * fpt / peaks[k]:>8.1%}" for k in ("float32", "bfloat16"))
        print(f"{shape:<12}{name:<18}{f'{min(r):,.0f} - {max(r):,.0f}':>20}{median[name] / base:>9.2f}x{mfu}"
              f"{warmup[name]:>10.1f}")  # fmt: skip
    print(f"{'':<12}nanoGPT fp32 step: {breakdown(loops['nanoGPT fp32'])}")
    for loop in loops.values():
        if isinstance(loop, TinyLM):
            loop.run.batches.close()
        elif isinstance(loop, LlmC):
            loop.close()


def rate(loop: Any, steps: int) -> float:
    """Tokens/s over `steps` steps: timed here, or as llm.c times its own steps (a separate process)."""
    if isinstance(loop, LlmC):
        return loop.tokens_per_second(steps)
    return steps * loop.B * loop.T / timed(loop, steps)


def llmc_baseline(shape: str, tokens: Any, args: argparse.Namespace) -> LlmC:
    import torch

    from tinylm.model import Model

    _, _, B, T = SHAPES[shape]
    torch.manual_seed(0)
    return LlmC(Path(args.llmc).expanduser(), Model(model_config(shape)), tokens, B, T, torch.get_num_threads())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    p.add_argument("--rounds", type=int, default=3, help="alternations of the variants")
    p.add_argument("--steps", type=int, default=10, help="steps per variant and round")
    p.add_argument("--threads", type=int, default=None, help="as tinylm's --threads (default: idle cores)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variants (slow to warm up)")
    p.add_argument("--no-sdpa", action="store_true", help="skip the compiled variant with SDPA attention")
    p.add_argument("--llmc", metavar="DIR", help="a checkout of github.com/karpathy/llm.c: adds its CPU trainer "
                   "on the GPT-2 shapes (default: not run)")  # fmt: skip
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: time steps by this thread's CPU time, which leaves out the time the OS gives to other "
                   "processes (--threads 1 only; tinylm's batches, gathered ahead in another thread, are left out "
                   "too: under 1%% of a step)")  # fmt: skip
    args = p.parse_args()
    if args.clock == "cpu" and (args.threads != 1 or args.llmc):
        raise SystemExit("--clock cpu counts this thread's CPU time: use it with --threads 1 and without --llmc")
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # rows as they come, also into a file
    from tinylm.threads import busy_cores, use_threads

    threads = use_threads(args.threads)
    busy = busy_cores(1.0)
    import numpy as np

    peaks = {k: peak_flops(k) for k in ("float32", "bfloat16")}
    print(f"{threads} thread(s); other processes kept {busy:.1f} core(s) busy at start; torch.mm peak "
          f"{peaks['float32'] / 1e9:,.0f} GFLOP/s fp32, {peaks['bfloat16'] / 1e9:,.0f} GFLOP/s bf16; steps timed by the "
          f"{'CPU time' if args.clock == 'cpu' else 'wall clock'}\n")  # fmt: skip
    tokens = np.random.default_rng(0).integers(0, 512, TOKENS).astype(np.uint16)  # every shape's vocab has 512
    print(f"{'shape':<12}{'variant':<18}{'tokens/s (min-max)':>20}{'vs base':>10}{'MFU fp32':>9}{'MFU bf16':>9}"
          f"{'warm-up s':>10}")  # fmt: skip
    for shape in args.shapes.split(","):
        run_shape(shape, args, peaks, tokens)


if __name__ == "__main__":
    main()
