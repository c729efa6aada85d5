"""Calibrated quantization (issue 12), one table, every baseline measured in the same run:

  quality   on a small model trained by tinylm (held-out perplexity, KL and top-1 against fp32):
            fp32, round-to-nearest int4 / q4_0, GPTQ int4 / q4_0 (same group sizes), naive W8A8,
            SmoothQuant W8A8; then the same model given activation outliers without changing its
            function (a few norm channels x30, the columns reading them /30): naive W8A8 vs SmoothQuant
            for outlier sizes 10, 30, 100 (and how far the outliers stand above the rest, per token)
  speed     fp32 vs W8A8 (and W8A8 with the head too) prefill tokens/s on the stories110M shape
            (random weights, --threads), measured in turns; where a W8A8 pass spends its time; the
            int8 kernel's every path this CPU runs (AVX512-VNNI, AVX-VNNI, AVX2) vs fp32 BLAS
  gptq      GPTQ's time on the stories15M shape with --gptq-samples calibration sequences

python benchmarks/bench_calibrated.py                          # trains a small model first (minutes)
python benchmarks/bench_calibrated.py --checkpoint runs/x/best --train data/train.txt --heldout data/val.txt
python benchmarks/bench_calibrated.py --only speed --threads 2  # the speed rows alone (a minute or two)
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tinylm.checkpoint import load_checkpoint
from tinylm.config import get_preset
from tinylm.eval import evaluate_models
from tinylm.model import Model
from tinylm.quantize import int8_gemm, smoothquant
from tinylm.quantize.calibrate import calibration_tokens
from tinylm.quantize.calibrated import Options, quantize_calibrated
from tinylm.quantize.linear import quantize_model
from tinylm.quantize.schemes import DEFAULT_KEEP
from tinylm.quantize.w8a8_linear import W8A8Linear

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories_v2_head.txt"
KEEP = list(DEFAULT_KEEP)
OUTLIER_CHANNELS = [3, 40, 77]
Row = tuple[str, str, str, str, str]  # what, measure, value, against the baseline, note
WIDTHS = (38, 10, 16, 24)


def show(rows: list[Row]) -> None:
    """Print rows as they are measured (a long run shows what it has so far)."""
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], WIDTHS, strict=True)) + "  " + r[4], flush=True)


def train_small_model(work: Path, steps: int) -> tuple[Path, Path, Path]:
    """A 2-layer dim-128 Llama (context 64) trained briefly by `tinylm train` on the first 90% of
    tinystories_v2_head.txt: small, because the machine this was written on is shared by many jobs."""
    from tinylm.cli import main as tinylm

    text = DATA.read_text()
    cut = text.rfind("\n", 0, int(len(text) * 0.9))
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.txt").write_text(text[:cut])
    (work / "heldout.txt").write_text(text[cut:])
    tinylm(["train", "--data", str(work / "train.txt"), "--vocab-size", "1024", "--layers", "2", "--dim", "128",
            "--heads", "4", "--context", "64", "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "20",
            "--steps", str(steps), "--out", str(work / "run"), "--quiet"])  # fmt: skip
    return work / "run" / "best", work / "train.txt", work / "heldout.txt"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def quality_rows(model: Model, tok, tokens: torch.Tensor, heldout: Path, eval_tokens: int, tag: str,
                 variants: list[tuple[str, Callable[[Model], None]]]) -> list[Row]:  # fmt: skip
    """Each variant applied to a copy of `model`, evaluated against `model` on the held-out text."""
    models, seconds = [(model, tok, f"fp32{tag}")], {}
    for name, make in variants:
        m = copy.deepcopy(model)
        seconds[name] = timed(lambda m=m, make=make: make(m))
        models.append((m, tok, name))
    results = evaluate_models(models, heldout, reference=models[0], max_tokens=eval_tokens, progress=False)
    base = results[0].perplexity
    rows = []
    for r in results:
        note = "" if r.kl is None else f"KL {r.kl:.4f}, top-1 {100 * r.top1:.1f}%"
        if r.model in seconds:
            note += f", {seconds[r.model]:.1f} s to quantize"
        rows.append((r.model, "perplexity", f"{r.perplexity:.3f} ±{r.perplexity_se:.3f}",
                     f"{100 * (r.perplexity / base - 1):+.2f}% vs fp32", note))  # fmt: skip
    return rows


def calibrated(scheme: str, tokens: torch.Tensor, group: int | None = None) -> Callable[[Model], None]:
    return lambda m: quantize_calibrated(m, tokens, Options(scheme, KEEP, group))


def rtn(scheme: str, group: int | None = None) -> Callable[[Model], None]:
    return lambda m: quantize_model(m, scheme, group, KEEP)


def span(xs: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"


def speedup(secs: list[float], baseline: list[float]) -> str:
    """The range of baseline / this, turn by turn (both measured in the same turn)."""
    return f"{span([b / a for a, b in zip(secs, baseline, strict=True)], '{:.2f}')}x fp32"


def clock(kind: str) -> Callable[[], float]:
    """wall: perf_counter; cpu: this thread's CPU time, which a busy machine disturbs far less (only
    meaningful with --threads 1, where every computation runs on this thread)."""
    return time.perf_counter if kind == "wall" else time.thread_time


def alternating(fns: dict[str, Callable[[], object]], repeats: int, now: Callable[[], float]) -> dict[str, list[float]]:
    """Seconds of each fn per repeat, the fns taking turns (each warmed up first), so that a change in
    the machine's load reaches all of them alike."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = now()
            fn()
            out[k].append(now() - t0)
    return out


