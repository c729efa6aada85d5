"""The training loop: AdamW, a warmup + decay schedule, gradient accumulation, mixed precision,
evaluation on a fixed validation set, best/last checkpoints, exact resume and DDP.

One optimizer step:
  1. set the learning rate for this step (a pure function of the step);
  2. take this step's micro-batches, drawn by the sampler (tinylm.train.order) and gathered ahead in a
     background thread while the previous step computed (tinylm.train.batches.Batches);
  3. for each micro-batch: forward under autocast, backward of loss / accum (DDP syncs on the last);
  4. unscale (fp16), clip the gradient norm; skip the update if the loss or the norm is NaN/inf;
  5. AdamW step, zero the gradients.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from tinylm.checkpoint import load_into, load_weights, save_checkpoint
from tinylm.config import ModelConfig, load_config, read_config
from tinylm.errors import TinyLMError
from tinylm.model import Model
from tinylm.runlock import run_lock
from tinylm.tokenizer import Tokenizer
from tinylm.train import distributed
from tinylm.train.batches import Batches, Dataset, Sampler, eval_rows
from tinylm.train.config import TrainConfig, pick_compile
from tinylm.train.device import Precision, pick_device, pick_precision
from tinylm.train.interrupt import on_interrupt
from tinylm.train.metrics import METRICS_FILE, MetricsLog, Window, duration, human
from tinylm.train.objectives import Objective, next_token
from tinylm.train.optim import make_optimizer
from tinylm.train.plot import plot_loss
from tinylm.train.progress import BEST, LAST, PLOT_FILE, Progress, bad_step, check_new_run, check_writable
from tinylm.train.schedule import decay_start, eval_interval, lr_at, resumed_length
from tinylm.train.state import Saved, capture_rng, finite, writer
from tinylm.transforms import applied

EvalHook = Callable[[Model], dict[str, Any]]


@dataclass
class TrainData:
    train: Dataset
    val: Dataset
    tokenizer: Tokenizer | None = None
    name: str = ""


@dataclass
class Result:
    model: Model  # the trained model (in eval mode), as in <out>/last
    out_dir: Path
    progress: Progress
    val_loss: float | None
    tokens_per_s: float
    tokenizer: Tokenizer | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # the last on_eval metrics


@dataclass
class _Run:
    """What the loop works with (one per process)."""

    cfg: TrainConfig
    data: TrainData
    model: Model  # the plain model: evaluation and checkpoints
    forward: torch.nn.Module  # what the loss calls: the model, or DDP around it (compiled there under DDP)
    compiled: bool
    optimizer: torch.optim.Optimizer
    precision: Precision
    batches: Batches  # each step's micro-batches, gathered ahead
    progress: Progress
    d: distributed.Dist
    device: torch.device
    out: Path
    log: MetricsLog | None
    eval_batches: list[torch.Tensor]
    tokens_per_step: int
    stop_requested: bool = False
    objective: Objective = next_token  # the training loss
    loss: Objective = next_token  # what each micro-batch calls: the objective, compiled with the model (see _loss)
    base: str | Path | None = None  # trainable-only checkpoints on top of this one
    eval_seconds: float = 0.0  # spent evaluating and saving in this session
    eval_cost: float = 0.0  # the last evaluation and save, in training steps' time


def train(cfg: TrainConfig, data: TrainData, model_config: ModelConfig | None = None, *, model: Model | None = None,
          resume: bool = False, stop_at: int | None = None, on_eval: EvalHook | None = None,
          objective: Objective = next_token, base: str | Path | None = None, quiet: bool = False,
          overwrite: bool = False) -> Result:  # fmt: skip
    """Train a model (a new `Model(model_config)`, or `model` as given) on `data`, writing checkpoints,
    metrics and a loss plot under `cfg.out_dir`. Only the parameters that require grad are optimized.

    resume:    continue the run saved in `<out_dir>/last` (weights, optimizer, RNG, data position);
               a transformed or partly frozen `model` must be given again, built the same way.
    overwrite: start a new run over an existing one (without it or `resume`, an existing run is an error).
    stop_at:   stop after this step as an interruption would: save `last`, resumable later.
    on_eval:   called with the model at every evaluation; its numbers go into the metrics log, and
               a true "done" among them ends the run early (e.g. a task solved).
    objective: `objective(model, x, y, *extra) -> loss`, what training minimises (tinylm.train.objectives);
               `extra`: whatever the training dataset yields per example beyond (x, y).
               Evaluation always reports plain next-token cross-entropy on the validation set, so
               val_loss (and the choice of best/) compares across objectives and runs.
    base:      the checkpoint `model` started from: checkpoints then hold only the trainable tensors
               and a reference to it (`load_checkpoint` puts them back on top of it).
    """
    d = distributed.from_env()
    device = pick_device(cfg.device, d.local_rank)
    distributed.start(d, device)
    try:
        with run_lock(cfg.out_dir) if d.main else contextlib.nullcontext():  # one writer per run folder
            if d.main:
                check_new_run(Path(cfg.out_dir), resume, overwrite)
            run = _setup(cfg, data, model_config, model, resume, d, device, quiet, objective)
            run.base = base
            try:
                return _loop(run, stop_at, on_eval, quiet)
            finally:
                run.batches.close()
    finally:
        distributed.stop(d)


def _setup(cfg: TrainConfig, data: TrainData, model_config: ModelConfig | None, model: Model | None, resume: bool,
           d: distributed.Dist, device: torch.device, quiet: bool, objective: Objective = next_token) -> _Run:  # fmt: skip
    """Everything the loop needs, in order: the model (new, given or resumed), batch arithmetic, the
    optimizer and data order (restored on resume), the compiled/DDP forward and the metrics log. Compiled
    by default when this session is long enough to repay the warm-up (tinylm.train.config.pick_compile)."""
    out = Path(cfg.out_dir)
    if d.main:
        check_writable(out)
    saved = Saved.load(out / LAST) if resume else None
    model = _model(cfg, model_config, model, saved)
    _check_data(data, model.config, cfg)
    model.to(device).train()
    precision = Precision(pick_precision(cfg.precision, device), device)
    per_micro, accum = _accumulation(cfg, data, d, quiet)
    optimizer = make_optimizer(model, cfg, device)
    sampler = Sampler(len(data.train), cfg.batch_size, accum, d.rank, d.world, seed=cfg.seed)
    progress = _progress(cfg, data, saved, optimizer, precision, sampler, d, device)
    log = MetricsLog(out / METRICS_FILE, resume_step=progress.step if saved else None) if d.main else None
    eval_batches = eval_rows(len(data.val), cfg.batch_size * d.world, cfg.eval_batches)
    minutes_left = cfg.minutes - progress.seconds / 60 if cfg.minutes else None
    compiled = pick_compile(cfg.compile, device.type, progress.max_steps - progress.step, minutes_left)
    batches = Batches(sampler, data.train, device, ahead=cfg.prefetch)
    run = _Run(cfg, data, model, _forward(model, compiled, d, device), compiled, optimizer, precision, batches,
               progress, d, device, out, log, eval_batches, accum * per_micro, objective=objective)  # fmt: skip
    run.loss = _loss(objective, run)
    if d.main and not quiet:
        _announce(run, accum, resumed=saved is not None)
    return run


def _model(cfg: TrainConfig, model_config: ModelConfig | None, model: Model | None, saved: Saved | None) -> Model:
    """The model to train: as given or new (the same initial weights in every process), with the saved
    run's weights when resuming."""
    if model is None:
        if model_config is None:
            raise TinyLMError("train() needs a model_config or a model")
        if saved is not None and load_config(saved.path) != model_config:
            raise TinyLMError(
                f"{saved.path} holds a model of another shape than the one asked for; "
                "resume without shape options, or train into a new --out"
            )
        torch.manual_seed(cfg.seed)
        model = Model(model_config)
    if saved is not None:
        cfg_m, transforms = read_config(saved.path)
        if transforms != applied(model):
            raise TinyLMError(f"{saved.path} holds a model with transforms {transforms or 'none'}, the one given has "
                              f"{applied(model) or 'none'}; resume with the model built as before")  # fmt: skip
        load_into(model, load_weights(saved.path, cfg_m, transforms))
    return model


