"""The training loop of `tinylm train --engine numpy`: the torch trainer's loop (tinylm.train.trainer)
on one CPU process with NumPy alone, writing the same checkpoints, metrics.jsonl and loss.png.

One optimizer step:
  1. set the learning rate for this step (tinylm.train.schedule, a pure function of the step);
  2. draw this step's rows from the data-order generator (the torch trainer's draws);
  3. for each micro-batch: forward, backward of loss / micro-batches, adding into the gradients;
  4. clip the gradient norm; skip the update if the loss or the norm is NaN/inf;
  5. AdamW step, zero the gradients.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tinylm.blas import set_blas_threads
from tinylm.config import ModelConfig
from tinylm.errors import TinyLMError
from tinylm.nptrain import checkpoint
from tinylm.nptrain.adamw import AdamW, clip_grad_norm
from tinylm.nptrain.checkpoint import Saved
from tinylm.nptrain.memory import keep_freed_memory
from tinylm.nptrain.model import Transformer
from tinylm.train.config import TrainConfig
from tinylm.train.interrupt import on_interrupt
from tinylm.train.metrics import METRICS_FILE, MetricsLog, Window, duration, human
from tinylm.train.order import Sampler, eval_rows
from tinylm.train.plot import plot_loss
from tinylm.train.progress import BEST, LAST, PLOT_FILE, Progress, bad_step, check_writable
from tinylm.train.schedule import eval_interval, lr_at, resumed_length
from tinylm.train.windows import Windows


@dataclass
class Data:
    train: Windows
    val: Windows
    tokenizer: Any = None
    name: str = ""


@dataclass
class Result:
    model: Transformer
    out_dir: Path
    progress: Progress
    val_loss: float | None
    tokens_per_s: float


@dataclass
class _Run:
    cfg: TrainConfig
    data: Data
    model: Transformer
    optimizer: AdamW
    sampler: Sampler
    progress: Progress
    out: Path
    log: MetricsLog
    tokens_per_step: int
    stop_requested: bool = False


def train(cfg: TrainConfig, data: Data, model_config: ModelConfig | None = None, *,
          weights: dict[str, np.ndarray] | None = None, resume: bool = False, stop_at: int | None = None,
          quiet: bool = False, dtype: type = np.float32, threads: int | None = None) -> Result:  # fmt: skip
    """Train a model of `model_config` (initial `weights` if given, else a seeded random init) on
    `data`, as tinylm.train.train does; resume: continue <out_dir>/last, whichever trainer wrote it.
    threads: default OMP_NUM_THREADS (which `--threads` sets, tinylm.threads), else 1."""
    if cfg.device not in ("auto", "cpu") or cfg.precision not in ("auto", "fp32") or cfg.compile or cfg.minutes:
        raise TinyLMError("the NumPy trainer runs on the CPU in fp32 for a number of --steps: drop --device, "
                          "--precision, --compile and --minutes, or use --engine torch")  # fmt: skip
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "").strip() or 1)
    run = _setup(cfg, data, model_config, weights, resume, quiet, dtype, threads)
    keep_freed_memory()  # each step then reuses the last step's pages (tinylm.nptrain.memory)
    return _loop(run, stop_at, quiet)


def _setup(cfg: TrainConfig, data: Data, model_config: ModelConfig | None, weights: dict[str, np.ndarray] | None,
           resume: bool, quiet: bool, dtype: type, threads: int) -> _Run:  # fmt: skip
    out = Path(cfg.out_dir)
    saved = Saved.load(out / LAST) if resume else None
    if saved is not None:
        saved_config, weights = checkpoint.load_plain(out / LAST)
        if model_config is not None and saved_config != model_config:
            raise TinyLMError(f"{out / LAST} holds a model of another shape than the one asked for; "
                              "resume without shape options, or train into a new --out")  # fmt: skip
        model_config = saved_config
    if model_config is None:
        raise TinyLMError("train() needs a model_config")
    model = Transformer(model_config, weights, dtype=dtype, seed=cfg.seed, threads=threads)
    if threads > 1:  # the model's processes each take a part of the batch: one BLAS thread in each
        set_blas_threads(1)
    T = data.train.context
    if T > model_config.context_length or cfg.batch_size * T > len(data.train.tokens):
        raise TinyLMError(f"examples of {T} tokens in batches of {cfg.batch_size} do not fit the model's context "
                          f"({model_config.context_length}) or the data; lower --batch-size or --context")  # fmt: skip
    per_micro = cfg.batch_size * T
    accum = max(1, round((cfg.batch_tokens or per_micro) / per_micro))
    opt = AdamW(model.flat.size, model.n_decay, cfg.lr, (cfg.beta1, cfg.beta2), 1e-8, cfg.weight_decay, dtype, threads)
    sampler = Sampler(len(data.train), cfg.batch_size, accum, seed=cfg.seed)
    progress = Progress(max_steps=cfg.max_steps, data_size=len(data.train))
    if saved is not None:
        progress = saved.progress
        if progress.data_size != len(data.train):
            raise TinyLMError(f"the training data has {len(data.train):,} examples but the saved run had "
                              f"{progress.data_size:,}; resume with the same --data")  # fmt: skip
        saved.restore(model, opt, sampler)
        resumed_length(cfg, progress, saved.path)
    check_writable(out)
    log = MetricsLog(out / METRICS_FILE, resume_step=progress.step if saved else None)
    if not quiet:
        c = model_config
        print(f"training a {human(model.num_params())}-parameter {c.family} model ({c.n_layers} layers, dim {c.dim}, "
              f"{c.n_heads} heads, context {c.context_length}) on {data.name or 'the data'} with NumPy\n"
              f"  {accum * per_micro:,} tokens per step ({cfg.batch_size} x {T}{f' x {accum} accumulated' if accum > 1 else ''}), "
              f"{'resuming at step ' + str(progress.step) + ', ' if saved else ''}{progress.max_steps:,} steps -> {out}")  # fmt: skip
    return _Run(cfg, data, model, opt, sampler, progress, out, log, accum * per_micro)


def _loop(run: _Run, stop_at: int | None, quiet: bool) -> Result:
    cfg, p = run.cfg, run.progress
    bar = tqdm(total=p.max_steps, initial=p.step, unit="step", dynamic_ncols=True, disable=quiet, smoothing=0.05)
    start, seconds_before, session_tokens = time.perf_counter(), p.seconds, 0
    window, val_loss = Window(), None
    with on_interrupt(run):
        while p.step < p.max_steps:
            loss, gnorm, lr = _optimizer_step(run)
            p.advance(run.tokens_per_step, seconds_before + time.perf_counter() - start)
            session_tokens += run.tokens_per_step
            window.add(loss, run.tokens_per_step)
            bar.update(1)
            if p.step % cfg.log_interval == 0 or p.step == p.max_steps:
                rec = p.record(window.loss(), lr, gnorm, window.rate())
                run.log.write(rec)
                bar.set_postfix_str(f"loss {rec['loss']:.3f} | {human(rec['tok_s'])} tok/s"
                                    + (f" | val {val_loss:.3f}" if val_loss is not None else ""))  # fmt: skip
                window = Window()
            stop = run.stop_requested or (stop_at is not None and p.step >= stop_at)
            if p.step % eval_interval(cfg, p.max_steps) == 0 or p.step >= p.max_steps or stop:
                val_loss = evaluate(run.model, run.data.val, cfg)
                _checkpoint(run, val_loss)
            if stop:
                break
    bar.close()
    rate = session_tokens / max(time.perf_counter() - start, 1e-9)
    if not quiet:
        best = f"{p.best_val_loss:.4f}" if p.best_val_loss is not None else "-"
        plot = run.out / PLOT_FILE
        print(f"{'stopped' if p.step < p.max_steps else 'done'} at step {p.step:,} of {p.max_steps:,}: params "
              f"{human(run.model.num_params())}, tokens seen {human(p.tokens)}, best val loss {best}, "
              f"time {duration(p.seconds)}, {human(rate)} tokens/s\n"
              f"checkpoints: {run.out / LAST} (resumable by either engine), {run.out / BEST} (best val loss); "
              f"log: {run.log.path}" + (f"; plot: {plot}" if plot.is_file() else ""))  # fmt: skip
    return Result(run.model, run.out, p, val_loss, rate)


def _optimizer_step(run: _Run) -> tuple[float, float, float]:
    cfg, model, opt = run.cfg, run.model, run.optimizer
    opt.lr = lr = lr_at(run.progress.step, cfg, run.progress.max_steps)
    micro = run.sampler.step()
    total = 0.0
    for rows in micro:
        x, y = run.data.train.get(rows)
        total += model.loss_and_backward(x, y, scale=1.0 / len(micro))
    loss = total / len(micro)
    gnorm = clip_grad_norm(model.flat_grad, cfg.grad_clip)
    if math.isfinite(loss) and math.isfinite(gnorm):
        opt.step(model.flat, model.flat_grad)
        run.progress.bad_steps = 0
    else:
        bad_step(run.progress, cfg.max_bad_steps, loss, gnorm, "lower --lr or raise --warmup-steps")
    model.zero_grad()
    return loss, gnorm, lr


def evaluate(model: Transformer, val: Windows, cfg: TrainConfig) -> float:
    """Mean loss over the torch trainer's fixed validation batches."""
    losses = [model.loss(*val.get(rows)) for rows in eval_rows(len(val), cfg.batch_size, cfg.eval_batches)]
    return sum(losses) / len(losses)


def _checkpoint(run: _Run, val_loss: float) -> None:
    """Log the evaluation, write last/ (and best/ when the validation loss improved) and the plot."""
    p = run.progress
    improved = p.best_val_loss is None or val_loss < p.best_val_loss
    if improved:
        p.best_val_loss = val_loss
    run.log.write({"step": p.step, "val_loss": val_loss, "tokens": p.tokens, "time": round(p.seconds, 2)})
    plot = run.out / PLOT_FILE
    plot_loss(run.log.records(), plot, title=f"{run.data.name}  ({human(run.model.num_params())} params)")
    files = (run.log.path, plot)
    tok = run.data.tokenizer
    checkpoint.save(run.out / LAST, run.model, tok, run.cfg, p, run.optimizer, run.sampler, files)
    if improved:
        checkpoint.save(run.out / BEST, run.model, tok, run.cfg, p, files=files)
