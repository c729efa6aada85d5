"""How fast both engines generate, beside what this machine's memory bandwidth allows.

For each model shape (random fp32 weights), engine and thread count, a fresh subprocess (so thread
settings take effect before any library starts its thread pool) measures:
  decode tok/s:  batch 1, greedy, a 1-token prompt then `new_tokens` tokens (best of `repeats`);
  prefill tok/s: one forward pass over a `prompt_tokens` prompt (best of `repeats`).
The parent measures memory-read bandwidth (summing a 512 MiB array on each thread) and divides it
by the weight bytes one decode step must read: the bound a memory-bound decoder cannot beat
(unless the weights fit in a cache). A quantization scheme (tinylm.quantize) other than fp32 stores
the layers' matrices packed (embedding and head float), which lowers the bytes and raises the bound;
the bytes counted are those the kernels read (float32 scales, which the files may hold as float16).
"w8a8" stores them as int8 and multiplies int8 activations too (SmoothQuant's layers), which pays in
prefill, where arithmetic rather than reading the weights is the cost.
Used by `tinylm bench`, `benchmarks/bench_generate.py` and `benchmarks/bench_quantize.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from tinylm.config import ModelConfig, get_preset
from tinylm.errors import TinyLMError

SHAPES = ("stories260K", "stories15M", "stories110M")
ENGINES = ("numpy", "torch", "torch-compile")
FLOAT = "fp32"  # the scheme name of unquantized weights
W8A8 = "w8a8"  # int8 weights x int8 activations (tinylm.quantize.w8a8), stored as the int8 scheme stores them


def quantization_spec(scheme: str, stored: bool = False) -> dict:
    """The checkpoint spec of a quantized `scheme`; with `stored`, that of how its weights are stored."""
    from tinylm.quantize import transform, w8a8

    if scheme == W8A8:
        return transform.make_spec("int8") if stored else w8a8.make_spec()
    return transform.make_spec(scheme)


@dataclass
class Result:
    shape: str
    engine: str
    threads: int
    decode_tok_s: float
    prefill_tok_s: float
    new_tokens: int
    prompt_tokens: int
    warmup_s: float  # building the engine and its first steps (compilation, for torch-compile)
    scheme: str = FLOAT
    # the slowest repeat, for a range (decode_tok_s and prefill_tok_s are the fastest); 0 from an older checkout
    decode_min_tok_s: float = 0.0
    prefill_min_tok_s: float = 0.0
    # what the decode steps multiplied the quantized matrices with (activations_of); "" from an older checkout
    activations: str = ""


def weight_bytes_per_token(cfg: ModelConfig, scheme: str = FLOAT) -> int:
    """Bytes of weights one decode step reads: every matrix once (the output head included, tied or
    not, float32), but only one row of each embedding table; layer matrices as the kernels read them
    under `scheme` (packed values with float32 scales: tinylm.quantize.blocks.Form)."""
    head = cfg.vocab_size * cfg.dim if cfg.tie_embeddings else 0  # a tied head is not counted below
    fp32 = 4 * (cfg.num_params(include_embeddings=False) + head)
    if scheme == FLOAT:
        return fp32
    from tinylm.layout import tensor_layout
    from tinylm.quantize import schemes, transform

    plain = tensor_layout(cfg)
    spec = quantization_spec(scheme, stored=True)
    stored, total = spec["kind"], fp32
    for name in transform.quantized_weights(plain, spec["keep"]):
        shape = plain[name][0]
        total += kernel_bytes(stored, shape, schemes.tensor_group(stored, name, shape, spec["group_size"]))
        total -= 4 * int(np.prod(shape))
    return total


def kernel_bytes(scheme: str, shape: tuple[int, ...], group: int) -> int:
    """Bytes the kernels read to multiply by one (out, in) matrix stored by `scheme`."""
    from tinylm.quantize import schemes

    mod = schemes.get_scheme(scheme)
    form = mod.form({k: np.zeros(s, d) for k, (s, d) in mod.layout(shape, group).items()}, group)
    return sum(a.nbytes for a in (form.q, form.scale, form.mins) if a is not None)


def random_weights(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Checkpoint-shaped fp32 weights: N(0, 0.02) matrices, unit norm weights, zero biases."""
    from tinylm.layout import tensor_layout

    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, _) in tensor_layout(cfg).items():
        if len(shape) == 2:
            out[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        else:
            out[name] = (
                np.ones(shape, np.float32)
                if "norm" in name and name.endswith("weight")
                else np.zeros(shape, np.float32)
            )
    return out


def memory_bandwidth(threads: int, mib: int = 512, repeats: int = 5) -> float:
    """Read bandwidth in GB/s: the best of `repeats` sums of a `mib` MiB array split over `threads`
    (NumPy releases the GIL while it sums)."""
    a = np.ones(mib * 2**20 // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, parts))  # touch every page first
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - start)
    return a.nbytes / best / 1e9


def build_engine(engine: str, cfg: ModelConfig, weights: dict[str, np.ndarray], scheme: str = FLOAT):
    spec = None if scheme == FLOAT else quantization_spec(scheme)
    if engine == "numpy":
        from tinylm.quantize.transform import quantize_weights
        from tinylm.runtime import NumpyModel

        stored = weights if spec is None else quantize_weights(quantization_spec(scheme, stored=True), weights)
        return NumpyModel(cfg, stored, quantization=spec)
    import torch

    from tinylm.checkpoint import build_model
    from tinylm.generate.engine import TorchEngine

    model = build_model(cfg, {k: torch.from_numpy(v) for k, v in weights.items()})
    if spec is not None:
        from tinylm import transforms

        transforms.apply(model, "quantization", spec)
    return TorchEngine(model, compile=engine == "torch-compile", transpose_weights=True)


def activations_of(eng, scheme: str) -> str:
    """The activations an engine's decode steps multiply its matrices with: "float32", "int8" (rounded in
    blocks of 32 by our kernels, the NumPy runtime's default for 8-bit, q4_0 and int4 weights) or
    "int8/token" (W8A8's per-token rounding)."""
    from tinylm.quantize import kernels

    if scheme == W8A8:
        return "int8/token"
    if scheme == FLOAT:
        return "float32"
    if hasattr(eng, "activations"):  # the NumPy runtime: its own choice
        form, mode = eng.layers[0].w1, eng.activations
    else:  # the torch engine: QuantLinear's
        from tinylm.quantize.linear import QuantLinear

        layer = next(m for m in eng.model.modules() if isinstance(m, QuantLinear))
        form, mode = layer._form, kernels.activations_from_env("float32")
    compiled = kernels.library() is not None  # the NumPy fallback dequantizes and multiplies in float
    return mode if compiled and form is not None and kernels.takes_int8_activations(form) else "float32"


def measure(
    shape: str, engine: str, threads: int, new_tokens: int, prompt_tokens: int, repeats: int, scheme: str = FLOAT
) -> Result:
    """One measurement in this process (threads must already be limited, see `measure_isolated`)."""
    from tinylm.generate.loop import Timing, generate_ids
    from tinylm.generate.sampling import Sampler, SamplingParams

    if engine.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
    cfg = get_preset(shape)
    new_tokens = min(new_tokens, cfg.context_length - 1)
    prompt_tokens = min(prompt_tokens, cfg.context_length)
    greedy = Sampler(SamplingParams(temperature=0))
    start = time.perf_counter()
    eng = build_engine(engine, cfg, random_weights(cfg), scheme)
    for _ in generate_ids(eng, [[1]], new_tokens, greedy):  # warm up at the very shapes measured
        pass
    warmup = time.perf_counter() - start
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, prompt_tokens).tolist()
    decode, prefill = [], []
    for _ in range(repeats):
        t = Timing()
        for _ in generate_ids(eng, [[1]], new_tokens, greedy, timing=t):
            pass
        decode.append(t.decode_tokens_per_s)
        start = time.perf_counter()
        eng.prefill([0], [prompt])
        prefill.append(prompt_tokens / (time.perf_counter() - start))
    return Result(shape, engine, threads, max(decode), max(prefill), new_tokens, prompt_tokens, warmup, scheme,
                  min(decode), min(prefill), activations_of(eng, scheme))  # fmt: skip