def _accumulation(cfg: TrainConfig, data: TrainData, d: distributed.Dist, quiet: bool) -> tuple[int, int]:
    """(tokens per micro-batch over all processes, micro-batches per optimizer step)."""
    per_micro = cfg.batch_size * _seq_len(data.train) * d.world
    accum = max(1, round((cfg.batch_tokens or per_micro) / per_micro))
    if cfg.batch_tokens and accum * per_micro != cfg.batch_tokens and d.main and not quiet:
        print(f"note: {cfg.batch_tokens:,} tokens per step is not a multiple of {per_micro:,} "
              f"(batch x context x processes); using {accum * per_micro:,}")  # fmt: skip
    return per_micro, accum


def _progress(cfg: TrainConfig, data: TrainData, saved: Saved | None, optimizer: torch.optim.Optimizer,
              precision: Precision, sampler: Sampler, d: distributed.Dist, device: torch.device) -> Progress:  # fmt: skip
    """A new run's counters, or the saved run's with its optimizer, scaler and random states restored."""
    if saved is None:
        if d.enabled:
            torch.manual_seed(cfg.seed + d.rank)  # dropout differs between processes
        return Progress(max_steps=cfg.max_steps, data_size=len(data.train))
    progress = saved.progress
    if progress.data_size != len(data.train):
        raise TinyLMError(
            f"the training data has {len(data.train):,} examples but the saved run had {progress.data_size:,}; "
            "resume with the same --data"
        )
    saved.restore(optimizer, precision.scaler, sampler, d, device)
    resumed_length(cfg, progress, saved.path)
    return progress