def w8a8_copy(model: Model, keep: list[str]) -> Model:
    m = copy.deepcopy(model)
    quantize_calibrated(m, None, Options("w8a8", keep))  # type: ignore[arg-type]
    return m


def prefill_rows(threads: int, prompt_tokens: int, repeats: int, now: Callable[[], float]) -> list[Row]:
    """fp32 vs W8A8 prefill on the stories110M shape (random weights; untied, so the head can be W8A8 too)."""
    torch.manual_seed(0)
    fp32 = Model(get_preset("stories110M").replace(tie_embeddings=False)).eval()
    models = {"fp32": fp32, "W8A8": w8a8_copy(fp32, KEEP), "W8A8, head too": w8a8_copy(fp32, ["tok_emb"])}
    prompt = torch.randint(0, fp32.config.vocab_size, (1, prompt_tokens))
    last = torch.tensor([prompt_tokens - 1])  # logits at the last position only, as generation needs
    with torch.inference_mode():
        secs = alternating({k: lambda m=m: m(prompt, logits_at=last) for k, m in models.items()}, repeats, now)
    rows = []
    for k, s in secs.items():
        ratio = "baseline" if k == "fp32" else speedup(s, secs["fp32"])
        rows.append((f"{k} prefill, stories110M", "tokens/s", span([prompt_tokens / t for t in s]), ratio,
                     f"{prompt_tokens}-token prompt, {threads} threads; per repeat, same turn"))  # fmt: skip
    with torch.inference_mode():
        split = time_split(models["W8A8"], prompt, last, now)
    total = sum(split.values())
    rows += [(f"  W8A8 prefill: {k}", "ms", f"{1e3 * v:.0f}", f"{100 * v / total:.0f}% of the pass", "")
             for k, v in split.items()]  # fmt: skip
    return rows


def time_split(model: Model, prompt: torch.Tensor, last: torch.Tensor, now: Callable[[], float]) -> dict[str, float]:
    """Where one W8A8 prefill pass spends its time: the W8A8 layers (rounding, int8 GEMM, scaling in
    one C call each), the fp32 head, everything else (attention, norms, RoPE, SwiGLU, embedding)."""
    spent = {"W8A8 layers": 0.0, "fp32 head": 0.0}
    start: list[float] = []

    def timer(kind: str) -> Callable[..., None]:
        def done(*_: object) -> None:
            spent[kind] += now() - start.pop()

        return done

    hooks = []
    for m in model.modules():
        kind = "W8A8 layers" if isinstance(m, W8A8Linear) else "fp32 head" if m is model.lm_head else None
        if kind:
            hooks += [m.register_forward_pre_hook(lambda *_: start.append(now())), m.register_forward_hook(timer(kind))]
    t0 = now()
    model(prompt, logits_at=last)
    total = now() - t0
    for h in hooks:
        h.remove()
    return {**spent, "attention, norms, rest": total - sum(spent.values())}