def measure_isolated(shape: str, engine: str, threads: int, new_tokens: int, prompt_tokens: int,
                     repeats: int, scheme: str = FLOAT, src: str | None = None) -> Result:  # fmt: skip
    """`measure` in a fresh Python whose BLAS/OpenMP thread pools are limited to `threads`; `src`
    imports tinylm from another checkout's src/ folder instead (a baseline to compare against)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # a baseline checkout may predate schemes: name one only when there is one
    job = json.dumps([shape, engine, threads, new_tokens, prompt_tokens, repeats] + ([scheme] if scheme != FLOAT else []))
    r = subprocess.run(
        [sys.executable, "-m", "tinylm.generate.bench", job], capture_output=True, text=True, env=env
    )
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise TinyLMError(f"benchmark of {engine} ({scheme}) on {shape} with {threads} thread(s) failed: {last}")
    return Result(**json.loads(r.stdout.strip().splitlines()[-1]))


def span(lo: float, hi: float, fmt: str) -> str:
    """`lo-hi` formatted, or just `hi` when there was one repeat (or no slowest figure)."""
    return f"{hi:{fmt}}" if lo <= 0 or f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}-{hi:{fmt}}"


def format_table(results: list[Result], bandwidth: dict[int, float]) -> str:
    """One row per measurement: speeds and the share of the memory-bandwidth bound measured in the same run
    (a reference engine belongs in the same run too, never as a figure typed in here)."""
    head = (
        "shape",
        "engine",
        "scheme",
        "activations",
        "threads",
        "decode tok/s",
        "% of bound (best)",
        "prefill tok/s",
        "warmup s",
    )
    rows = []
    for r in results:
        bound = bandwidth[r.threads] * 1e9 / weight_bytes_per_token(get_preset(r.shape), r.scheme)
        rows.append((
            r.shape, r.engine, r.scheme, r.activations or "?", str(r.threads), span(r.decode_min_tok_s, r.decode_tok_s, ",.1f"),
            f"{100 * r.decode_tok_s / bound:.0f}%", span(r.prefill_min_tok_s, r.prefill_tok_s, ",.0f"), f"{r.warmup_s:.1f}",
        ))  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True)))
             for x in [head, *rows]]  # fmt: skip
    notes = [
        f"decode: batch 1, greedy, a 1-token prompt then {max(r.new_tokens for r in results)} new tokens (fewer "
        f"where the context is shorter); prefill: a {results[0].prompt_tokens}-token prompt; random "
        "weights (fp32, or packed by the row's scheme with the embedding and head fp32); speeds are the range "
        "(slowest-fastest) over the repeats, the share of the bound that of the fastest",
        "activations: what the quantized matrices were multiplied with: float32 (exact), int8 (rounded to int8 "
        "blocks of 32, the NumPy runtime's default for 8-bit, q4_0 and int4 weights; TINYLM_ACTIVATIONS=float32 "
        "or int8 chooses) or int8/token (W8A8)",
        f"memory read bandwidth: {', '.join(f'{t} thread(s) {bw:.1f} GB/s' for t, bw in bandwidth.items())}",
    ]
    for shape, scheme in dict.fromkeys((r.shape, r.scheme) for r in results):
        cfg = get_preset(shape)
        mb = weight_bytes_per_token(cfg, scheme) / 1e6
        bounds = ", ".join(f"{bw * 1e3 / mb:,.0f} tok/s at {t} thread(s)" for t, bw in bandwidth.items())
        notes.append(f"{shape} {scheme}: {mb:,.1f} MB of weights per token -> bound {bounds}")
    return "\n".join([*lines, "", *notes])


def run(shapes: list[str], engines: list[str], threads: list[int], new_tokens: int = 256, prompt_tokens: int = 128,
        repeats: int = 3, progress: bool = True, schemes: tuple[str, ...] | list[str] = (FLOAT,),
        ) -> tuple[list[Result], dict[int, float]]:  # fmt: skip
    from tqdm import tqdm

    bandwidth = {t: memory_bandwidth(t) for t in threads}
    jobs = [(s, e, q, t) for s in shapes for q in schemes for e in engines for t in threads]
    results = []
    with tqdm(jobs, desc="bench", unit="run", disable=not progress) as bar:
        for s, e, q, t in bar:
            bar.set_postfix_str(f"{s} {e} {q} {t} thread(s)")
            results.append(measure_isolated(s, e, t, new_tokens, prompt_tokens, repeats, q))
            bar.set_postfix_str(f"{s} {e} {q} {t}: {results[-1].decode_tok_s:,.1f} tok/s")
    return results, bandwidth


if __name__ == "__main__":  # worker: one measurement, printed as JSON
    print(json.dumps(asdict(measure(*json.loads(sys.argv[1])))))