def _forward(model: Model, compiled: bool, d: distributed.Dist, device: torch.device) -> torch.nn.Module:
    """What the loss calls: the model, or the model compiled and wrapped in DDP (the order DDP supports)."""
    if not d.enabled:
        return model  # compiled together with the objective (_loss)
    from torch.nn.parallel import DistributedDataParallel

    inner = torch.compile(model) if compiled else model
    return DistributedDataParallel(inner, device_ids=[device] if device.type == "cuda" else None)  # type: ignore[arg-type]


def _loss(objective: Objective, run: _Run) -> Objective:
    """The objective, compiled with the model into one graph when compiling (outside DDP): the loss's
    float32 cast, log-softmax and their backward then fuse into a few passes over the logits instead of
    several eager ones (gpt-micro on a CPU: ~30% more tokens/s than compiling the model alone)."""
    return torch.compile(objective) if run.compiled and not run.d.enabled else objective  # type: ignore[return-value]


def _announce(run: _Run, accum: int, resumed: bool) -> None:
    cfg, c, d, p = run.cfg, run.model.config, run.d, run.progress
    T = _seq_len(run.data.train)
    print(f"training a {human(run.model.num_params())}-parameter {c.family} model ({c.n_layers} layers, dim {c.dim}, "
          f"{c.n_heads} heads, context {c.context_length}) on {run.data.name or 'the data'}\n"
          f"  {run.device}{_threads(run.device)} {run.precision.name}{' compiled' if run.compiled else ''}, {d.world} process(es), "
          f"{run.tokens_per_step:,} tokens per step ({cfg.batch_size} x {T}"
          f"{f' x {d.world}' if d.enabled else ''}{f' x {accum} accumulated' if accum > 1 else ''}), "
          f"{'resuming at step ' + str(p.step) + ', ' if resumed else ''}"
          f"{f'{cfg.minutes:g} minutes' if cfg.minutes else f'{p.max_steps:,} steps'} -> {run.out}")  # fmt: skip


def _threads(device: torch.device) -> str:
    n = torch.get_num_threads()
    return f" ({n} thread{'s' if n > 1 else ''})" if device.type == "cpu" else ""