def gemm_rows(threads: int, tokens: int, repeats: int, now: Callable[[], float]) -> list[Row]:
    """The int8 kernel's every path this CPU runs, on one stories110M shape (wqkv), against fp32 BLAS:
    the bare product (int8 in, int32 out) and the whole layer (float in: rounding and scaling too)."""
    rng = np.random.default_rng(0)
    B, n, m = tokens, 768, 2304
    x, w = rng.integers(-127, 128, (B, n), dtype=np.int8), rng.integers(-127, 128, (m, n), dtype=np.int8)
    xf, wf = torch.randn(B, n), torch.randn(n, m)
    fns: dict[str, Callable[[], object]] = {"fp32 BLAS (torch)": lambda: xf @ wf}
    for path, (march, _) in int8_gemm.PATHS.items():
        kern = int8_gemm.build(march) if path != "c" and int8_gemm.runs_here(path) else None
        if kern is not None:
            packed, ones = int8_gemm.pack(w, kern), np.ones(m, dtype=np.float32)
            fns[f"int8 GEMM {path}"] = lambda p=packed: int8_gemm.matmul(x, p, threads)
            fns[f"W8A8 layer {path}"] = lambda p=packed, o=ones: int8_gemm.linear(xf.numpy(), p, o, None, threads)
    secs = alternating(fns, repeats, now)
    native = int8_gemm.kernel()
    rows = []
    for k, s in secs.items():
        note = "picked by -march=native here" if native and k.endswith(native.path) else ""
        ratio = "baseline" if k.startswith("fp32") else speedup(s, secs["fp32 BLAS (torch)"])
        rows.append((f"{k} {B}x{n}x{m}", "GOPS", span([2 * B * n * m / t / 1e9 for t in s]), ratio, note))
    return rows


def gptq_time_row(samples: int) -> Row:
    torch.manual_seed(0)
    model = Model(get_preset("stories15M")).eval()
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (samples, cfg.context_length))
    seconds = timed(lambda: quantize_calibrated(model, tokens, Options("gptq-q4_0", KEEP)))
    return ("GPTQ q4_0, stories15M (random weights)", "seconds", f"{seconds:.0f}", "",
            f"{samples} calibration sequences x {cfg.context_length} tokens, {cfg.n_layers} blocks")  # fmt: skip


def dominance(model: Model, tokens: torch.Tensor) -> list[float]:
    """Per token, at every smoothed norm's output: max |x| over the outlier channels / max |x| over the
    rest. A per-token int8 scale is set by the larger, so the other channels keep about 127 / ratio
    levels: the damage naive W8A8 takes follows this ratio, not the planted factor itself."""
    ratios: list[torch.Tensor] = []
    rest = torch.ones(model.config.dim, dtype=torch.bool)
    rest[OUTLIER_CHANNELS] = False

    def hook(_m: object, _a: object, y: torch.Tensor) -> None:
        y = y.reshape(-1, y.shape[-1]).abs()
        ratios.append(y[:, OUTLIER_CHANNELS].amax(-1) / y[:, rest].amax(-1))

    hooks = [norm.register_forward_hook(hook) for norm, _ in smoothquant.smoothed_groups(model)]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    return torch.cat(ratios).tolist()


def outlier_rows(model: Model, tok, tokens: torch.Tensor, heldout: Path, eval_tokens: int,
                 factors: list[float]) -> list[Row]:  # fmt: skip
    """The model given outliers (OUTLIER_CHANNELS of every smoothed norm x factor, the columns that read
    them / factor: logits unchanged), then naive W8A8 and SmoothQuant W8A8, for each factor."""
    rows = []
    for f in factors:
        planted = copy.deepcopy(model)
        smoothquant.plant_outliers(planted, OUTLIER_CHANNELS, f)
        r = np.percentile(dominance(planted, tokens[:4]), [10, 50, 90])
        rows.append((f"outliers x{f:g}: outlier / rest, per token", "ratio", f"{r[1]:.1f} (median)",
                     f"10-90%: {r[0]:.1f}-{r[2]:.1f}", "max |x| of the planted channels over the others'"))  # fmt: skip
        rows += quality_rows(planted, tok, tokens, heldout, eval_tokens, f" x{f:g}", [
            (f"W8A8 x{f:g}", calibrated("w8a8", tokens)), (f"SmoothQuant x{f:g}", calibrated("smoothquant", tokens)),
        ])  # fmt: skip
    return rows


