"""Calibrated quantization (issue 12), one table, every baseline measured in the same run:

  quality   on a small model trained by tinylm (held-out perplexity, KL and top-1 against fp32):
            fp32, round-to-nearest int4 / q4_0, GPTQ int4 / q4_0 (same group sizes), naive W8A8,
            SmoothQuant W8A8; then the same model given activation outliers without changing its
            function (a few norm channels x30, the columns reading them /30): naive W8A8 vs SmoothQuant
  speed     W8A8 vs fp32 prefill tokens/s on the stories110M shape (random weights, --threads),
            the int8 GEMM vs the fp32 BLAS matmul on one of its shapes, GPTQ's time on the
            stories15M shape with --gptq-samples calibration sequences

python benchmarks/bench_calibrated.py                          # trains a small model first (minutes)
python benchmarks/bench_calibrated.py --checkpoint runs/x/best --train data/train.txt --heldout data/val.txt
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

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinystories_v2_head.txt"
KEEP = list(DEFAULT_KEEP)
OUTLIER_CHANNELS, OUTLIER_FACTOR = [3, 40, 77], 30.0
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


def prefill_rate(model: Model, prompt: torch.Tensor, repeats: int) -> list[float]:
    """Tokens/s of a forward pass over the prompt (logits at its last position only), each repeat."""
    last = torch.tensor([prompt.shape[1] - 1])
    with torch.inference_mode():
        model(prompt, logits_at=last)  # warm up
        return [prompt.numel() / timed(lambda: model(prompt, logits_at=last)) for _ in range(repeats)]


def span(xs: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"


def speed_rows(threads: int, prompt_tokens: int, repeats: int) -> list[Row]:
    torch.manual_seed(0)
    model = Model(get_preset("stories110M")).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_tokens))
    fp32 = prefill_rate(model, prompt, repeats)
    quantize_calibrated(model, None, Options("w8a8", KEEP))  # type: ignore[arg-type]
    w8a8 = prefill_rate(model, prompt, repeats)
    ratio = [a / b for a, b in zip(sorted(w8a8), sorted(fp32), strict=True)]
    rows = [("fp32 prefill, stories110M", "tokens/s", span(fp32), "baseline", f"{prompt_tokens}-token prompt"),
            ("W8A8 prefill, stories110M", "tokens/s", span(w8a8), f"{span(ratio, '{:.2f}')}x fp32",
             "head kept fp32; per-token activation quantization included")]  # fmt: skip
    rng = np.random.default_rng(0)
    B, n, m = prompt_tokens, 768, 2304
    x, w = rng.integers(-127, 128, (B, n), dtype=np.int8), int8_gemm.pack(rng.integers(-127, 128, (m, n), dtype=np.int8))
    xf, wf = torch.randn(B, n), torch.randn(n, m)
    gops = [2 * B * n * m / timed(lambda: int8_gemm.matmul(x, w, threads)) / 1e9 for _ in range(repeats)]
    gflops = [2 * B * n * m / timed(lambda: xf @ wf) / 1e9 for _ in range(repeats)]
    rows.append((f"int8 GEMM {B}x{n}x{m}", "GOPS", span(gops), f"fp32 BLAS {span(gflops)} GFLOPS",
                 f"kernel: {'C' if int8_gemm.library() else 'NumPy float64'}, exact int32 sums"))  # fmt: skip
    return rows


def gptq_time_row(samples: int) -> Row:
    torch.manual_seed(0)
    model = Model(get_preset("stories15M")).eval()
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (samples, cfg.context_length))
    seconds = timed(lambda: quantize_calibrated(model, tokens, Options("gptq-q4_0", KEEP)))
    return ("GPTQ q4_0, stories15M (random weights)", "seconds", f"{seconds:.0f}", "",
            f"{samples} calibration sequences x {cfg.context_length} tokens, {cfg.n_layers} blocks")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a float checkpoint (default: train one on tinystories_v2_head.txt)")
    p.add_argument("--train", help="calibration text (with --checkpoint)")
    p.add_argument("--heldout", help="evaluation text (with --checkpoint)")
    p.add_argument("--work", default="runs/bench_calibrated", help="where the trained model goes")
    p.add_argument("--steps", type=int, default=150, help="training steps of the small model (default 150)")
    p.add_argument("--samples", type=int, default=64, help="calibration sequences (default 64)")
    p.add_argument("--eval-tokens", type=int, default=20000, help="held-out tokens scored (default 20000)")
    p.add_argument("--gptq-samples", type=int, default=128, help="calibration sequences of the timing (default 128)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=256, help="prefill prompt tokens (default 256)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        ckpt_dir, train_text, heldout = Path(args.checkpoint), args.train, Path(args.heldout)
    else:
        ckpt_dir, train_text, heldout = train_small_model(Path(args.work), args.steps)
    ckpt = load_checkpoint(ckpt_dir)
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    tokens = calibration_tokens(str(train_text), tok, model.config.vocab_size, args.samples, model.config.context_length)
    print(f"model {ckpt_dir} ({model.num_params() / 1e6:.2f}M params); calibration {tokens.shape[0]} x "
          f"{tokens.shape[1]} tokens of {train_text}; evaluation {heldout}; {args.threads} threads; "
          f"outliers: channels {OUTLIER_CHANNELS} x{OUTLIER_FACTOR:g}")  # fmt: skip
    show([("what", "measure", "value", "against the baseline", "note")])
    show(quality_rows(model, tok, tokens, heldout, args.eval_tokens, "", [
        ("RTN int4 g128", rtn("int4", 128)), ("GPTQ int4 g128", calibrated("gptq-int4", tokens, 128)),
        ("RTN int4 g32", rtn("int4", 32)), ("GPTQ int4 g32", calibrated("gptq-int4", tokens, 32)),
        ("RTN q4_0", rtn("q4_0")), ("GPTQ q4_0", calibrated("gptq-q4_0", tokens)),
        ("W8A8 (no smoothing)", calibrated("w8a8", tokens)), ("SmoothQuant W8A8", calibrated("smoothquant", tokens)),
    ]))  # fmt: skip
    outliers = copy.deepcopy(model)
    smoothquant.plant_outliers(outliers, OUTLIER_CHANNELS, OUTLIER_FACTOR)
    show(quality_rows(outliers, tok, tokens, heldout, args.eval_tokens, " +outliers", [
        ("W8A8 +outliers", calibrated("w8a8", tokens)), ("SmoothQuant +outliers", calibrated("smoothquant", tokens)),
    ]))  # fmt: skip
    show(speed_rows(args.threads, args.prompt, args.repeats))
    show([gptq_time_row(args.gptq_samples)])


if __name__ == "__main__":
    main()