def _loop(run: _Run, stop_at: int | None, on_eval: EvalHook | None, quiet: bool) -> Result:
    cfg, p, d = run.cfg, run.progress, run.d
    bar = tqdm(total=p.max_steps, initial=p.step, unit="step", dynamic_ncols=True, disable=quiet or not d.main,
               smoothing=0.05)  # fmt: skip
    start, seconds_before, session_tokens, first = time.perf_counter(), p.seconds, 0, p.step
    clock = _Clock(cfg, p) if cfg.minutes else None
    window, val_loss, metrics, done, shown = Window(), None, {}, False, (math.nan, 0.0)
    with _on_interrupt(run) as interrupted:
        while p.step < p.max_steps and not done:
            loss, gnorm, lr = _optimizer_step(run)
            p.advance(run.tokens_per_step, seconds_before + time.perf_counter() - start)
            session_tokens += run.tokens_per_step
            window.add(loss, run.tokens_per_step)
            bar.update(1)
            if d.main and (p.step % cfg.log_interval == 0 or p.step == p.max_steps):
                rec = p.record(window.loss(), lr, gnorm, window.rate())
                run.log.write(rec)  # type: ignore[union-attr]
                shown = (rec["loss"], rec["tok_s"])
                bar.set_postfix_str(_postfix(*shown, val_loss, metrics))
                window = Window()
            stop = interrupted() or (stop_at is not None and p.step >= stop_at)
            if clock is not None:
                stop |= clock.update(p)
                if d.enabled:  # processes time their steps a little differently: agree on one plan
                    agreed = distributed.all_reduce(d, torch.tensor([p.max_steps, stop], device=run.device), "max")
                    p.max_steps, stop = int(agreed[0]), bool(agreed[1])
                bar.total = p.max_steps
            if p.step % _eval_every(run) == 0 or p.step >= p.max_steps or stop:
                per_step = (time.perf_counter() - start - run.eval_seconds) / (p.step - first)
                val_loss, metrics = _evaluate_and_save(run, on_eval, per_step, metrics)
                done = bool(metrics.get("done"))
                bar.set_postfix_str(_postfix(*shown, val_loss, metrics))  # the final evaluation shows too
            if stop:
                break
    bar.close()
    session = time.perf_counter() - start
    result = Result(run.model.eval(), run.out, p, val_loss, session_tokens / max(session, 1e-9), run.data.tokenizer,
                    metrics)  # fmt: skip
    if d.main and not quiet:
        _summary(run, result, stopped=p.step < p.max_steps and not done)
        if done:
            print(f"stopped early at step {p.step:,}: the task is solved ({_metrics_text(metrics)})")
    return result


def _eval_every(run: _Run) -> int:
    """Steps between evaluations: as set, or fitted to the run's length and spaced so that evaluating
    and saving take at most a tenth of the time (a short run on a slow machine would do little else)."""
    every = eval_interval(run.cfg, run.progress.max_steps)
    return every if run.cfg.eval_interval is not None else max(every, math.ceil(10 * run.eval_cost))


def _evaluate_and_save(run: _Run, on_eval: EvalHook | None, per_step: float,
                       metrics: dict[str, Any]) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """Validation loss, the task's metrics (the previous ones without a hook) and a checkpoint; notes
    what that cost in training steps (the same figure in every process, which must agree on when)."""
    t0 = time.perf_counter()
    val_loss = evaluate(run)
    if on_eval is not None:
        metrics = on_eval(run.model)
    _checkpoint(run, val_loss, metrics)
    spent = time.perf_counter() - t0
    run.eval_seconds += spent
    cost = torch.tensor([spent / max(per_step, 1e-9)], device=run.device)
    run.eval_cost = float(distributed.all_reduce(run.d, cost, "max").item()) if run.d.enabled else float(cost)
    return val_loss, metrics


def _postfix(loss: float, tok_s: float, val_loss: float | None, metrics: dict[str, Any]) -> str:
    val = f" | val {val_loss:.3f}" if val_loss is not None else ""
    extra = f" | {_metrics_text(metrics)}" if _metrics_text(metrics) else ""
    return f"loss {loss:.3f} | {human(tok_s)} tok/s{val}{extra}"


def _metrics_text(metrics: dict[str, Any]) -> str:
    """A task's numbers from on_eval, e.g. "exact_match 97.3%" (fractions as percentages)."""
    return ", ".join(f"{k} {v:.1%}" if 0 <= v <= 1 else f"{k} {v:.4g}" for k, v in metrics.items()
                     if k != "done" and isinstance(v, float))  # fmt: skip