def quality(args: argparse.Namespace) -> None:
    if args.checkpoint:
        ckpt_dir, train_text, heldout = Path(args.checkpoint), args.train, Path(args.heldout)
    else:
        ckpt_dir, train_text, heldout = train_small_model(Path(args.work), args.steps)
    ckpt = load_checkpoint(ckpt_dir)
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    tokens = calibration_tokens(str(train_text), tok, model.config.vocab_size, args.samples, model.config.context_length)
    print(f"model {ckpt_dir} ({model.num_params() / 1e6:.2f}M params); calibration {tokens.shape[0]} x "
          f"{tokens.shape[1]} tokens of {train_text}; evaluation {heldout}; {args.threads} threads; "
          f"outliers: channels {OUTLIER_CHANNELS}")  # fmt: skip
    show(quality_rows(model, tok, tokens, heldout, args.eval_tokens, "", [
        ("RTN int4 g128", rtn("int4", 128)), ("GPTQ int4 g128", calibrated("gptq-int4", tokens, 128)),
        ("RTN int4 g32", rtn("int4", 32)), ("GPTQ int4 g32", calibrated("gptq-int4", tokens, 32)),
        ("RTN q4_0", rtn("q4_0")), ("GPTQ q4_0", calibrated("gptq-q4_0", tokens)),
        ("W8A8 (no smoothing)", calibrated("w8a8", tokens)), ("SmoothQuant W8A8", calibrated("smoothquant", tokens)),
    ]))  # fmt: skip
    show(outlier_rows(model, tok, tokens, heldout, args.eval_tokens, args.outlier_factors))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a float checkpoint (default: train one on tinystories_v2_head.txt)")
    p.add_argument("--train", help="calibration text or shard folder (with --checkpoint)")
    p.add_argument("--heldout", help="evaluation text or shard folder, its val split (with --checkpoint)")
    p.add_argument("--work", default="runs/bench_calibrated", help="where the trained model goes")
    p.add_argument("--steps", type=int, default=150, help="training steps of the small model (default 150)")
    p.add_argument("--samples", type=int, default=64, help="calibration sequences (default 64)")
    p.add_argument("--eval-tokens", type=int, default=20000, help="held-out tokens scored (default 20000)")
    p.add_argument("--outlier-factors", type=lambda v: [float(f) for f in v.split(",")], default=[10.0, 30.0, 100.0],
                   help="outlier sizes of the demo, comma-separated (default 10,30,100)")  # fmt: skip
    p.add_argument("--gptq-samples", type=int, default=128, help="calibration sequences of the timing (default 128)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=256, help="prefill prompt tokens (default 256)")
    p.add_argument("--repeats", type=int, default=5, help="turns of the speed measurements (default 5)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="speed by wall time, or by this thread's CPU time (with --threads 1; steadier on a busy machine)")
    p.add_argument("--only", choices=["quality", "speed", "gptq"], help="one part of the table (default: all)")
    args = p.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu counts only this thread's time: use it with --threads 1")
    torch.set_num_threads(args.threads)
    show([("what", "measure", "value", "against the baseline", "note")])
    if args.only in (None, "quality"):
        quality(args)
    if args.only in (None, "speed"):
        now = clock(args.clock)
        show(prefill_rows(args.threads, args.prompt, args.repeats, now))
        show(gemm_rows(args.threads, args.prompt, args.repeats, now))
    if args.only in (None, "gptq"):
        show([gptq_time_row(args.gptq_samples)])


if __name__ == "__main__":
    main()