class _Clock:
    """Fits max_steps of a run with a wall-clock budget (in total, resumed runs included) to the time per
    step measured from a few steps after each start (after compilation), until the schedule starts to
    depend on max_steps; a resumed run re-plans over its first steps even past that (it may have been
    extended). Stops an overrunning run."""

    REFIT_AFTER_RESUME = 10  # steps

    def __init__(self, cfg: TrainConfig, p: Progress):
        self.cfg, self.budget = cfg, 60 * (cfg.minutes or 0)
        self.from_step, self.from_time = p.step + 3, 0.0
        self.refit_until = self.from_step + self.REFIT_AFTER_RESUME if p.step else 0

    def update(self, p: Progress) -> bool:
        if p.step == self.from_step:
            self.from_time = p.seconds
        elif p.step > self.from_step and (p.step <= decay_start(self.cfg, p.max_steps) or p.step <= self.refit_until):
            per_step = (p.seconds - self.from_time) / (p.step - self.from_step)
            p.max_steps = p.step + max(1, int((0.97 * self.budget - p.seconds) / per_step))
        return p.seconds > 1.1 * self.budget


def _optimizer_step(run: _Run) -> tuple[float, float, float]:
    cfg, opt, scaler = run.cfg, run.optimizer, run.precision.scaler
    lr = lr_at(run.progress.step, cfg, run.progress.max_steps)
    for g in opt.param_groups:
        g["lr"] = lr
    micro = run.batches.step()
    try:
        total = _accumulate(run, micro)
    except torch.OutOfMemoryError:
        raise TinyLMError(_oom_hint(run)) from None
    except _compile_errors() as e:
        why = str(e).splitlines()[0][:200]
        if cfg.compile:  # asked for: say so
            raise TinyLMError(f"torch.compile failed ({why}); train with --no-compile") from None
        if run.d.main:  # compiled by default: train eager instead (every process fails alike, at its first step)
            print(f"note: torch.compile failed ({why}); training without it", file=sys.stderr)
        run.forward, run.compiled, run.loss = _forward(run.model, False, run.d, run.device), False, run.objective
        opt.zero_grad(set_to_none=True)
        total = _accumulate(run, micro)
    except RuntimeError as e:
        if "out of memory" in str(e) or "can't allocate memory" in str(e):
            raise TinyLMError(_oom_hint(run)) from None
        raise
    loss = distributed.all_reduce(run.d, total / len(micro)) / run.d.world
    scaler.unscale_(opt)
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip or math.inf)
    loss_v, gnorm_v = torch.stack([loss, gnorm.float()]).tolist()
    # fp16: an inf gradient is the GradScaler's business (it skips the step and lowers the scale)
    finite = math.isfinite(loss_v) and (scaler.is_enabled() or math.isfinite(gnorm_v))
    if finite:
        scaler.step(opt)
        run.progress.bad_steps = 0
    else:
        bad_step(run.progress, cfg.max_bad_steps, loss_v, gnorm_v,
                 "lower --lr, raise --warmup-steps or use --precision fp32", announce=run.d.main)  # fmt: skip
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss_v, gnorm_v, lr


def _accumulate(run: _Run, micro: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """Forward and backward of every micro-batch of a step; returns the sum of their losses."""
    total = torch.zeros((), device=run.device)
    for i, (x, y, *extra) in enumerate(micro):
        # a dataset may yield more per example than (x, y): the objective gets it (e.g. cached teacher outputs)
        sync = i == len(micro) - 1 or not run.d.enabled
        with contextlib.nullcontext() if sync else run.forward.no_sync(), run.precision.autocast():  # type: ignore[operator]
            loss = run.loss(run.forward, x, y, *extra)
        run.precision.scaler.scale(loss / len(micro)).backward()
        total += loss.detach().float()
    return total


@torch.no_grad()
def evaluate(run: _Run) -> float:
    """Mean next-token cross-entropy over the fixed validation batches, each shared out between the processes
    as in training. Whatever the training objective: a validation loss that means the same in every run."""
    run.model.eval()
    sums = torch.zeros(2, device=run.device)
    B, r = run.cfg.batch_size, run.d.rank
    for rows in run.eval_batches:
        x, y = (t.to(run.device) for t in run.data.val.get(rows[r * B : (r + 1) * B]))
        with run.precision.autocast():
            loss = next_token(run.model, x, y)
        sums += torch.stack([loss.float(), torch.ones((), device=run.device)])
    run.model.train()
    total, n = distributed.all_reduce(run.d, sums).tolist()
    return total / n


def _checkpoint(run: _Run, val_loss: float, metrics: dict[str, Any]) -> None:
    """Log the evaluation, write last/ (and best/ when the validation loss improved) and the plot."""
    p, cfg = run.progress, run.cfg
    if not math.isfinite(val_loss) or not finite(run.model):  # every process sees the same: all stop here
        raise TinyLMError(f"NaN/inf in the {'validation loss' if finite(run.model) else 'weights'} at step {p.step}; "
                          f"not saved, so {run.out / LAST} keeps the last good checkpoint; lower --lr or use "
                          "--precision fp32")  # fmt: skip
    improved = p.best_val_loss is None or val_loss < p.best_val_loss
    if improved:
        p.best_val_loss = val_loss
    rng = capture_rng(run.batches, run.d, run.device)  # collective: every process takes part
    if not run.d.main:
        return
    assert run.log is not None
    run.log.write({"step": p.step, "val_loss": val_loss, "tokens": p.tokens, "time": round(p.seconds, 2),
                   **{k: v for k, v in metrics.items() if k != "done"}})  # fmt: skip
    plot = run.out / PLOT_FILE
    plot_loss(run.log.records(), plot, title=f"{run.data.name}  ({human(run.model.num_params())} params)")
    files = (run.log.path, plot)
    tok = run.data.tokenizer
    save_checkpoint(run.out / LAST, run.model, tok, extra=writer(cfg, p, run.optimizer, run.precision.scaler, rng, files),
                    base=run.base)  # fmt: skip
    if improved:
        save_checkpoint(run.out / BEST, run.model, tok, extra=writer(cfg, p, None, None, None, files), base=run.base)


def _summary(run: _Run, r: Result, stopped: bool) -> None:
    p = r.progress
    best = f"{p.best_val_loss:.4f}" if p.best_val_loss is not None else "-"
    print(f"{'stopped' if stopped else 'done'} at step {p.step:,} of {p.max_steps:,}: params {human(run.model.num_params())}, "
          f"tokens seen {human(p.tokens)}, best val loss {best}, time {duration(p.seconds)}, "
          f"{human(r.tokens_per_s)} tokens/s")  # fmt: skip
    print(f"checkpoints: {run.out / LAST} (resumable), {run.out / BEST} (best val loss); "
          f"log: {run.log.path if run.log else ''}; plot: {run.out / PLOT_FILE}")  # fmt: skip
    if stopped:
        print(f"continue with the same command plus --resume (out: {run.out})")


@contextlib.contextmanager
def _on_interrupt(run: _Run):
    """tinylm.train.interrupt's clean stop; yields `interrupted()`: whether any process was asked to stop."""

    def interrupted() -> bool:
        flag = torch.tensor([float(run.stop_requested)], device=run.device)
        return bool(distributed.all_reduce(run.d, flag, "max").item()) if run.d.enabled else run.stop_requested

    with on_interrupt(run, announce=run.d.main):
        yield interrupted


def _seq_len(ds: Dataset) -> int:
    return ds.get(torch.zeros(1, dtype=torch.long))[0].shape[1]


def _check_data(data: TrainData, cfg_m: ModelConfig, cfg: TrainConfig) -> None:
    T = _seq_len(data.train)
    if T > cfg_m.context_length:
        raise TinyLMError(f"examples of {T} tokens do not fit the model's context of {cfg_m.context_length}; "
                          "use a shorter --context or a longer model context")  # fmt: skip
    n = getattr(data.train, "num_tokens", len(data.train) * T)
    if cfg.batch_size * T > n:
        raise TinyLMError(f"a batch of {cfg.batch_size} x {T} tokens is more than the {n:,} tokens of training data; "
                          "lower --batch-size or --context, or give more data")  # fmt: skip
    if data.tokenizer is not None and data.tokenizer.vocab_size > cfg_m.vocab_size:
        raise TinyLMError(f"the tokenizer has {data.tokenizer.vocab_size:,} tokens but the model only "
                          f"{cfg_m.vocab_size:,}; use a model with vocab_size >= {data.tokenizer.vocab_size}")  # fmt: skip


def _oom_hint(run: _Run) -> str:
    return (f"out of memory on {run.device} with a batch of {run.cfg.batch_size} x {_seq_len(run.data.train)} tokens; "
            "lower --batch-size (keep the step size with --batch-tokens: it accumulates gradients)")  # fmt: skip


def _compile_errors() -> tuple[type[BaseException], ...]:
    try:
        from torch._dynamo.exc import TorchDynamoException

        return (TorchDynamoException,)
    except ImportError:
        return ()
